"""Data layer over LMDB: raw uint8, float_data and encoded (PNG) Datums, labels, wrap-around, transform,
prefetch thread shutdown, and bad input."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import DataSourceError

from .helpers import data_net, encoded_datum, float_datum, net_param, png_bytes, raw_datum, write_lmdb


@pytest.fixture
def raw_db(tmp_path):
    rs = np.random.RandomState(0)
    imgs = rs.randint(0, 256, size=(5, 2, 6, 4)).astype(np.uint8)
    write_lmdb(tmp_path / "raw", [(b"%08d" % i, raw_datum(imgs[i], i + 1)) for i in range(5)])
    return str(tmp_path / "raw"), imgs


def test_raw_datum_order_labels_wrap(raw_db):
    src, imgs = raw_db
    net = data_net(src, 3)
    assert net.blobs["data"].shape == (3, 2, 6, 4) and net.blobs["label"].shape == (3,)
    for k in range(4):
        net.forward()
        idx = (np.arange(3) + 3 * k) % 5
        np.testing.assert_array_equal(net.blobs["data"].data, imgs[idx].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, (idx + 1).astype(np.float32))


def test_raw_datum_transform_test_phase(raw_db):
    src, imgs = raw_db
    net = data_net(src, 2, 'transform_param { crop_size: 3 scale: 0.5 mean_value: 10 mean_value: 20 }',
                    phase=caffe.TEST)
    net.forward()
    assert net.blobs["data"].shape == (2, 2, 3, 3)
    mv = np.array([10, 20], np.float32)[:, None, None]
    want = (imgs[:2, :, 1:4, 0:3].astype(np.float32) - mv) * np.float32(0.5)  # centre ((6-3)//2, (4-3)//2)
    np.testing.assert_array_equal(net.blobs["data"].data, want)


def test_deprecated_data_param_scale_in_a_layer_entry_is_ignored_as_caffe_does(raw_db, caplog):
    # Caffe 1.0 moves data_param.scale into transform_param only for V1 `layers {}` (NetNeedsDataUpgrade
    # loops over layers(i)); its DataLayer never reads data_param.scale
    src, imgs = raw_db
    net = caffe.Net(net_param(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{src}" '
                              f'batch_size: 1 backend: LMDB scale: 0.25 }} }}'), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], imgs[0].astype(np.float32))
    assert "data_param.scale is ignored" in caplog.text and "layer 'd'" in caplog.text


def test_deprecated_data_param_scale_in_a_v1_layers_entry_is_applied(raw_db):
    src, imgs = raw_db
    net = caffe.Net(net_param(f'layers {{ name: "d" type: DATA top: "data" data_param {{ source: "{src}" '
                              f'batch_size: 1 backend: LMDB scale: 0.25 }} }}'), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], imgs[0] * np.float32(0.25))


def test_float_datum(tmp_path):
    x = np.random.RandomState(1).randn(3, 1, 2, 2).astype(np.float32)
    write_lmdb(tmp_path / "f", [(b"%08d" % i, float_datum(x[i], 7)) for i in range(3)])
    net = data_net(str(tmp_path / "f"), 3, tops=("data",))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, x)


def test_encoded_png_datum_bgr_and_force_gray(tmp_path):
    rs = np.random.RandomState(2)
    rgb = rs.randint(0, 256, size=(2, 5, 4, 3)).astype(np.uint8)
    write_lmdb(tmp_path / "e", [(b"%08d" % i, encoded_datum(png_bytes(rgb[i]), i)) for i in range(2)])
    net = data_net(str(tmp_path / "e"), 2)
    net.forward()
    bgr_chw = rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)  # OpenCV decodes to BGR
    np.testing.assert_array_equal(net.blobs["data"].data, bgr_chw)
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    net = data_net(str(tmp_path / "e"), 2, "transform_param { force_gray: true }")
    assert net.blobs["data"].shape == (2, 1, 5, 4)


def test_prefetch_thread_stops_when_net_is_deleted(raw_db):
    src, _ = raw_db
    net = data_net(src, 2)
    net.forward()
    thread = net.layers[0]._prefetcher.thread
    assert thread.is_alive() and thread.daemon
    del net
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_bad_sources(tmp_path, raw_db):
    with pytest.raises(DataSourceError, match=r"layer 'd'.*nowhere"):
        data_net(str(tmp_path / "nowhere"), 2)
    write_lmdb(tmp_path / "empty", [])
    with pytest.raises(DataSourceError, match=r"layer 'd'.*no records"):
        data_net(str(tmp_path / "empty"), 2)
    write_lmdb(tmp_path / "corrupt", [(b"00000000", b"\xff\xff\xff garbage")])
    with pytest.raises(DataSourceError, match=r"layer 'd'.*00000000.*corrupt Datum"):
        data_net(str(tmp_path / "corrupt"), 1)
    short = raw_datum(np.zeros((1, 2, 2), np.uint8), 0)
    write_lmdb(tmp_path / "mixed", [(b"0", raw_datum(np.zeros((1, 2, 2), np.uint8), 0)), (b"1", b"\x08\x01")])
    net = data_net(str(tmp_path / "mixed"), 2)  # the bad record is found by the prefetch thread
    for _ in range(2):  # the same clear error at every forward after the failure
        with pytest.raises(DataSourceError, match=r"layer 'd'.*record '1'"):
            net.forward()
    del short
    with pytest.raises(DataSourceError, match=r"layer 'd'.*not a LevelDB"):   # an LMDB read as a LevelDB
        data_net(raw_db[0], 2, backend="LEVELDB")


def test_missing_mean_file_names_the_layer_and_the_database_is_checked_first(raw_db, tmp_path):
    from caffessl.errors import FileMissingError
    src, _ = raw_db
    tp = f'transform_param {{ mean_file: "{tmp_path / "nope.binaryproto"}" }}'
    with pytest.raises(FileMissingError, match=r"layer 'd' \(Data\).*mean_file.*nope\.binaryproto"):
        data_net(src, 1, extra=tp)
    with pytest.raises(DataSourceError, match=r"layer 'd'.*no_db"):   # Caffe opens the database first
        data_net(str(tmp_path / "no_db"), 1, extra=tp)
