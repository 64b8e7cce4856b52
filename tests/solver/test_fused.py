"""The fused (torch._foreach_*) SGD update equals the per-param path bit for bit; Zerout's one-pass form
equals the three-pass masked_fill."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.solver import fused
from caffessl.solver.stabilize import zerout_

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


def _train(use_fused: bool, extra: str = "", iters: int = 6):
    sp = parse_text(f"net_param {{ {NET} }} base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "
                    f'"step" gamma: 0.5 stepsize: 2 random_seed: 3 display: 0 {extra}',
                    caffe_pb2.SolverParameter())
    solver = caffe.SGDSolver(sp)
    if not use_fused:
        solver._fused = False
    solver.step(iters)
    return solver


def _state(solver):
    return ([i.tensor.detach().clone() for i in solver.params] + [h.clone() for h in solver.history]
            + [i.tensor.grad.clone() for i in solver.params])


def _bits_equal(a, b):
    return all(torch.equal(x.view(torch.int32), y.view(torch.int32)) for x, y in zip(a, b))


@pytest.mark.parametrize("extra", ["", "ssl_stabilize_param { zerout_threshold: 0.0005 }"])
def test_fused_sgd_matches_per_param_path_bitwise(extra):
    ref, fast = _train(False, extra), _train(True, extra)
    assert fast._fused, "the fused path should apply to plain SGD + L2"
    assert ref._fused is False
    a, b = _state(ref), _state(fast)
    assert _bits_equal(a, b)
    assert any(bool((t == 0).any()) for t in a[:4]), "Zerout should have zeroed some entries"


@pytest.mark.parametrize("extra", ['type: "Nesterov"', "iter_size: 2", 'regularization_type: "L1"',
                                   "breadth_decay: 0.001"])
def test_fused_path_declines_other_features(extra):
    net = NET.replace("param { lr_mult: 1 decay_mult: 3 }", "param { lr_mult: 1 decay_mult: 3 breadth_decay_mult: 1 }")
    sp = parse_text(f"net_param {{ {net} }} base_lr: 0.01 momentum: 0.9 weight_decay: 0.01 lr_policy: "
                    f'"fixed" {extra}', caffe_pb2.SolverParameter())
    assert fused.plan(caffe.get_solver(sp) if hasattr(caffe, "get_solver") else caffe.SGDSolver(sp)) is None


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
