"""Applying an update and stabilizing the sparsity it produced (Net::Update -> Blob::Update + Blob::Zerout).

For each learnable param, after the solver rule computed ``update_value``:

    W -= mask .* update_value        (mask: ``layer.mask`` of the layer owning the weights -- set when weights
                                      are loaded with a connectivity_mode other than CONNECTED, or by
                                      ``layer.set_mask``; it never touches the history)
    W[|W| < threshold] = 0           ("Zerout": strict, so exactly +-threshold is kept)

The threshold is the fork's compile-time ZEROUT_THRESHOLD (1e-4), made configurable by caffessl's schema
additions: ``SolverParameter.ssl_stabilize_param`` (field 1001: ``zerout_threshold``, ``zerout_scope``
ALL_PARAMS | WEIGHTS_ONLY | NONE) and the per-param override ``ParamSpec.zerout_threshold`` (1001). The
defaults (1e-4, ALL_PARAMS: weights, biases, BatchNorm statistics, frozen params) are the fork's behaviour.
"""
from __future__ import annotations

import torch

from ..errors import SolverConfigError
from ..proto import caffe_pb2
from ..weights_matrix import zerout_
from .regularize import param_key

_Scope = caffe_pb2.SSLStabilizeParameter


def solver_zerout_threshold(solver_param) -> float:
    """The solver-wide zeroing threshold (schema default when ssl_stabilize_param is absent)."""
    return float(solver_param.ssl_stabilize_param.zerout_threshold)


class Stabilizer:
    """Applies each param's update with its connectivity mask, then zeroes small entries."""

    def __init__(self, net, solver_param):
        self.net = net
        sp = solver_param.ssl_stabilize_param
        base = float(sp.zerout_threshold)
        scope = sp.zerout_scope
        if base < 0:
            raise SolverConfigError(f"ssl_stabilize_param.zerout_threshold must be >= 0, got {base}")
        self.thresholds: dict[tuple, float] = {}
        for info in net.learnable_params:
            if info.spec.HasField("zerout_threshold"):
                thr = float(info.spec.zerout_threshold)
                if thr < 0:
                    raise SolverConfigError(f"layer '{info.layer_name}' param {info.index}: zerout_threshold "
                                            f"must be >= 0, got {thr}")
            elif scope == _Scope.NONE or (scope == _Scope.WEIGHTS_ONLY and info.index != 0):
                thr = 0.0
            else:
                thr = base
            self.thresholds[param_key(info)] = thr

    @staticmethod
    def mask_for(info):
        """The connectivity mask of the layer that owns ``info`` (weights only), or None."""
        m = info.layer.mask if info.index == 0 else None
        if m is None or m.shape != info.tensor.shape:
            return None
        return m

    def update(self, info, update_value: torch.Tensor) -> None:
        """W -= mask .* update_value, then Zerout (in place on ``info.tensor``)."""
        with torch.no_grad():
            w = info.tensor
            mask = self.mask_for(info)
            if mask is not None:
                w.sub_(update_value * mask.to(update_value.dtype))
            else:
                w.sub_(update_value)
            zerout_(w, self.thresholds.get(param_key(info), 0.0))

    def update_all(self, params) -> None:
        """Net::Update for ``params`` (ParamInfo list): each one's update value is its ``grad`` (where the
        rule left it, as Caffe leaves it in the diff). W -= update with one ``torch._foreach_sub_`` (masked
        weights: W -= mask .* update), then Zerout per param."""
        with torch.no_grad():
            plain, masked = [], []
            for info in params:
                m = self.mask_for(info)
                if m is None:
                    plain.append(info.tensor.detach())
                    masked.append(None)
                else:
                    masked.append(m)
            if plain:
                torch._foreach_sub_(plain, [i.tensor.grad for i, m in zip(params, masked) if m is None])
            for info, m in zip(params, masked):
                w = info.tensor.detach()
                if m is not None:
                    u = info.tensor.grad
                    w.sub_(u * m.to(u.dtype))
                zerout_(w, self.thresholds.get(param_key(info), 0.0))
