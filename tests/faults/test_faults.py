"""Fault injection on `caffessl train` in a subprocess: SIGKILL at random moments (mid-snapshot included),
a full disk (RLIMIT_FSIZE), an LMDB truncated while training, SIGINT/SIGHUP during set-up, training and
testing. After every fault: each snapshot file under a final name loads and holds finite values, resuming
works, temporary files are gone, and the error (if any) is one line without a traceback."""
from __future__ import annotations

import glob
import os
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.golden import REPO

PROBE = '''import os, time


class Probe:
    """Passes its bottom through; on the events named in $PROBE it touches a marker file and sleeps."""

    def setup(self, bottom, top):
        self.n = 0
        if "setup" in os.environ.get("PROBE", ""):
            self._mark("setup")

    def _mark(self, what):
        open("probe_" + what, "w").close()
        end = time.time() + float(os.environ.get("PROBE_SLEEP", "3"))
        while time.time() < end:
            time.sleep(0.02)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
        self.n += 1
        events = os.environ.get("PROBE", "")
        if "test" in events and self.phase == 1 and self.n == 1:
            self._mark("test")
        if "train" in events and self.phase == 0 and self.n == 3:
            self._mark("train")

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''

NET = '''name: "faults"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "db" backend: LMDB batch_size: 4 }} transform_param {{ scale: 0.0039 }} }}
layer {{ name: "probe" type: "Python" bottom: "data" top: "pdata" python_param {{ module: "probe" layer: "Probe" }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pdata" top: "ip1"
  inner_product_param {{ num_output: {hidden} weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
'''

SOLVER = '''net: "net.prototxt" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: {max_iter}
snapshot: {snapshot} snapshot_prefix: "snap/s" solver_mode: CPU display: 1 random_seed: 1 {extra}
'''


def _make(tmp_path, hidden=64, max_iter=6, snapshot=2, extra="", records=64):
    from caffessl.data.datum import array_to_datum
    from caffessl.data.lmdb_source import LMDBWriter
    rng = np.random.RandomState(0)
    w = LMDBWriter(str(tmp_path / "db"))
    for i in range(records):
        img = rng.randint(0, 255, size=(1, 8, 8)).astype(np.uint8)
        w.put(b"%08d" % i, array_to_datum(img, i % 10).SerializeToString())
    w.close()
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "net.prototxt").write_text(NET.format(hidden=hidden))
    set_solver(tmp_path, max_iter=max_iter, snapshot=snapshot, extra=extra)
    (tmp_path / "snap").mkdir()
    return tmp_path


def set_solver(tmp_path, max_iter, snapshot, extra=""):
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(max_iter=max_iter, snapshot=snapshot, extra=extra))


def _env(**kw):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.update({k: str(v) for k, v in kw.items()})
    return e


def _start(cwd, *extra, env=None, preexec=None):
    return subprocess.Popen([sys.executable, "-m", "caffessl.cli", "train", "--solver", "solver.prototxt",
                             "--allow-python", "--no-progress", *extra], cwd=cwd, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def _wait_for(path, proc, timeout=60):
    end = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.02)


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _error_lines(err):
    return [ln for ln in err.splitlines() if "error" in ln.lower() or "interrupted" in ln]


def check_snapshots(folder):
    """Every file under a final name loads and is finite; no temporary file is left. Returns the iterations."""
    from caffessl.io.caffemodel import read_weights
    from caffessl.io.solverstate import read_solverstate
    iters = []
    for p in sorted(glob.glob(os.path.join(folder, "s_iter_*.solverstate"))):
        st = read_solverstate(p)
        assert all(np.isfinite(h).all() for h in st.history)
        iters.append(st.iter)
    for p in sorted(glob.glob(os.path.join(folder, "s_iter_*.caffemodel"))):
        for _name, _type, arrays in read_weights(p):
            assert all(np.isfinite(a).all() for a in arrays), p
    return sorted(iters)


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Snapshots at every iteration of a net whose snapshot dominates the iteration time, killed at random
    moments: what is under a final name always loads; the resumed run clears the kills' temporary files."""
    d = _make(tmp_path, hidden=8192, max_iter=1000, snapshot=1)
    rnd = random.Random(1234)
    for _ in range(2):
        p = _start(d)
        deadline = time.time() + 60
        while not glob.glob(str(d / "snap" / "s_iter_*.solverstate")):
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.01)
        time.sleep(rnd.uniform(0.0, 0.4))
        p.kill()
        p.communicate()
        iters = check_snapshots(str(d / "snap"))
        assert iters
    last = max(iters)
    set_solver(d, max_iter=last + 2, snapshot=1)
    rc, _out, err = _finish(_start(d, "--snapshot", f"snap/s_iter_{last}.solverstate"))
    assert rc == 0, err
    assert check_snapshots(str(d / "snap"))[-1] == last + 2
    assert not [f for f in os.listdir(d / "snap") if f.startswith(".tmp-")]


def test_disk_full_keeps_the_previous_snapshot(tmp_path):
    d = _make(tmp_path, hidden=1024, max_iter=2, snapshot=2)
    rc, _out, err = _finish(_start(d))
    assert rc == 0, err
    before = {f: (d / "snap" / f).read_bytes() for f in os.listdir(d / "snap")}
    set_solver(d, max_iter=4, snapshot=2)

    def small_files():   # the caffemodel (about 280 kB) no longer fits: EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    rc, _out, err = _finish(_start(d, "--snapshot", "snap/s_iter_2.solverstate", preexec=small_files))
    assert rc == 1 and "Traceback" not in err, err
    (line,) = _error_lines(err)
    assert "SnapshotWriteError" in line and "s_iter_4.caffemodel" in line and "s_iter_2.solverstate" in line
    assert {f: (d / "snap" / f).read_bytes() for f in os.listdir(d / "snap")} == before   # intact, nothing new
    assert check_snapshots(str(d / "snap")) == [2]


def test_lmdb_truncated_while_training(tmp_path):
    d = _make(tmp_path, max_iter=100000, snapshot=0, records=400)
    p = _start(d, env=_env(PROBE="train", PROBE_SLEEP=0.5))
    _wait_for(d / "probe_train", p)
    os.truncate(d / "db" / "data.mdb", 4096)
    rc, _out, err = _finish(p)
    assert rc == 1 and "Traceback" not in err, (rc, err[-2000:])   # not -SIGBUS
    (line,) = _error_lines(err)
    assert "DataSourceError" in line and "truncated" in line and "data.mdb" in line


def test_sigint_during_setup_prints_one_line(tmp_path):
    d = _make(tmp_path)
    p = _start(d, env=_env(PROBE="setup", PROBE_SLEEP=30))
    _wait_for(d / "probe_setup", p)
    p.send_signal(signal.SIGINT)
    rc, _out, err = _finish(p)
    assert rc == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted")
    assert not os.listdir(d / "snap")


def test_sighup_in_setup_and_sigint_in_training_snapshot_and_stop(tmp_path):
    """SIGHUP during set-up takes effect when training starts (snapshot after iteration 1); Ctrl-C during
    training stops it with a snapshot (Caffe's defaults: stop, snapshot)."""
    d = _make(tmp_path, max_iter=1000, snapshot=0)
    p = _start(d, env=_env(PROBE="setup,train", PROBE_SLEEP=1.5))
    _wait_for(d / "probe_setup", p)
    p.send_signal(signal.SIGHUP)
    _wait_for(d / "probe_train", p)
    p.send_signal(signal.SIGINT)
    rc, _out, err = _finish(p)
    assert rc == 0 and "Traceback" not in err, err
    assert "Optimization stopped early." in err
    iters = check_snapshots(str(d / "snap"))
    assert iters[0] == 1 and len(iters) == 2 and iters[1] >= 3


def test_sighup_then_double_sigint_during_testing(tmp_path):
    """In a test phase: a second Ctrl-C interrupts at once, with one line and exit 130; the files under
    final names load."""
    d = _make(tmp_path, max_iter=1000, snapshot=0, extra="test_iter: 5 test_interval: 2 test_initialization: false")
    text = (d / "net.prototxt").read_text()
    (d / "net.prototxt").write_text(text)
    p = _start(d, env=_env(PROBE="test", PROBE_SLEEP=3))
    _wait_for(d / "probe_test", p)
    p.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    rc, _out, err = _finish(p)
    assert rc == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted")
    check_snapshots(str(d / "snap"))


@pytest.fixture
def tiny_solver(tmp_path):
    from caffessl.solver.solver import get_solver
    from caffessl.proto import caffe_pb2
    from caffessl.io.prototxt import parse_text
    net = parse_text('''name: "t"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }''',
                     caffe_pb2.NetParameter())

    def make(**kw):
        sp = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="fixed", max_iter=10, snapshot=1,
                                       snapshot_prefix=str(tmp_path / "s"), random_seed=1, **kw)
        sp.net_param.CopyFrom(net)
        return get_solver(sp, "solver.prototxt")
    return make


def test_weights_turning_non_finite_are_never_snapshotted(tiny_solver, tmp_path):
    from caffessl.errors import TrainingDivergedError
    s = tiny_solver()
    s.step(2)                                             # snapshots s_iter_1, s_iter_2
    s.add_callback(lambda: None, lambda: s.net.params["ip1"][1].diff.__setitem__(Ellipsis, np.inf))
    with pytest.raises(TrainingDivergedError, match=r"ip1.*NaN or Inf.*last snapshot: .*s_iter_2\.solverstate"):
        s.step(1)                                         # the update makes the bias inf; the loss was finite
    assert not (tmp_path / "s_iter_3.caffemodel").exists() and not (tmp_path / "s_iter_3.solverstate").exists()
    assert check_snapshots(str(tmp_path)) == [1, 2]


def test_nan_loss_names_only_a_finite_snapshot(tiny_solver, tmp_path):
    from caffessl.errors import TrainingDivergedError
    s = tiny_solver()
    s.step(1)
    s.net.params["ip1"][0].data[...] = np.nan
    with pytest.raises(TrainingDivergedError, match=r"loss is nan.*last snapshot: .*s_iter_1\.solverstate"):
        s.step(1)
    assert check_snapshots(str(tmp_path)) == [1]


def test_write_error_in_hdf5_snapshot_keeps_the_previous(tiny_solver, tmp_path, monkeypatch):
    from caffessl.errors import SnapshotWriteError
    from caffessl.proto import caffe_pb2
    from caffessl.solver import solver as solver_mod
    s = tiny_solver(snapshot_format=caffe_pb2.SolverParameter.HDF5)
    s.step(1)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(solver_mod, "write_solverstate_hdf5", full)
    with pytest.raises(SnapshotWriteError, match=r"No space left on device.*s_iter_1\.solverstate\.h5"):
        s.step(1)
    assert sorted(os.listdir(tmp_path)) == ["s_iter_1.caffemodel.h5", "s_iter_1.solverstate.h5"]


def test_restore_refuses_impossible_values(tiny_solver, tmp_path):
    from caffessl.errors import CaffemodelFormatError
    from caffessl.io.solverstate import SolverStateData, write_solverstate
    s = tiny_solver()
    hist = [h.numpy() for h in s.history]
    write_solverstate(tmp_path / "bad.solverstate", SolverStateData(3, "", -1, hist))
    with pytest.raises(CaffemodelFormatError, match=r"bad\.solverstate.*current_step.*-1"):
        s.restore(tmp_path / "bad.solverstate")


def test_orphan_temporary_files_are_removed_at_start(tiny_solver, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".tmp-s_iter_7.caffemodel-{dead}-abc123"
    live = tmp_path / f".tmp-s_iter_7.caffemodel-{os.getpid()}-abc123"    # a writer that still runs
    orphan.write_bytes(b"partial")
    live.write_bytes(b"partial")
    tiny_solver()
    assert not orphan.exists() and live.exists()
