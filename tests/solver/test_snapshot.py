"""Snapshots and restore (golden README item 18): our solverstates resume bit for bit at a multiple of the data
period; real Caffe's solverstates (binary and HDF5) restore and continue to Caffe's resumed weights; our
snapshot of the same run holds Caffe's history; layouts and failure modes."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffessl
from caffessl.errors import CaffemodelFormatError, FileMissingError
from caffessl.io import read_solver_prototxt
from caffessl.proto import caffe_pb2
from caffessl.io.solverstate import read_solverstate
from tests.golden import close, need_shared
from tests.solver._helpers import compare_params, params_of


def _solver(case_dir, prefix, monkeypatch, **fields):
    monkeypatch.chdir(case_dir)
    sp = read_solver_prototxt("solver.prototxt")
    sp.snapshot_prefix = str(prefix)   # never write into ../shared
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(sp, k).extend(v)
        else:
            setattr(sp, k, v)
    s = caffessl.get_solver(sp)
    s.net.copy_from("init.caffemodel")
    return s


@pytest.mark.parametrize("kind,fmt,policy", [
    ("SGD", "BINARYPROTO", {}),
    ("Adam", "HDF5", {"lr_policy": "multistep", "gamma": 0.5, "stepvalue": [3, 9, 14]}),
    ("AdaDelta", "BINARYPROTO", {"base_lr": 1.0, "momentum": 0.95, "delta": 1e-6}),
])
def test_resume_from_our_snapshot_is_bit_exact(kind, fmt, policy, tmp_path, monkeypatch):
    """8 + 12 iterations after a restore == 20 continuous iterations (8 = twice the 4-batch data period)."""
    d = need_shared("golden", "solver_sgd_momentum_l2")
    fields = dict(type=kind, snapshot_format=getattr(caffe_pb2.SolverParameter, fmt), snapshot=8,
                  display=0, **policy)
    a = _solver(d, tmp_path / "run", monkeypatch, **fields)
    a.step(20)
    b = _solver(d, tmp_path / "run", monkeypatch, **fields)
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    b.restore(str(tmp_path / f"run_iter_8{ext}"))
    assert b.iter == 8
    b.step(12)
    assert b.iter == a.iter == 20 and b.current_step == a.current_step
    pa, pb = params_of(a.net), params_of(b.net)
    for k in pa:
        np.testing.assert_array_equal(pb[k], pa[k], err_msg=k)
    for ha, hb in zip(a.history, b.history):
        assert torch_equal(ha, hb)


def torch_equal(x, y):
    return bool((x == y).all())


@pytest.mark.parametrize("case,ext", [("snapshot_sgd_binaryproto", ""), ("snapshot_sgd_hdf5", ".h5")])
def test_restore_real_caffe_solverstate_and_continue(case, ext, tmp_path, monkeypatch):
    d = need_shared("golden", case)
    s = _solver(d, tmp_path / "snap", monkeypatch)
    s.restore(f"snap_iter_5.solverstate{ext}")   # learned_net is relative to the CWD, as Caffe wrote it
    assert s.iter == 5 and s.current_step == 0
    assert not compare_params(s.net, dict(np.load(d / "weights_iter5_restored.npz")), 0, 0)
    s.step(5)  # the data position is NOT restored: Caffe's resumed run also restarts at sample 0
    fails = compare_params(s.net, dict(np.load(d / "weights_iter10_resumed.npz")), 1e-5, 1e-4)
    assert not fails, fails


def test_our_snapshot_matches_caffes(tmp_path, monkeypatch):
    """Same 5 iterations as Caffe: same files, same iter/learned_net/current_step, history within tolerance."""
    d = need_shared("golden", "snapshot_sgd_binaryproto")
    monkeypatch.chdir(tmp_path)   # the data list names train.h5 relative to the CWD: use absolute copies
    (tmp_path / "train_h5.txt").write_text(str(d / "train.h5") + "\n")
    s = caffessl.get_solver(_abs_solver(d, tmp_path))
    s.net.copy_from(str(d / "init.caffemodel"))
    s.step(5)
    ours, gold = read_solverstate("snap_iter_5.solverstate"), read_solverstate(d / "snap_iter_5.solverstate")
    assert (ours.iter, ours.learned_net, ours.current_step) == (gold.iter, gold.learned_net, gold.current_step)
    assert len(ours.history) == len(gold.history) == 6
    ref = np.load(d / "solverstate_iter5_history.npz")
    for i, h in enumerate(ours.history):
        ok, err = close(h, ref[f"history/{i}"], 1e-6, 1e-4)
        assert ok, f"history {i}: {err}"
    gw = caffessl.Net(str(d / "net.prototxt"), str(d / "snap_iter_5.caffemodel"), caffessl.TRAIN)
    mw = caffessl.Net(str(d / "net.prototxt"), "snap_iter_5.caffemodel", caffessl.TRAIN)
    for k, v in params_of(gw).items():
        assert close(params_of(mw)[k], v, 1e-5, 1e-4)[0], k


def _abs_solver(d, tmp_path):
    sp = read_solver_prototxt(d / "solver.prototxt")
    net = caffessl.io.read_net_prototxt(d / "net.prototxt")
    net.layer[0].hdf5_data_param.source = str(tmp_path / "train_h5.txt")
    sp.ClearField("net")
    sp.net_param.CopyFrom(net)
    return sp


def test_hdf5_snapshot_layout(tmp_path, monkeypatch):
    d = need_shared("golden", "snapshot_sgd_hdf5")
    s = _solver(d, tmp_path / "snap", monkeypatch)
    s.step(5)
    with h5py.File(tmp_path / "snap_iter_5.solverstate.h5", "r") as f, \
            h5py.File(d / "snap_iter_5.solverstate.h5", "r") as g:
        assert sorted(f.keys()) == sorted(g.keys())
        for k in ("iter", "current_step"):
            assert f[k].shape == g[k].shape and f[k].dtype == g[k].dtype
        assert f["learned_net"][()].decode() == str(tmp_path / "snap_iter_5.caffemodel.h5")
        assert list(f["history"].keys()) == list(g["history"].keys())
    with h5py.File(tmp_path / "snap_iter_5.caffemodel.h5", "r") as f, \
            h5py.File(d / "snap_iter_5.caffemodel.h5", "r") as g:
        names = []
        f.visit(names.append)
        gnames = []
        g.visit(gnames.append)
        assert sorted(names) == sorted(gnames)


def test_real_caffe_lenet_solverstate_reads():
    p = need_shared("models", "lenet", "lenet_iter_10000.solverstate")
    st = read_solverstate(p)
    assert st.iter == 10000 and len(st.history) == 8
    assert [h.shape for h in st.history[::2]] == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]


def test_corrupt_or_missing_solverstate(tmp_path):
    bad = tmp_path / "x.solverstate"
    bad.write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(CaffemodelFormatError, match="x.solverstate"):
        read_solverstate(bad)
    with pytest.raises(FileMissingError):
        read_solverstate(tmp_path / "nope.solverstate")


def test_restore_refuses_wrong_history_count(tmp_path, monkeypatch):
    d = need_shared("golden", "snapshot_sgd_binaryproto")
    s = _solver(d, tmp_path / "snap", monkeypatch, type="Adam")   # Adam needs 12 history blobs, the file has 6
    with pytest.raises(CaffemodelFormatError, match="6 history blobs"):
        s.restore("snap_iter_5.solverstate")
