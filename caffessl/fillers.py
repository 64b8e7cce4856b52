"""Caffe's weight fillers (include/caffe/filler.hpp) over torch tensors, driven by FillerParameter.

Random fillers draw from Caffe's own global stream (``caffessl.caffe_rng``: mt19937 through Boost's float32
uniform / ziggurat-normal / bernoulli, seeded by ``caffessl.set_random_seed`` or the solver's
``random_seed``), in Caffe's order and arithmetic: after the same seed, a net whose layers before a filler
draw nothing at set-up (Input, HDF5Data, MemoryData... -- Caffe's Data/ImageData layers also take draws for
their prefetch threads, which caffessl does not) gets Caffe's initial weights bit for bit. Values are
generated in float32 (Caffe's Dtype) and cast to the tensor's dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import caffe_rng
from .errors import LayerConfigError

F = np.float32


def _legacy(t: torch.Tensor, i: int) -> int:
    """Blob::LegacyShape(i): the axis, or 1 past the last one."""
    return int(t.shape[i]) if i < t.dim() else 1


def _variance_n(t, fp) -> np.float32:
    """XavierFiller / MSRAFiller's n: fan_in = count / num, fan_out = count / channels (integers), per
    variance_norm; a blob with no values or a zero fan has no scale (LayerConfigError)."""
    from .proto import caffe_pb2
    count = t.numel()
    if count == 0:
        raise LayerConfigError(f"{fp.type} filler: the blob of shape {tuple(t.shape)} holds no values")
    fan_in, fan_out = count // _legacy(t, 0), count // _legacy(t, 1)
    norm = fp.variance_norm
    if norm == caffe_pb2.FillerParameter.AVERAGE:
        n = F(fan_in + fan_out) / F(2)
    elif norm == caffe_pb2.FillerParameter.FAN_OUT:
        n = F(fan_out)
    else:
        n = F(fan_in)
    if not n > 0:
        raise LayerConfigError(f"{fp.type} filler: blob of shape {tuple(t.shape)} has a zero fan "
                               f"(variance_norm {caffe_pb2.FillerParameter.VarianceNorm.Name(norm)})")
    return n


def _put(t: torch.Tensor, values: np.ndarray) -> None:
    t.copy_(torch.from_numpy(values.reshape(tuple(t.shape))).to(t.dtype))


@torch.no_grad()
def fill(t: torch.Tensor, fp, where: str = "") -> torch.Tensor:
    """Fill ``t`` in place according to the caffe_pb2.FillerParameter ``fp``; errors start with ``where``
    (the file and the layer)."""
    try:
        return _fill(t, fp)
    except LayerConfigError as e:
        if not where:
            raise
        raise LayerConfigError(f"{where}: {e}") from None


def _fill(t: torch.Tensor, fp) -> torch.Tensor:
    for name in ("value", "min", "max", "mean", "std"):
        if not math.isfinite(getattr(fp, name)):
            raise LayerConfigError(f"filler '{fp.type}': {name} is {getattr(fp, name)}; it must be finite")
    kind = fp.type
    if kind != "gaussian" and fp.sparse != -1:
        raise LayerConfigError(f"filler '{kind}': sparse ({fp.sparse}) is only supported by the gaussian filler")
    rng = caffe_rng.get()
    n = t.numel()
    if kind == "constant":
        t.fill_(fp.value)
    elif kind == "uniform":
        if not fp.min <= fp.max:        # caffe_rng_uniform: CHECK_LE(a, b)
            raise LayerConfigError(f"uniform filler: min ({fp.min}) is above max ({fp.max})")
        if not math.isfinite(F(fp.max) - F(fp.min)):
            raise LayerConfigError(f"uniform filler: the range [{fp.min}, {fp.max}] overflows float32")
        _put(t, rng.uniform(n, fp.min, fp.max))
    elif kind == "gaussian":
        if not fp.std > 0:              # caffe_rng_gaussian: CHECK_GT(sigma, 0)
            raise LayerConfigError(f"gaussian filler: std must be positive, got {fp.std}")
        values = rng.gaussian(n, fp.mean, fp.std)
        if fp.sparse >= 0:
            if t.dim() < 1:
                raise LayerConfigError("gaussian filler with sparse needs a blob with at least one axis")
            p = F(fp.sparse) / F(t.shape[0])
            if p > 1:
                raise LayerConfigError(f"gaussian filler: sparse {fp.sparse} exceeds the {t.shape[0]} outputs of a "
                                       f"blob of shape {tuple(t.shape)}")
            values *= rng.bernoulli(n, p).astype(F)
        _put(t, values)
    elif kind == "positive_unitball":
        values = rng.uniform(n, 0, 1).reshape(_legacy(t, 0), -1)
        sums = np.cumsum(values, axis=1, dtype=F)[:, -1:]           # Caffe's running float sum per row
        _put(t, values / sums)
    elif kind == "xavier":
        scale = np.sqrt(F(3) / _variance_n(t, fp))
        _put(t, rng.uniform(n, -scale, scale))
    elif kind == "msra":
        _put(t, rng.gaussian(n, 0.0, np.sqrt(F(2) / _variance_n(t, fp))))
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
