"""ApplyUpdate's multi-tensor (torch._foreach_*) steps equal Caffe's per-param order of operations bit for bit;
every rule works on lists; Zerout's one-pass form equals the three-pass masked_fill."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.solver import updates
from caffessl.solver.lr_policy import learning_rate
from caffessl.weights_matrix import zerout_

f32 = np.float32
NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 8 dim: 3 dim: 6 dim: 6 } shape { dim: 8 dim: 4 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.001 }
                      bias_filler { type: "gaussian" std: 0.0002 } } }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "p" param { lr_mult: 1 decay_mult: 3 }
  param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.001 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def _solver(extra: str = ""):
    sp = parse_text(f"net_param {{ {NET} }} base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "
                    f'"step" gamma: 0.5 stepsize: 2 random_seed: 3 display: 0 {extra}',
                    caffe_pb2.SolverParameter())
    return caffe.SGDSolver(sp)


def _reference_iteration(solver, thr):
    """One SGD iteration one param at a time, in sgd_solver.cpp's order: g += wd*decay_mult*w ;
    h = momentum*h + rate*lr_mult*g ; g = h ; w -= h ; w[|w| < thr] = 0."""
    sp, net = solver.param, solver.net
    net.clear_param_diffs()
    net.forward_backward()
    rate = learning_rate(sp, solver.iter, 0)[0]
    with torch.no_grad():
        for info, h in zip(solver.params, solver.history):
            g, w = info.tensor.grad, info.tensor.detach()
            g.add_(w, alpha=float(sp.weight_decay) * float(info.decay_mult))
            h.mul_(sp.momentum).add_(g, alpha=float(f32(rate) * f32(info.lr_mult)))
            g.copy_(h)
            w.sub_(h)
            w.masked_fill_(w.abs() < thr, 0)
    solver.iter += 1


def _state(solver):
    return ([i.tensor.detach().clone() for i in solver.params] + [h.clone() for h in solver.history]
            + [i.tensor.grad.clone() for i in solver.params])


def _bits_equal(a, b):
    return all(torch.equal(x.view(torch.int32), y.view(torch.int32)) for x, y in zip(a, b))


@pytest.mark.parametrize("extra,thr", [("", 1e-4), ("ssl_stabilize_param { zerout_threshold: 0.0005 }", 5e-4)])
def test_apply_update_matches_per_param_reference_bitwise(extra, thr):
    ref = _solver(extra)                   # (one after the other: the solver's seed drives DummyData too)
    for _ in range(6):
        _reference_iteration(ref, float(f32(thr)))
    ours = _solver(extra)
    ours.step(6)
    a, b = _state(ref), _state(ours)
    assert _bits_equal(a, b)
    assert any(bool((t == 0).any()) for t in a[:4]), "Zerout should have zeroed some entries"


@pytest.mark.parametrize("name", list(updates.RULES))
def test_each_rule_on_a_list_equals_one_tensor_at_a_time(name):
    rule = updates.RULES[name]
    sp = caffe_pb2.SolverParameter(momentum=0.9, momentum2=0.999, delta=1e-6, rms_decay=0.95)
    hp = rule.hyper_parameters(sp)
    g = torch.Generator().manual_seed(1)
    shapes = [(4, 3), (7,), (2, 2, 3)]
    grads = [torch.randn(s, generator=g) for s in shapes]
    hist = [[torch.rand(s, generator=g) for s in shapes] for _ in range(rule.n_history)]
    one_grads = [t.clone() for t in grads]
    one_hist = [[h.clone() for h in slot] for slot in hist]
    out = rule.fn(grads, hist, local_rate=0.01, t=3, **hp)
    assert out is grads
    for i in range(len(shapes)):
        rule.fn([one_grads[i]], [[slot[i]] for slot in one_hist], local_rate=0.01, t=3, **hp)
    assert _bits_equal(grads + [h for s in hist for h in s], one_grads + [h for s in one_hist for h in s])
    assert all(bool(torch.isfinite(t).all()) for t in grads)


def test_rules_declare_history_and_hyper_parameters():
    sp = caffe_pb2.SolverParameter(momentum=0.8, momentum2=0.99, delta=1e-7, rms_decay=0.9)
    assert updates.RULES["Adam"].hyper_parameters(sp) == {"beta1": sp.momentum, "beta2": sp.momentum2,
                                                          "delta": sp.delta}
    assert updates.RULES["RMSProp"].hyper_parameters(sp) == {"rms_decay": sp.rms_decay, "delta": sp.delta}
    assert {n: r.n_history for n, r in updates.RULES.items()} == {
        "SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_zerout_equals_masked_fill(dtype):
    thr = float(np.float32(1e-4))
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5000, generator=g, dtype=dtype) * 2e-4
    lam32 = float(np.nextafter(np.float32(thr), np.float32(0)))
    t[:8] = torch.tensor([thr, -thr, lam32, -lam32, -0.0, 0.0, float("nan"), float("-inf")], dtype=dtype)
    ref = t.clone()
    ref.masked_fill_(ref.abs() < thr, 0)
    zerout_(t, thr)
    view = torch.int64 if dtype == torch.float64 else torch.int32
    assert torch.equal(t.view(view), ref.view(view))     # same bits: +0 for zeroed entries, NaN kept
