"""The glue between a layer and a conv_mode kernel: build once, rebuild lazily when the weights change,
and refuse backward through a sparse format as Caffe does.

A *kernel* is built from the weights (``Kernel(geom, w)``) and called as ``kernel(x, w, b)``. The engine
keeps a cheap fingerprint of the weight tensor -- identity, storage pointer, shape, torch's in-place
``_version`` counter and the host-access stamp that ``ParamBlob.data`` leaves (numpy writes through
``net.params[...][0].data`` bypass ``_version``) -- and rebuilds the kernel at the next forward when it moved.
"""
from __future__ import annotations

import torch

from ..errors import SparseTrainingError


def fingerprint(w: torch.Tensor):
    return (id(w), w.data_ptr(), tuple(w.shape), w.dtype, w.device, w._version,
            getattr(w, "_caffessl_host_gen", 0))


class _ForwardOnly(torch.autograd.Function):
    """Runs a sparse kernel; asking for its gradient raises Caffe's 'Training in sparse format' error."""

    @staticmethod
    def forward(ctx, x, w, b, kernel, where):
        ctx.where = where
        return kernel(x, w, b)

    @staticmethod
    def backward(ctx, grad):
        raise SparseTrainingError(f"{ctx.where}: Training in sparse format is not supported "
                                  f"(set conv_mode: LOWERED_GEMM, or --conv-mode=gemm, to train)")


def needs_graph(x, w, b) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad))


def forward_only(fn, x, w, b, where: str):
    """``fn(x, w, b)`` with no graph; when a gradient is wanted, one whose backward raises Caffe's error."""
    if not needs_graph(x, w, b):
        with torch.no_grad():
            return fn(x, w, b)
    return _ForwardOnly.apply(x, w, b, fn, where)


class LayerEngine:
    """A conv_mode kernel for one layer, called as ``engine(x, w, b) -> y`` on the layer's lowered input
    ((N, C, spatial...) for Convolution, (M, K) for InnerProduct). ``build(w) -> kernel`` makes the kernel
    from the weights; it is rebuilt lazily when the weights move (see ``fingerprint``). ``where`` names the
    layer in errors. The engine reads nothing of the layer: what it needs comes in ``build`` and the call."""

    def __init__(self, where: str, mode_name: str, build):
        self.where = where
        self.mode_name = mode_name        # what was asked for: LOWERED_CCNMM, auto...
        self._build = build
        self.kernel = None
        self._fp = None
        self.builds = 0

    def invalidate(self):
        self._fp = None

    def ensure_built(self, w: torch.Tensor):
        fp = fingerprint(w)
        if self.kernel is None or fp != self._fp:
            self.kernel = self._build(w)
            self._fp = fingerprint(w)       # building only reads: same stamp
            self.builds += 1
        return self.kernel

    def active_name(self, w: torch.Tensor) -> str:
        """The kernel actually used for weights ``w`` (for auto: the mode it picked)."""
        return self.ensure_built(w).name

    def __call__(self, x, w, b):
        k = self.ensure_built(w)
        if k.differentiable:
            return k(x, w, b)
        return forward_only(k, x, w, b, f"{self.where}, {k.name})")
