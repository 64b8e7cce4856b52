"""Caffe's weight fillers (include/caffe/filler.hpp) over torch tensors, driven by FillerParameter.

Random numbers come from torch's global generator (seeded by ``caffessl.set_random_seed`` or the solver's
``random_seed``); the distributions and their parameters are Caffe's, the streams are not bit-identical.
"""
from __future__ import annotations

import math

import torch

from .errors import LayerConfigError


def _fans(t: torch.Tensor):
    count = t.numel()
    num = t.shape[0] if t.dim() > 0 else 1
    channels = t.shape[1] if t.dim() > 1 else 1
    return count / num, count / channels


def _variance_n(t, fp):
    from .proto import caffe_pb2
    fan_in, fan_out = _fans(t)
    norm = fp.variance_norm
    if norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    return fan_in


@torch.no_grad()
def fill(t: torch.Tensor, fp) -> torch.Tensor:
    """Fill ``t`` in place according to the caffe_pb2.FillerParameter ``fp``."""
    kind = fp.type
    if kind != "gaussian" and fp.sparse != -1:
        raise LayerConfigError(f"filler '{kind}': sparse ({fp.sparse}) is only supported by the gaussian filler")
    if kind == "constant":
        t.fill_(fp.value)
    elif kind == "uniform":
        t.uniform_(fp.min, fp.max)
    elif kind == "gaussian":
        t.normal_(fp.mean, fp.std)
        if fp.sparse >= 0:
            if t.dim() < 1:
                raise LayerConfigError("gaussian filler with sparse needs a blob with at least one axis")
            p = fp.sparse / t.shape[0]
            if p > 1:
                raise LayerConfigError(f"gaussian filler: sparse {fp.sparse} exceeds the {t.shape[0]} outputs of a "
                                       f"blob of shape {tuple(t.shape)}")
            t.mul_(torch.bernoulli(torch.full_like(t, p)))
    elif kind == "positive_unitball":
        t.uniform_(0, 1)
        rows = t.view(t.shape[0] if t.dim() else 1, -1)
        rows.div_(rows.sum(dim=1, keepdim=True))
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _variance_n(t, fp))
        t.uniform_(-scale, scale)
    elif kind == "msra":
        t.normal_(0.0, math.sqrt(2.0 / _variance_n(t, fp)))
    elif kind == "bilinear":
        if t.dim() != 4 or t.shape[2] != t.shape[3]:
            raise LayerConfigError(f"bilinear filler needs a 4-D blob with square kernels, got {tuple(t.shape)}")
        k = t.shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        x = torch.arange(k, dtype=torch.float64)
        w1 = 1 - torch.abs(x / f - c)
        t.copy_((w1[:, None] * w1[None, :]).to(t.dtype).expand_as(t))
    else:
        raise LayerConfigError(f"unknown filler type '{kind}' (known: constant, uniform, gaussian, "
                               "positive_unitball, xavier, msra, bilinear)")
    return t
