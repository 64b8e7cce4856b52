"""Converters: MNIST IDX -> LMDB (convert_mnist_data's Datum and %08d keys), ensure_mnist_lmdb, imageset,
and the ``caffessl convert`` command; read back with the Data layer."""
from __future__ import annotations

import gzip
import struct

import lmdb
import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main
from caffessl.data.idx import IMAGES_MAGIC, read_idx
from caffessl.data.mnist import convert_mnist_data, ensure_mnist_lmdb
from caffessl.errors import DataSourceError
from caffessl.proto import caffe_pb2
from tests.golden import need_shared

from .helpers import net_param, png_bytes


def _write_idx(path, arr, magic, gz):
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(head + np.ascontiguousarray(arr, np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    rs = np.random.RandomState(0)
    src = tmp_path / "src"
    src.mkdir()
    sets = {}
    for split, n, gz in (("train", 6, True), ("t10k", 4, False)):
        imgs = rs.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labs = rs.randint(0, 10, size=n).astype(np.uint8)
        sfx = ".gz" if gz else ""
        _write_idx(src / f"{split}-images-idx3-ubyte{sfx}", imgs, 2051, gz)
        _write_idx(src / f"{split}-labels-idx1-ubyte{sfx}", labs, 2049, gz)
        sets[split] = (imgs, labs)
    return src, sets


def _records(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k, v) for k, v in txn.cursor()]
    env.close()
    return out


def test_cli_convert_mnist_and_read_back(tiny_mnist, tmp_path, capsys):
    src, sets = tiny_mnist
    out = tmp_path / "out"
    assert main(["convert", "mnist", "--from", str(src), "--out", str(out)]) == 0
    for split, name in (("train", "mnist_train_lmdb"), ("t10k", "mnist_test_lmdb")):
        imgs, labs = sets[split]
        recs = _records(out / name)
        assert [k for k, _ in recs] == [b"%08d" % i for i in range(len(imgs))]
        for i, (_, v) in enumerate(recs):
            d = caffe_pb2.Datum.FromString(v)
            assert (d.channels, d.height, d.width, d.label, d.encoded) == (1, 28, 28, labs[i], False)
            assert d.data == imgs[i].tobytes()
    net = caffe.Net(net_param(f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ '
                              f'scale: 0.00390625 }} data_param {{ source: "{out}/mnist_train_lmdb" batch_size: 4 '
                              f'backend: LMDB }} }}'), caffe.TEST)
    net.forward()
    imgs, labs = sets["train"]
    np.testing.assert_array_equal(net.blobs["data"].data, imgs[:4, None] * np.float32(0.00390625))
    np.testing.assert_array_equal(net.blobs["label"].data, labs[:4])
    # a second conversion into the same folder is refused, like Caffe's tool (the db exists)
    assert main(["convert", "mnist", "--from", str(src), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_ensure_mnist_lmdb_is_idempotent(tiny_mnist, tmp_path):
    src, _ = tiny_mnist
    paths = ensure_mnist_lmdb(str(src), str(tmp_path / "o"))
    mtime = (tmp_path / "o" / "mnist_train_lmdb" / "data.mdb").stat().st_mtime_ns
    assert ensure_mnist_lmdb(str(src), str(tmp_path / "o")) == paths
    assert (tmp_path / "o" / "mnist_train_lmdb" / "data.mdb").stat().st_mtime_ns == mtime
    assert len(_records(paths["test"])) == 4


def test_bad_idx(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    _write_idx(p, np.zeros((2, 3, 3), np.uint8), 2049, False)
    with pytest.raises(DataSourceError, match="magic number 2049"):
        read_idx(str(p), IMAGES_MAGIC)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DataSourceError, match="x-idx3-ubyte"):
        read_idx(str(p), 2049)
    with pytest.raises(DataSourceError, match="no MNIST file"):
        ensure_mnist_lmdb(str(tmp_path), str(tmp_path / "o"))


def test_real_mnist_test_slice(tmp_path):
    src = need_shared("data", "mnist")
    n = convert_mnist_data(str(src / "t10k-images-idx3-ubyte.gz"), str(src / "t10k-labels-idx1-ubyte.gz"),
                           str(tmp_path / "db"), limit=300)
    assert n == 300
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    recs = _records(tmp_path / "db")
    got = [caffe_pb2.Datum.FromString(v).label for _, v in recs]
    assert got == labels[:300].tolist() and labels[0] == 7  # the first t10k digit is a 7


def test_convert_imageset_raw_gray_resize_and_encoded(tmp_path):
    rs = np.random.RandomState(1)
    rgb = rs.randint(0, 256, size=(3, 5, 7, 3)).astype(np.uint8)
    (tmp_path / "im").mkdir()
    for i in range(3):
        (tmp_path / "im" / f"{i}.png").write_bytes(png_bytes(rgb[i]))
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(3)))
    root = f"{tmp_path}/im/"
    assert main(["convert", "imageset", root, str(tmp_path / "list.txt"), str(tmp_path / "raw")]) == 0
    recs = _records(tmp_path / "raw")
    assert [k for k, _ in recs] == [b"%08d_%d.png" % (i, i) for i in range(3)]
    d = caffe_pb2.Datum.FromString(recs[1][1])
    assert (d.channels, d.height, d.width, d.label) == (3, 5, 7, 1)
    assert d.data == rgb[1][..., ::-1].transpose(2, 0, 1).tobytes()  # BGR, CHW
    assert main(["convert", "imageset", root, str(tmp_path / "list.txt"), str(tmp_path / "g"), "--gray",
                 "--resize_height", "4", "--resize_width", "6", "--check_size"]) == 0
    d = caffe_pb2.Datum.FromString(_records(tmp_path / "g")[0][1])
    assert (d.channels, d.height, d.width) == (1, 4, 6)
    assert main(["convert", "imageset", root, str(tmp_path / "list.txt"), str(tmp_path / "e"), "--encoded"]) == 0
    d = caffe_pb2.Datum.FromString(_records(tmp_path / "e")[2][1])
    assert d.encoded and d.data == (tmp_path / "im" / "2.png").read_bytes()  # the file's own bytes
    net = caffe.Net(net_param(f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
                              f'source: "{tmp_path}/e" batch_size: 3 backend: LMDB }} }}'), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, rgb[..., ::-1].transpose(0, 3, 1, 2))
