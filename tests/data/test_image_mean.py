"""compute_image_mean (Caffe's tool): the mean Datum of an LMDB / LevelDB written by the plain lmdb / plyvel
libraries, float32 sums in record order, the legacy-shaped binaryproto, and its use as a mean_file."""
from __future__ import annotations

import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main
from caffessl.data.image_mean import compute_image_mean
from caffessl.errors import DataSourceError
from caffessl.io.blobproto import read_binaryproto
from caffessl.proto import caffe_pb2

from .helpers import data_net, encoded_datum, float_datum, png_bytes, raw_datum, write_leveldb, write_lmdb


def _float32_mean(arrays):
    total = np.zeros(arrays[0].size, np.float32)
    for a in arrays:                         # Caffe: sum_blob.data(i) + value, one record after the other
        total += a.reshape(-1).astype(np.float32)
    return (total / np.float32(len(arrays))).reshape(arrays[0].shape)


def test_raw_datums_mean_binaryproto_and_mean_file(tmp_path, capsys):
    rs = np.random.RandomState(0)
    imgs = rs.randint(0, 256, size=(7, 3, 5, 4)).astype(np.uint8)
    write_lmdb(tmp_path / "db", [(b"%08d" % i, raw_datum(imgs[i], i)) for i in range(7)])
    assert main(["compute-image-mean", str(tmp_path / "db"), str(tmp_path / "mean.binaryproto")]) == 0
    want = _float32_mean(list(imgs))
    np.testing.assert_allclose(want, imgs.astype(np.float64).mean(0), rtol=1e-6)
    bp = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 5, 4) and not bp.HasField("shape")
    np.testing.assert_array_equal(np.array(bp.data, np.float32).reshape(3, 5, 4), want)
    np.testing.assert_array_equal(read_binaryproto(tmp_path / "mean.binaryproto").reshape(3, 5, 4), want)
    net = data_net(str(tmp_path / "db"), 7, f'transform_param {{ mean_file: "{tmp_path}/mean.binaryproto" }}',
                   phase=caffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, imgs.astype(np.float32) - want, rtol=0, atol=1e-5)


def test_float_and_encoded_datums_and_leveldb(tmp_path):
    x = np.random.RandomState(1).randn(4, 2, 3, 3).astype(np.float32)
    write_leveldb(tmp_path / "f", [(b"%d" % i, float_datum(x[i], 0)) for i in range(4)])
    mean, n = compute_image_mean(str(tmp_path / "f"), "leveldb")
    assert n == 4
    np.testing.assert_array_equal(mean, _float32_mean(list(x)))
    rgb = np.random.RandomState(2).randint(0, 256, size=(3, 4, 6, 3)).astype(np.uint8)
    write_lmdb(tmp_path / "e", [(b"%d" % i, encoded_datum(png_bytes(rgb[i]), 0)) for i in range(3)])
    mean, _ = compute_image_mean(str(tmp_path / "e"))
    np.testing.assert_array_equal(mean, _float32_mean([im[..., ::-1].transpose(2, 0, 1) for im in rgb]))   # BGR


def test_bad_databases(tmp_path):
    write_lmdb(tmp_path / "mixed", [(b"0", raw_datum(np.zeros((1, 2, 2), np.uint8), 0)),
                                    (b"1", raw_datum(np.zeros((1, 3, 2), np.uint8), 0))])
    with pytest.raises(DataSourceError, match=r"record '1'.*incorrect data field size 6"):
        compute_image_mean(str(tmp_path / "mixed"))
    write_lmdb(tmp_path / "empty", [])
    with pytest.raises(DataSourceError, match="no records"):
        compute_image_mean(str(tmp_path / "empty"))
    assert main(["compute-image-mean", str(tmp_path / "nowhere")]) == 1
