"""HDF5Data: Caffe's HDF5DataLayer order, wrap-around across files, shuffle, golden solver batch order."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import DataSourceError, LayerConfigError
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from tests.golden import need_shared


def _net_param(text):
    return parse_text(text, caffe_pb2.NetParameter())


def _layer(source, batch, shuffle=False, tops=("data", "label"), extra=""):
    tops_txt = " ".join(f'top: "{t}"' for t in tops)
    sh = "shuffle: true" if shuffle else ""
    return _net_param(f'layer {{ name: "d" type: "HDF5Data" {tops_txt} '
                      f'hdf5_data_param {{ source: "{source}" batch_size: {batch} {sh} }} {extra} }}')


def _write_h5(path, data, label):
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = label


@pytest.fixture
def two_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3)
    b = 100 + np.arange(3 * 2 * 3, dtype=np.float64).reshape(3, 2, 3)
    _write_h5("a.h5", a, np.arange(5))
    _write_h5("b.h5", b, 10 + np.arange(3))
    (tmp_path / "list.txt").write_text("a.h5\n\nb.h5\n")  # relative to the CWD, blank lines ignored
    return np.concatenate([a, b]).astype(np.float32), np.r_[np.arange(5), 10 + np.arange(3)].astype(np.float32)


def test_consecutive_rows_across_files_and_wrap(two_files):
    data, label = two_files
    net = caffe.Net(_layer("list.txt", 3), caffe.TRAIN)
    assert net.blobs["data"].shape == (3, 2, 3) and net.blobs["label"].shape == (3,)
    for k in range(7):  # 21 rows: wraps around the 8-row pair of files twice
        net.forward()
        idx = (np.arange(3) + 3 * k) % 8
        np.testing.assert_array_equal(net.blobs["data"].data, data[idx])
        np.testing.assert_array_equal(net.blobs["label"].data, label[idx])
        assert net.blobs["data"].data.dtype == np.float32


def test_shuffle_is_a_permutation_within_each_epoch(two_files):
    data, label = two_files
    caffe.set_random_seed(3)
    net = caffe.Net(_layer("list.txt", 4, shuffle=True), caffe.TRAIN)
    seen = []
    for _ in range(4):  # two epochs of 8 rows
        net.forward()
        seen.extend(net.blobs["label"].data.tolist())
        # rows stay aligned across tops
        for row, lab in zip(net.blobs["data"].data, net.blobs["label"].data):
            np.testing.assert_array_equal(row, data[list(label).index(lab)])
    for epoch in (seen[:8], seen[8:]):
        assert sorted(epoch) == sorted(label.tolist())
        # rows of one file come together (Caffe shuffles the file order and the rows *within* a file)
        a, b = set(range(5)), set(range(10, 13))
        assert (set(epoch[:5]) == a and set(epoch[5:]) == b) or (set(epoch[:3]) == b and set(epoch[3:]) == a)
    assert seen != sorted(seen)  # 8! orders: the identity is a 1/40320 coincidence per epoch
    # same seed, same order
    caffe.set_random_seed(3)
    net2 = caffe.Net(_layer("list.txt", 4, shuffle=True), caffe.TRAIN)
    again = []
    for _ in range(4):
        net2.forward()
        again.extend(net2.blobs["label"].data.tolist())
    assert again == seen


def test_golden_solver_batch_order(monkeypatch):
    d = need_shared("golden", "solver_sgd_momentum_l2")
    monkeypatch.chdir(d)
    full = caffe.io.read_net_prototxt(str(d / "net.prototxt"))
    only = caffe_pb2.NetParameter()
    only.layer.add().CopyFrom(next(l for l in full.layer if l.type == "HDF5Data"))
    net = caffe.Net(only, caffe.TRAIN)
    with h5py.File(d / "train.h5", "r") as f:
        data, label = f["data"][()], f["label"][()]
    assert data.shape[0] == 32
    for k in range(10):  # iter_size 1: iteration k reads [(k*8) mod 32, +8)
        net.forward()
        s = (k * 8) % 32
        np.testing.assert_array_equal(net.blobs["data"].data, data[s:s + 8])
        np.testing.assert_array_equal(net.blobs["label"].data, label[s:s + 8])


def test_missing_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataSourceError, match=r"layer 'd'.*nope\.txt"):
        caffe.Net(_layer("nope.txt", 2), caffe.TRAIN)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataSourceError, match=r"layer 'd'.*empty\.txt"):
        caffe.Net(_layer("empty.txt", 2), caffe.TRAIN)
    (tmp_path / "l.txt").write_text("missing.h5\n")
    with pytest.raises(DataSourceError, match=r"layer 'd'.*missing\.h5"):
        caffe.Net(_layer("l.txt", 2), caffe.TRAIN)


def test_bad_files(two_files, tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file at all")
    (tmp_path / "bad.txt").write_text("bad.h5\n")
    with pytest.raises(DataSourceError, match=r"bad\.h5"):
        caffe.Net(_layer("bad.txt", 2), caffe.TRAIN)
    with pytest.raises(DataSourceError, match=r"no dataset 'nolabel'"):
        caffe.Net(_layer("list.txt", 2, tops=("data", "nolabel")), caffe.TRAIN)
    with pytest.raises(LayerConfigError, match="does not transform"):
        caffe.Net(_layer("list.txt", 2, extra="transform_param { scale: 2 }"), caffe.TRAIN)
