"""Decoupled weight decay (SolverParameter.decoupled_weight_decay, ParamSpec.decoupled_decay_mult): 10 iterations
of each of Caffe's six update rules equal an independent float64 numpy computation, and with lambda = 0 the
trajectories are bit-identical to the pipeline without the step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import SolverConfigError
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.solver.decoupled import DecoupledDecay, decay_factor, decoupled_decay_

NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 8 dim: 5 } shape { dim: 8 dim: 3 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 2 decoupled_decay_mult: 0.25 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""

TYPES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]
BASE_LR = {"SGD": 0.05, "Nesterov": 0.05, "AdaGrad": 0.05, "RMSProp": 0.01, "AdaDelta": 1.0, "Adam": 0.01}


def _solver(kind, lam=None, extra="", base_lr=None):
    dec = "" if lam is None else f"decoupled_weight_decay: {lam}"
    mom = {"AdaDelta": 0.95, "AdaGrad": 0, "RMSProp": 0}.get(kind, 0.9)
    sp = parse_text(f'net_param {{ {NET} }} type: "{kind}" base_lr: {base_lr or BASE_LR[kind]} momentum: {mom} '
                    f'weight_decay: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 4 random_seed: 5 display: 0 '
                    f'delta: 1e-6 ssl_stabilize_param {{ zerout_scope: NONE }} {dec} {extra}',
                    caffe_pb2.SolverParameter())
    return caffe.get_solver(sp)


def _numpy_step(kind, w, g, hist, rate, lr_mult, t, lam_dec, dec_mult):
    """One Caffe update of one param in float64 (the rules as Caffe's *_solver.cpp write them), then the
    decoupled decay W -= (rate/base_lr)*lam*mult*W."""
    lr = rate * lr_mult
    if kind == "SGD":
        hist[0] = 0.9 * hist[0] + lr * g
        u = hist[0]
    elif kind == "Nesterov":
        old = hist[0].copy()
        hist[0] = 0.9 * hist[0] + lr * g
        u = 1.9 * hist[0] - 0.9 * old
    elif kind == "AdaGrad":
        hist[0] = hist[0] + g * g
        u = lr * g / (np.sqrt(hist[0]) + 1e-6)
    elif kind == "RMSProp":
        hist[0] = 0.99 * hist[0] + 0.01 * g * g
        u = lr * g / (np.sqrt(hist[0]) + 1e-6)
    elif kind == "AdaDelta":
        hist[0] = 0.95 * hist[0] + 0.05 * g * g
        step = g * np.sqrt((hist[1] + 1e-6) / (hist[0] + 1e-6))
        hist[1] = 0.95 * hist[1] + 0.05 * step * step
        u = lr * step
    else:   # Adam, beta1 = momentum, beta2 = momentum2 (0.999), t = iter + 1
        hist[0] = 0.9 * hist[0] + 0.1 * g
        hist[1] = 0.999 * hist[1] + 0.001 * g * g
        u = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * hist[0] / (np.sqrt(hist[1]) + 1e-6)
    w = w - u
    return w - (rate / BASE_LR[kind]) * lam_dec * dec_mult * w


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("kind", TYPES)
def test_ten_iterations_match_numpy(kind):
    lam_dec = 0.05
    solver = _solver(kind, lam_dec)
    net = solver.net
    W = net.params["ip"][0].data.astype(np.float64)
    b = net.params["ip"][1].data.astype(np.float64)
    nh = 2 if kind in ("AdaDelta", "Adam") else 1
    hw, hb = [np.zeros_like(W) for _ in range(nh)], [np.zeros_like(b) for _ in range(nh)]
    for it in range(10):
        solver.step(1)   # forward (fills x, y for this iteration), backward, update
        x = net.blobs["x"].data.astype(np.float64)
        y = net.blobs["y"].data.astype(np.float64)
        dp = (x @ W.T + b - y) / x.shape[0]          # EuclideanLoss: 1/(2N) sum (p - y)^2
        gW = dp.T @ x + 0.01 * W                     # + L2 in the gradient (decay_mult 1)
        gb = dp.sum(0) + 0.02 * b                    # bias: decay_mult 2
        rate = BASE_LR[kind] * 0.5 ** (it // 4)      # "step" policy
        W = _numpy_step(kind, W, gW, hw, rate, 1.0, it + 1, lam_dec, 1.0)
        b = _numpy_step(kind, b, gb, hb, rate, 2.0, it + 1, lam_dec, 2 * 0.25)   # decay_mult x decoupled mult
    assert _rel_err(net.params["ip"][0].data, W) < 1e-6
    assert _rel_err(net.params["ip"][1].data, b) < 1e-6


def test_composes_with_l1_and_group_lasso():
    """SGD + L1 weight decay + breadth (row) group Lasso in the gradient + decoupled decay after the update."""
    extra = 'regularization_type: "L1" breadth_decay: 0.02'
    net_text = NET.replace("param { lr_mult: 1 decay_mult: 1 }",
                           "param { lr_mult: 1 decay_mult: 1 breadth_decay_mult: 1 }")
    sp = parse_text(f'net_param {{ {net_text} }} type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 '
                    f'lr_policy: "step" gamma: 0.5 stepsize: 4 random_seed: 5 display: 0 decoupled_weight_decay: '
                    f'0.1 ssl_stabilize_param {{ zerout_scope: NONE }} {extra}', caffe_pb2.SolverParameter())
    solver = caffe.get_solver(sp)
    net = solver.net
    W = net.params["ip"][0].data.astype(np.float64)
    b = net.params["ip"][1].data.astype(np.float64)
    hw, hb = [np.zeros_like(W)], [np.zeros_like(b)]
    for it in range(10):
        solver.step(1)
        x = net.blobs["x"].data.astype(np.float64)
        y = net.blobs["y"].data.astype(np.float64)
        dp = (x @ W.T + b - y) / x.shape[0]
        rows = np.linalg.norm(W, axis=1, keepdims=True)
        gW = dp.T @ x + 0.01 * np.sign(W) + 0.02 * W / rows
        rate = 0.05 * 0.5 ** (it // 4)
        W = _numpy_step("SGD", W, gW, hw, rate, 1.0, it + 1, 0.1, 1.0)
        b = _numpy_step("SGD", b, dp.sum(0) + 0.01 * 2 * np.sign(b), hb, rate, 2.0, it + 1, 0.1, 0.5)
    assert _rel_err(net.params["ip"][0].data, W) < 1e-6
    assert _rel_err(net.params["ip"][1].data, b) < 1e-6


def _trajectory(solver, iters=10):
    out = []
    for _ in range(iters):
        solver.step(1)
        out.append([i.tensor.detach().clone() for i in solver.params] + [h.clone() for h in solver.history])
    return out


@pytest.mark.parametrize("kind", TYPES)
def test_lambda_zero_is_bit_identical_to_the_pipeline_without_the_step(kind):
    plain = _solver(kind)                                # field unset
    plain.decoupled.apply = lambda rate: None            # the pipeline as it was before this step existed
    a_traj = _trajectory(plain)                          # (each solver reseeds the global RNG: run in turn)
    zero = _solver(kind, 0.0)                            # field set to 0 (and a ParamSpec mult of 0.25)
    assert not zero.decoupled.active
    for a, b in zip(a_traj, _trajectory(zero)):
        assert all(torch.equal(x.view(torch.int32), y.view(torch.int32)) for x, y in zip(a, b))


def test_pure_step_and_factor():
    w = torch.tensor([1.0, -2.0, 0.0])
    decoupled_decay_([w], [decay_factor(0.05, 0.1, 0.2, 0.5)])   # eta = 0.5, f = 0.05
    assert torch.allclose(w, torch.tensor([0.95, -1.9, 0.0]))
    assert decay_factor(0.0, 0.0, 0.2) == 0.0


def test_negative_lambda_is_refused():
    sp = caffe_pb2.SolverParameter(decoupled_weight_decay=-0.1)
    with pytest.raises(SolverConfigError, match="decoupled_weight_decay"):
        DecoupledDecay([], sp)


def test_decay_mult_zero_exempts_a_param():
    """decay_mult gates both kinds of decay: a decay_mult 0 param (a bias, say) keeps its value under pure
    decoupled decay with zero gradients."""
    net = NET.replace("param { lr_mult: 2 decay_mult: 2 decoupled_decay_mult: 0.25 }",
                      "param { lr_mult: 2 decay_mult: 0 }")
    sp = parse_text(f'net_param {{ {net} }} type: "SGD" base_lr: 0.1 momentum: 0 lr_policy: "fixed" '
                    f'random_seed: 5 display: 0 decoupled_weight_decay: 0.5 '
                    f'ssl_stabilize_param {{ zerout_scope: NONE }}',
                    caffe_pb2.SolverParameter())
    solver = caffe.get_solver(sp)
    w0 = solver.net.params["ip"][0].data.copy()
    b0 = solver.net.params["ip"][1].data.copy()
    for info in solver.params:
        info.tensor.grad.zero_()
    solver.apply_update()
    np.testing.assert_array_equal(solver.net.params["ip"][1].data, b0)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, w0 * np.float32(0.5), rtol=1e-6)
