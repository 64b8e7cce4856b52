"""Dense GEMMs on the fastest float32 route available: ``mm(a, b) = a @ b`` for the sparse engines and
``linear(x, w, b) = x @ w.T + b`` for InnerProduct's forward when no gradient is needed.

On the CPU torch's ``mm`` is MKL's sgemm; oneDNN's matmul (reached through ``mkldnn::_linear_pointwise``,
torch's own fused-linear op) runs the same product 2-2.4x faster on the machines bench/conv_modes.py was run
on (MKL picks its AVX2 kernels there, oneDNN its AVX-512 ones: 150 vs 300-380 GFLOP/s on the lowered shapes).
``_linear_pointwise(a, b.t())`` computes ``a @ b`` straight into a row-major (R x N) result -- the lowered
output layout -- reading ``b`` (K x N, row-major) in place through the transposed view; for InnerProduct it
is the op itself (fc6 of AlexNet: 9.2 -> 5.1 ms at batch 1, 25 -> 10 ms at batch 32). Where the op is
missing (a torch built without oneDNN), the tensors are not CPU float32, or autograd needs a graph (the op
has no derivative), ``torch.mm`` / ``F.linear`` are used.
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


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) for 2-D x; oneDNN's matmul when no autograd graph is needed (inference, test nets)."""
    ts = (x, w) if b is None else (x, w, b)
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):     # training: checked first, cheapest
        return F.linear(x, w, b)
    if _onednn_ok(*ts) and x.dim() == 2 and x.numel() and w.numel():
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.contiguous(), b, "none", [], "")
    return F.linear(x, w, b)
