"""Data layer over LevelDB (DataParameter.backend's default) and the converters' --backend leveldb: databases
written and read back with the LevelDB library itself (plyvel), key order, wrap-around, one handle per process
shared by the readers, and bad input."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main
from caffessl.errors import DataSourceError
from caffessl.proto import caffe_pb2

from .helpers import data_net, float_datum, raw_datum, read_leveldb, write_leveldb, write_lmdb

plyvel = pytest.importorskip("plyvel", reason="LevelDB sources need the plyvel package (an install requirement)")


def _data_net(source, batch, backend="LEVELDB", phase=caffe.TRAIN, extra=""):
    return data_net(source, batch, extra, phase=phase, backend=backend)


@pytest.fixture
def raw_leveldb(tmp_path):
    rs = np.random.RandomState(0)
    imgs = rs.randint(0, 256, size=(5, 2, 6, 4)).astype(np.uint8)
    # written out of key order: LevelDB (and Caffe's cursor) reads them sorted by key
    write_leveldb(tmp_path / "raw", [(b"%08d" % i, raw_datum(imgs[i], i + 1)) for i in (3, 0, 4, 1, 2)])
    return str(tmp_path / "raw"), imgs


@pytest.mark.parametrize("backend", ["LEVELDB", None])      # None: the schema's default is LEVELDB
def test_leveldb_records_in_key_order_wrap_around(raw_leveldb, backend):
    src, imgs = raw_leveldb
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    net = _data_net(src, 3, backend)
    assert net.blobs["data"].shape == (3, 2, 6, 4)
    for k in range(4):
        net.forward()
        idx = (np.arange(3) + 3 * k) % 5
        np.testing.assert_array_equal(net.blobs["data"].data, imgs[idx].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, (idx + 1).astype(np.float32))


def test_train_and_test_nets_share_one_handle_and_release_it(raw_leveldb, tmp_path):
    """LevelDB admits one open per process (its LOCK): a TRAIN and a TEST net on the same source both read it,
    each from its own start, and the database is free again once both are gone."""
    src, imgs = raw_leveldb
    train = _data_net(src, 2)
    test = _data_net(src, 4, phase=caffe.TEST, extra="transform_param { scale: 0.5 }")
    train.forward()
    test.forward()
    np.testing.assert_array_equal(train.blobs["data"].data, imgs[:2].astype(np.float32))
    np.testing.assert_array_equal(test.blobs["data"].data, imgs[:4] * np.float32(0.5))
    for net in (train, test):
        for layer in net.layers:
            stop = getattr(layer, "stop_prefetch", None)
            stop and stop()
    del train, test, net, layer
    gc.collect()
    assert len(read_leveldb(src)) == 5                # opened again: the handle was closed


def test_float_datums_from_leveldb(tmp_path):
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) / 7
    write_leveldb(tmp_path / "f", [(b"a", float_datum(x, 3)), (b"b", float_datum(-x, 4))])
    net = _data_net(str(tmp_path / "f"), 2, phase=caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack([x, -x]))
    np.testing.assert_array_equal(net.blobs["label"].data, [3, 4])


def test_bad_leveldb_sources(tmp_path, raw_leveldb):
    with pytest.raises(DataSourceError, match=r"layer 'd'.*nowhere.*not a LevelDB"):
        _data_net(str(tmp_path / "nowhere"), 2)
    write_lmdb(tmp_path / "an_lmdb", [(b"0", raw_datum(np.zeros((1, 2, 2), np.uint8), 0))])
    with pytest.raises(DataSourceError, match=r"layer 'd'.*an_lmdb.*not a LevelDB"):
        _data_net(str(tmp_path / "an_lmdb"), 2)          # an LMDB read with the default backend
    write_leveldb(tmp_path / "empty", [])
    with pytest.raises(DataSourceError, match=r"layer 'd'.*no records"):
        _data_net(str(tmp_path / "empty"), 2)
    holder = plyvel.DB(raw_leveldb[0])                   # someone else holds the LOCK
    try:
        with pytest.raises(DataSourceError, match=r"layer 'd'.*cannot open LevelDB"):
            _data_net(raw_leveldb[0], 2)
    finally:
        holder.close()


def test_convert_mnist_and_imageset_to_leveldb_match_lmdb(tmp_path):
    """The same records, key for key, as the LMDB conversion (read back with plyvel and lmdb)."""
    import gzip
    import struct

    import lmdb
    from .helpers import png_bytes

    rs = np.random.RandomState(2)
    src = tmp_path / "src"
    src.mkdir()
    for split, n in (("train", 5), ("t10k", 3)):
        for kind, magic, arr in (("images-idx3", 2051, rs.randint(0, 256, (n, 28, 28))),
                                 ("labels-idx1", 2049, rs.randint(0, 10, n))):
            with gzip.open(src / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
                        + arr.astype(np.uint8).tobytes())
    for backend in ("lmdb", "leveldb"):
        assert main(["convert", "mnist", "--from", str(src), "--out", str(tmp_path / "o"), "--backend", backend]) == 0
    (tmp_path / "im").mkdir()
    for i in range(3):
        (tmp_path / "im" / f"{i}.png").write_bytes(png_bytes(rs.randint(0, 256, (4, 5, 3))))
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(3)))
    for backend in ("lmdb", "leveldb"):
        assert main(["convert", "imageset", f"{tmp_path}/im/", str(tmp_path / "list.txt"),
                     str(tmp_path / f"set_{backend}"), "--backend", backend]) == 0

    def lmdb_records(path):
        env = lmdb.open(str(path), readonly=True, lock=False)
        with env.begin() as txn:
            out = list(txn.cursor())
        env.close()
        return out
    for a, b in (("o/mnist_train_lmdb", "o/mnist_train_leveldb"), ("o/mnist_test_lmdb", "o/mnist_test_leveldb"),
                 ("set_lmdb", "set_leveldb")):
        want = lmdb_records(tmp_path / a)
        assert want and read_leveldb(tmp_path / b) == want
    net = _data_net(str(tmp_path / "o" / "mnist_train_leveldb"), 5, phase=caffe.TEST)
    net.forward()
    via_lmdb = _data_net(str(tmp_path / "o" / "mnist_train_lmdb"), 5, "LMDB", caffe.TEST)
    via_lmdb.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, via_lmdb.blobs["data"].data)
    np.testing.assert_array_equal(net.blobs["label"].data, via_lmdb.blobs["label"].data)
