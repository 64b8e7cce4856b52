"""`caffessl train --procs=N` / `--gpu` / a torchrun-style world: a rank killed mid-run stops the others
with a clear error and no hang, a SIGHUP forwarded to every rank gives one snapshot, the run resumes from it;
bad input is one error line naming the problem."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.golden import REPO
from tests.parallel._lenet import lenet_text, make_data, solver_text
from tests.solver._cli import run_cli, run_cli_inprocess

# a Python layer that sends signals at given forwards of given ranks: "rank:forward:self|parent:SIGNAL,..."
SIGNALLER = '''
import os, signal

class Signaller:
    def setup(self, bottom, top):
        self.n = 0
    def reshape(self, bottom, top):
        pass
    def forward(self, bottom, top):
        self.n += 1
        rank = int(os.environ.get("RANK", "0"))
        for spec in filter(None, os.environ.get("TEST_SIGNALS", "").split(",")):
            r, n, target, sig = spec.split(":")
            if int(r) == rank and int(n) == self.n:
                os.kill(os.getpid() if target == "self" else os.getppid(), getattr(signal, sig))
    def backward(self, top, propagate_down, bottom):
        pass
'''
LAYER = ('layer { name: "signals" type: "Python" bottom: "label" include { phase: TRAIN } '
         'python_param { module: "signaller" layer: "Signaller" } }')


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp_cli")
    make_data(d, n_train=64, n_test=20)
    (d / "signaller.py").write_text(SIGNALLER)
    (d / "net.prototxt").write_text(lenet_text(4, extra_layer=LAYER))
    (d / "s.prototxt").write_text(solver_text("net.prototxt", max_iter=20, display=4, snapshot=0,
                                              snapshot_prefix="snap/l"))
    (d / "snap").mkdir()
    return d


def test_killed_rank_stops_the_others_and_the_run_resumes_from_the_snapshot(case):
    # rank 0 gets SIGHUP (through the launcher, which forwards it to both ranks) at its 6th forward, rank 1
    # is SIGKILLed at its 12th
    env = {"TEST_SIGNALS": "0:6:parent:SIGHUP,1:12:self:SIGKILL", "CAFFESSL_STOP_GRACE": "20"}
    rc, _out, err = run_cli(["train", "--solver=s.prototxt", "--procs=2", "--allow-python"], case, timeout=150,
                            env=env)
    assert rc == 1, err
    snaps = sorted(p.name for p in (case / "snap").glob("*.solverstate"))
    assert len(snaps) == 1, snaps                       # one snapshot for one SIGHUP, taken by rank 0
    it = int(re.search(r"_iter_(\d+)\.", snaps[0]).group(1))
    assert 5 <= it <= 8, snaps
    lines = err.strip().splitlines()
    pid = re.search(r"Started rank 1 of 2 \(pid (\d+)\)", err).group(1)
    assert lines[-1] == (f"caffessl train: error: DistributedError: rank 1 of 2 (pid {pid}) was killed by SIGKILL; "
                         f"the other ranks were stopped; resume with --snapshot=snap/{snaps[0]}"), lines[-1]
    # rank 0 stopped on its own, with an error naming the failed collective (not by the launcher's SIGTERM)
    assert re.search(r"rank 0: all-reduce of the gradients at iteration 1[01] failed -- another rank stopped", err), err

    rc, _out, err = run_cli(["train", "--solver=s.prototxt", "--procs=2", "--allow-python",
                             f"--snapshot=snap/{snaps[0]}"], case, timeout=150)
    assert rc == 0, err
    shown = [int(m) for m in re.findall(r"Iteration (\d+), loss", err)]
    assert shown and min(shown) >= it and max(shown) == 20, shown
    assert f"Resuming from snap/{snaps[0]}" in err
    assert err.count("Data-parallel training on 2 ranks") == 1      # INFO lines come from rank 0 only


@pytest.fixture
def cli(monkeypatch, capsys):
    return lambda args, cwd: run_cli_inprocess(args, cwd, monkeypatch, capsys)


def _one_line(cli, case, *flags, match):
    rc, _out, err = cli(["train", "--solver=s.prototxt", *flags], case)
    lines = err.strip().splitlines()
    assert rc != 0 and len(lines) == 1, err
    assert match in lines[0], lines[0]


def test_gpu_and_procs_together(cli, case):
    _one_line(cli, case, "--gpu=0", "--procs=2", match="--gpu=0 and --procs=2 cannot be used together")


def test_procs_must_be_positive(cli, case):
    _one_line(cli, case, "--procs=0", match="--procs=0: give the number of CPU processes")


def test_procs_inside_a_torchrun_world(cli, case, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    _one_line(cli, case, "--procs=2", match="already rank 1 of a world of 4")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_gpu_without_cuda(cli, case):
    _one_line(cli, case, "--gpu=0,1", match="--gpu=0,1: torch ")
    _one_line(cli, case, "--gpu=0,1", match="sees no CUDA device on this machine; leave out --gpu to run on the CPU")
    _one_line(cli, case, "--gpu=all", match="--gpu=all: torch ")
    _one_line(cli, case, "--gpu=all", match="sees no CUDA device on this machine; leave out --gpu to run on the CPU")


def test_gpu_id_beyond_the_machine(cli, case, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _one_line(cli, case, "--gpu=3", match="--gpu=3: no GPU 3: this machine has 2 CUDA devices (ids 0-1)")
    _one_line(cli, case, "--gpu=0,3", match="--gpu=0,3: no GPU 3")
    _one_line(cli, case, "--gpu=1,1", match="--gpu=1,1: device id 1 is given twice; give each GPU once")
    _one_line(cli, case, "--gpu=x", match="--gpu=x: not a list of device ids")


def test_ranks_that_disagree_on_the_solver(case):
    """Two ranks of a torchrun-style world (the environment torchrun sets) given different solver files."""
    (case / "s_other.prototxt").write_text(solver_text("net.prototxt", max_iter=20, display=4, snapshot=0,
                                                       snapshot_prefix="snap/l", base_lr=0.02))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, solver in enumerate(("s.prototxt", "s_other.prototxt")):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, "-m", "caffessl", "train", f"--solver={solver}",
                                       "--allow-python"], cwd=case, env=env, stderr=subprocess.PIPE, text=True))
    for rank, p in enumerate(procs):
        _out, err = p.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, err
        assert "the ranks disagree on the solver: rank 0 runs 's.prototxt'" in lines[0], lines[0]
        assert "rank 1 runs 's_other.prototxt'" in lines[0] and lines[0].count("DistributedError: rank ") == 1


def test_torchrun_world(case):
    """`torchrun -m caffessl train`: the ranks join from torchrun's environment; rank 0 logs and snapshots."""
    (case / "s_tr.prototxt").write_text(solver_text("net.prototxt", max_iter=4, display=2, snapshot=0,
                                                    snapshot_prefix="tr/l", snapshot_after_train=True))
    (case / "tr").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "caffessl", "train", "--solver=s_tr.prototxt", "--allow-python"], cwd=case, env=env,
                       capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Data-parallel training on 2 ranks (torch.distributed, gloo)") == 1, p.stderr
    assert sorted(f.name for f in (case / "tr").iterdir()) == ["l_iter_4.caffemodel", "l_iter_4.solverstate"]
