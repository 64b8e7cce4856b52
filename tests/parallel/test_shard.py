"""Caffe 1.0's skip rule for every training source: in a world of N ranks, rank r reads the records at
stream positions r, r+N, r+2N, ... (the source's order, wrapping around); TEST nets are not sharded.
Expected positions are computed here from the records written (plain lmdb / plyvel / h5py / Pillow)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffessl as caffe
from caffessl.parallel import group
from tests.data.helpers import net_param, png_bytes, raw_datum, write_leveldb, write_lmdb

N_RECORDS = 7          # odd: the ranks' shares shift at every wrap, as Caffe's offset_ % N does
BATCH = 3


@pytest.fixture
def world(monkeypatch):
    """Pretend this process is rank ``r`` of ``n`` in an initialized process group."""
    def set_world(r, n):
        monkeypatch.setattr(group, "is_initialized", lambda: True)
        monkeypatch.setattr(group, "rank", lambda: r)
        monkeypatch.setattr(group, "size", lambda: n)
    return set_world


def _expected(rank, n, batches):
    pos = rank + n * np.arange(BATCH * batches)
    return (pos % N_RECORDS).reshape(batches, BATCH)


def _records():
    return [(b"%03d" % i, raw_datum(np.full((1, 2, 2), i, np.uint8), label=i)) for i in range(N_RECORDS)]


def _labels(net, batches):
    out = []
    for _ in range(batches):
        net.forward()
        out.append(net.blobs["label"].data.astype(int).copy())
    return np.stack(out)


@pytest.mark.parametrize("backend", ["LMDB", "LEVELDB"])
@pytest.mark.parametrize("rank,n", [(0, 2), (1, 2), (2, 3)])
def test_database_records_dealt_round_robin(tmp_path, world, backend, rank, n):
    src = tmp_path / "db"
    (write_lmdb if backend == "LMDB" else write_leveldb)(src, _records())
    world(rank, n)
    text = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{src}" '
            f'batch_size: {BATCH} backend: {backend} }} }}')
    net = caffe.Net(net_param(text), caffe.TRAIN)
    got = _labels(net, 5)
    assert (got == _expected(rank, n, 5)).all(), got
    assert (net.blobs["data"].data[:, 0, 0, 0] == got[-1]).all()   # the data of the same records


def test_hdf5_rows_dealt_round_robin_across_files(tmp_path, world, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = np.arange(N_RECORDS, dtype=np.float32)
    for name, part in (("a.h5", rows[:4]), ("b.h5", rows[4:])):
        with h5py.File(tmp_path / name, "w") as f:
            f["data"] = part[:, None] * 10
            f["label"] = part
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")
    world(1, 3)
    net = caffe.Net(net_param(f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param '
                              f'{{ source: "list.txt" batch_size: {BATCH} }} }}'), caffe.TRAIN)
    got = _labels(net, 4)
    assert (got == _expected(1, 3, 4)).all(), got
    assert (net.blobs["data"].data[:, 0] == got[-1] * 10).all()


def test_image_list_dealt_round_robin(tmp_path, world):
    lines = []
    for i in range(N_RECORDS):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(np.full((3, 3), i, np.uint8)))
        lines.append(f"{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    world(1, 2)
    net = caffe.Net(net_param(f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
                              f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: {BATCH} '
                              f'is_color: false }} }}'), caffe.TRAIN)
    got = _labels(net, 5)
    assert (got == _expected(1, 2, 5)).all(), got
    assert (net.blobs["data"].data[:, 0, 0, 0] == got[-1]).all()


def test_test_nets_read_every_record(tmp_path, world):
    src = tmp_path / "db"
    write_lmdb(src, _records())
    world(1, 2)
    text = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{src}" '
            f'batch_size: {BATCH} backend: LMDB }} }}')
    got = _labels(caffe.Net(net_param(text), caffe.TEST), 3)
    assert (got == _expected(0, 1, 3)).all(), got
