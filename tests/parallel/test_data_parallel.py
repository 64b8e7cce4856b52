"""Caffe 1.0's data-parallel semantics on 2 gloo processes (pycaffe surface: solvers built inside an
initialized process group): averaged gradients over round-robin shards equal one process with a doubled
batch; the ranks' weights are bit-identical after every step, with SSL group lasso, zero-threshold and
connectivity masks on too; only rank 0 builds test nets; the consistency check catches a changed weight."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from caffessl.parallel.launch import launch
from tests.golden import REPO
from tests.parallel._lenet import lenet_text, make_data, solver_text

B, ITERS = 4, 20
ZEROED = {"conv1": (slice(0, 5),), "conv2": (slice(None), slice(0, 4)), "ip1": (slice(0, 100),)}


def _weights_with_zero_groups(d):
    """A caffemodel whose conv1 filters 0-4, conv2 input channels 0-3 and ip1 rows 0-99 are zero (the
    DISCONNECTED_GRPWISE masks keep them zero)."""
    import os

    import caffessl as caffe
    caffe.set_random_seed(3)
    cwd = os.getcwd()
    os.chdir(d)   # the net's sources are relative to the CWD, as in Caffe
    try:
        net = caffe.Net("ssl_2b.prototxt", caffe.TRAIN)
    finally:
        os.chdir(cwd)
    for layer, idx in ZEROED.items():
        net.params[layer][0].data[idx] = 0
    net.save(str(d / "zero_groups.caffemodel"))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    make_data(d)
    for name, batch, ssl in (("plain_b", B, False), ("plain_2b", 2 * B, False), ("ssl_b", B, True),
                             ("ssl_2b", 2 * B, True)):
        (d / f"{name}.prototxt").write_text(lenet_text(batch, ssl=ssl))
        (d / f"s_{name}.prototxt").write_text(solver_text(f"{name}.prototxt", max_iter=ITERS, ssl=ssl))
    _weights_with_zero_groups(d)
    (d / "s_signals.prototxt").write_text(solver_text("plain_b.prototxt", max_iter=ITERS, snapshot=0,
                                                      snapshot_prefix="sig/l"))
    (d / "sig").mkdir()
    cfg = {"cwd": str(d), "runs": [
        {"name": "plain", "solver": "s_plain_b.prototxt", "iters": ITERS},
        {"name": "ssl", "solver": "s_ssl_b.prototxt", "iters": ITERS, "weights": "zero_groups.caffemodel",
         "perturb_rank": 1},
        # rank 0 asks for a snapshot at its 3rd poll, rank 1 for a snapshot (not rank 0's: ignored) at its 2nd
        # and to stop at its 5th
        {"name": "signals", "solver": "s_signals.prototxt", "actions": [{"3": "snapshot"},
                                                                        {"2": "snapshot", "5": "stop"}]}]}
    (d / "cfg.json").write_text(json.dumps(cfg))
    assert launch([sys.executable, str(REPO / "tests" / "parallel" / "_worker.py"), str(d / "cfg.json")], 2) == 0
    results = [json.loads((d / f"result_rank{r}.json").read_text()) for r in range(2)]
    return d, results


def _single_process(d, monkeypatch, solver, weights=None):
    import caffessl as caffe
    monkeypatch.chdir(d)
    s = caffe.get_solver(solver)
    assert s.parallel is None
    if weights:
        s.net.copy_from(weights)
    s.step(ITERS)
    return {f"{n}/{i}": b.data.copy() for n, bl in s.net.params.items() for i, b in enumerate(bl)}


def _assert_close(two_ranks, one, rel=1e-5):
    assert set(two_ranks.files) == set(one)
    moved = 0
    for k, ref in one.items():
        got = two_ranks[k]
        scale = float(np.abs(ref).max()) or 1.0
        err = float(np.abs(got - ref).max())
        assert err <= rel * scale, f"{k}: max abs diff {err:.3g} > {rel} x {scale:.3g}"
        moved += 1
    assert moved


@pytest.mark.parametrize("run,weights", [("plain", None), ("ssl", "zero_groups.caffemodel")])
def test_two_ranks_equal_one_process_with_doubled_batch(case, monkeypatch, run, weights):
    d, _ = case
    one = _single_process(d, monkeypatch, f"s_{run}_2b.prototxt", weights)
    _assert_close(np.load(d / f"{run}_rank0.npz"), one)
    if weights:   # the masks held the zero groups at zero on the ranks as in the single process
        w = np.load(d / f"{run}_rank0.npz")
        for layer, idx in ZEROED.items():
            assert not w[f"{layer}/0"][idx].any()


@pytest.mark.parametrize("run", ["plain", "ssl"])
def test_ranks_bit_identical_after_every_step(case, run):
    d, results = case
    r0, r1 = results[0][run], results[1][run]
    assert len(r0["steps"]) == ITERS
    assert r0["steps"] == r1["steps"]
    assert len(set(r0["steps"])) == ITERS          # the weights did move at every step
    a, b = np.load(d / f"{run}_rank0.npz"), np.load(d / f"{run}_rank1.npz")
    for k in a.files:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_only_rank_zero_builds_test_nets(case):
    _, results = case
    assert results[0]["plain"]["test_nets"] == 1 and results[1]["plain"]["test_nets"] == 0


def test_consistency_check_catches_a_changed_weight(case):
    _, results = case
    assert results[0]["plain"]["check_after_perturb"] == "passed"
    for r in range(2):
        msg = results[r]["ssl"]["check_after_perturb"]
        assert "rank 1 differ from rank 0's" in msg and "conv1" in msg, msg


def test_requests_are_agreed_by_all_ranks(case):
    """A stop asked on rank 1 stops both ranks after the same iteration; a snapshot is taken once, when
    rank 0 asks (polls happen once per iteration, with the gradients' all-reduce)."""
    d, results = case
    for r in range(2):
        assert results[r]["signals"] == {"iter": 5, "early_exit": True}
    assert sorted(p.name for p in (d / "sig").iterdir()) == ["l_iter_3.caffemodel", "l_iter_3.solverstate"]
