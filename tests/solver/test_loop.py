"""The loop's control flow and the pure rules/policies against independent numpy formulas (golden README items
11-13): stop/snapshot requests, divergence, pycaffe's solver surface, poly/sigmoid/multistep, Nesterov/Adam."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch

import caffessl
from caffessl.commands.train import SignalActions
from caffessl.errors import SolverConfigError, TrainingDivergedError
from caffessl.io import read_solver_prototxt
from caffessl.proto import caffe_pb2
from caffessl.solver import updates
from caffessl.solver.lr_policy import learning_rate
from tests.golden import need_shared
from tests.solver._helpers import capture_log, params_of


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    d = need_shared("golden", "solver_sgd_momentum_l2")
    monkeypatch.chdir(d)

    def make(**fields):
        sp = read_solver_prototxt("solver.prototxt")
        sp.snapshot_prefix = str(tmp_path / "t")
        for k, v in fields.items():
            setattr(sp, k, v)
        return caffessl.get_solver(sp)
    return make


def test_stop_request_snapshots_and_ends(tiny, tmp_path):
    s = tiny(snapshot_after_train=True, max_iter=10)
    s.action_fn = lambda: "stop" if s.iter == 3 else "none"
    with capture_log() as cap:
        s.solve()
    assert s.iter == 3 and (tmp_path / "t_iter_3.caffemodel").is_file()
    assert "Optimization stopped early." in cap.messages


def test_snapshot_request_continues(tiny, tmp_path):
    s = tiny(max_iter=4)
    s.action_fn = lambda: "snapshot" if s.iter == 2 else "none"
    s.solve()
    assert s.iter == 4 and (tmp_path / "t_iter_2.solverstate").is_file()
    assert not (tmp_path / "t_iter_4.solverstate").exists()  # snapshot_after_train: false in this case


def test_signals_map_to_actions():
    with SignalActions("stop", "snapshot") as actions:
        assert actions() == "none"
        signal.raise_signal(signal.SIGHUP)
        assert actions() == "snapshot"
        signal.raise_signal(signal.SIGINT)
        assert actions() == "stop"
    with SignalActions("none", "none") as actions:
        signal.raise_signal(signal.SIGINT)
        assert actions() == "none"


def test_nan_loss_raises_before_the_update(tiny):
    s = tiny()
    with torch.no_grad():
        s.net.params["ip1"][1].data[...] = np.nan
    before = params_of(s.net)
    with pytest.raises(TrainingDivergedError, match="iteration 0: the training loss is nan"):
        s.step(1)
    after = params_of(s.net)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_pycaffe_surface(tiny):
    s = tiny(type="Adam", momentum2=0.999)
    assert isinstance(s, caffessl.AdamSolver) and len(s.history) == 2 * len(s.net.learnable_params)
    assert s.iter == 0 and s.test_nets == []
    s.step(2)
    assert s.iter == 2 and float(s.net.blobs["loss"].data) > 0
    assert isinstance(caffessl.SGDSolver("solver.prototxt"), caffessl.SGDSolver)


def test_adagrad_and_rmsprop_refuse_momentum(tiny):
    for kind in ("AdaGrad", "RMSProp"):
        with pytest.raises(SolverConfigError, match=f"momentum cannot be used with {kind}"):
            tiny(type=kind, momentum=0.9)


def _sp(**kw):
    sp = caffe_pb2.SolverParameter(base_lr=0.01, **{k: v for k, v in kw.items() if k != "stepvalue"})
    sp.stepvalue.extend(kw.get("stepvalue", []))
    return sp


@pytest.mark.parametrize("it", [0, 1, 7, 50, 99])
def test_poly_and_sigmoid_policies(it):
    poly = learning_rate(_sp(lr_policy="poly", power=1.5, max_iter=100), it, 0)[0]
    assert poly == pytest.approx(0.01 * (1 - it / 100) ** 1.5, rel=1e-5)  # Caffe computes in float32
    sig = learning_rate(_sp(lr_policy="sigmoid", gamma=-0.1, stepsize=40), it, 0)[0]
    assert sig == pytest.approx(0.01 / (1 + math.exp(0.1 * (it - 40))), rel=1e-6)


def test_multistep_moves_one_step_per_iteration():
    sp = _sp(lr_policy="multistep", gamma=0.1, stepvalue=[2, 3, 4])
    step, rates = 0, []
    for it in (10, 11, 12):   # all three stepvalues are behind: Caffe still advances one per call
        r, step, _ = learning_rate(sp, it, step)
        rates.append(r)
    assert step == 3
    np.testing.assert_allclose(rates, [1e-3, 1e-4, 1e-5], rtol=1e-6)


def test_unknown_policy_is_refused():
    from caffessl.solver.lr_policy import check_policy
    with pytest.raises(SolverConfigError, match="'cosine'"):
        check_policy(_sp(lr_policy="cosine"))


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_nesterov_matches_caffe_formula():
    g, h0 = _rand(5, 3), _rand(5, 3, seed=1)
    h = torch.tensor(h0)
    (u,) = updates.nesterov([torch.tensor(g)], [[h]], local_rate=0.1, momentum=0.9)
    u = u.numpy()
    h_new = 0.9 * h0 + 0.1 * g
    np.testing.assert_allclose(h.numpy(), h_new, rtol=1e-6)
    np.testing.assert_allclose(u, 1.9 * h_new - 0.9 * h0, rtol=1e-5, atol=1e-7)


def test_adam_matches_caffe_formula():
    g, m0, v0 = _rand(4, 4), _rand(4, 4, seed=1), np.abs(_rand(4, 4, seed=2))
    m, v = torch.tensor(m0), torch.tensor(v0)
    (u,) = updates.adam([torch.tensor(g)], [[m], [v]], local_rate=0.001, beta1=0.9, beta2=0.999, delta=1e-8, t=3)
    u = u.numpy()
    m1 = 0.9 * m0 + 0.1 * g
    v1 = 0.999 * v0 + 0.001 * g * g
    corr = math.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3)   # eps is NOT bias-corrected
    np.testing.assert_allclose(u, 0.001 * corr * m1 / (np.sqrt(v1) + 1e-8), rtol=1e-5)
