"""Dense GEMMs on the fastest float32 route available: ``mm(a, b) = a @ b`` for the sparse engines and
``linear(x, w, b) = x @ w.T + b`` for InnerProduct's forward when no gradient is needed.

On the CPU torch's ``mm`` is MKL's sgemm; oneDNN's matmul (reached through ``mkldnn::_linear_pointwise``,
torch's own fused-linear op) runs the same product 2-2.4x faster on the machines bench/conv_modes.py was run
on (MKL picks its AVX2 kernels there, oneDNN its AVX-512 ones: 150 vs 300-380 GFLOP/s on the lowered shapes).
``_linear_pointwise(a, b.t())`` computes ``a @ b`` straight into a row-major (R x N) result -- the lowered
output layout -- reading ``b`` (K x N, row-major) in place through the transposed view; for InnerProduct it
is the op itself (fc6 of AlexNet: 9.2 -> 5.1 ms at batch 1, 25 -> 10 ms at batch 32). Where the op is
missing (a torch built without oneDNN) or the tensors are not CPU float32, ``torch.mm`` / ``F.linear`` are
used; for training, ``linear`` wraps the op in an autograd Function whose backward multiplies through ``mm``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ONEDNN = None


def onednn_available() -> bool:
    global _ONEDNN
    if _ONEDNN is None:
        try:
            _ONEDNN = bool(torch.backends.mkldnn.is_available()) and \
                hasattr(torch.ops.mkldnn, "_linear_pointwise")
        except (AttributeError, RuntimeError):
            _ONEDNN = False
    return _ONEDNN


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(R x K) @ (K x N) -> a new contiguous (R x N) tensor (no autograd: the sparse engines are forward-only)."""
    if _onednn_ok(a, b) and a.shape[0] and a.shape[1] and b.shape[1]:
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return torch.mm(a, b)


def _onednn_ok(*ts) -> bool:
    """CPU float32 operands, the op present, and oneDNN not switched off (torch.backends.mkldnn.flags)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts) and onednn_available() \
        and torch.backends.mkldnn.enabled


class _Linear(torch.autograd.Function):
    """x @ w.T + b through oneDNN, with its backward through ``mm`` too: dx = dy @ w, dw = dy.T @ x, db = the
    column sums of dy (F.linear's backward runs MKL's sgemm: 1.3-2.2x slower on AlexNet's and LeNet's fc
    layers here, bench/RESULTS.md "## Layers")."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = mm(dy, w) if need_x else None
        dw = mm(dy.t().contiguous(), x) if need_w else None
        db = dy.sum(0) if ctx.has_bias and need_b else None
        return dx, dw, db


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) for 2-D x, through oneDNN's matmul where it applies (CPU float32, oneDNN on): the op
    itself when no autograd graph is needed (inference, test nets), else ``_Linear`` (training)."""
    ts = (x, w) if b is None else (x, w, b)
    if not (_onednn_ok(*ts) and x.dim() == 2 and x.numel() and w.numel()):
        return F.linear(x, w, b)
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return _Linear.apply(x.contiguous(), w.contiguous(), b)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.contiguous(), b, "none", [], "")
