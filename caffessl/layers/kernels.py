"""Inference kernels for the memory-bound layers (MAX and AVE pooling, LRN across channels).

They give the same values as the layers' autograd formulas but work through the tensor in cache-sized
chunks with in-place ops, so each element crosses main memory about twice instead of once per op (AlexNet,
batch 32, on the 2-core benchmark machine: pool1 32 -> 4 ms, norm1 73-86 -> 25-35 ms; bench/RESULTS.md).
They build no autograd graph, so the layers call them only when no gradient is needed (``applies``):
training keeps torch's ops, whose backward routes MAX pooling's gradient to the first maximum as Caffe does.
"""
from __future__ import annotations

import math

import torch

CHUNK_BYTES = 4 << 20     # input bytes per chunk (1 MiB: up to 2x slower; 8-16 MiB: no faster)
MAX_SEPARABLE_KERNEL = 8  # wider windows (but global pooling): torch's op


def applies(x: torch.Tensor) -> bool:
    """CPU tensors that need no autograd graph (on a GPU the per-chunk launches would cost more)."""
    return x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)


def pool2d_supported(kernel, pad, hw) -> bool:
    """Windows up to MAX_SEPARABLE_KERNEL wide, or one window over the whole unpadded plane."""
    return max(kernel) <= MAX_SEPARABLE_KERNEL or (list(kernel) == list(hw) and not any(pad))


def _window_reduce(op, t: torch.Tensor, dim: int, k: int, s: int, n_out: int, out: torch.Tensor):
    """op (max or sum) over j < k of t[..., j + s*i, ...] (i < n_out) along ``dim`` (1 or 2 of a 3-axis
    tensor), into ``out``."""
    span = s * (n_out - 1) + 1

    def shifted(j):
        return t[:, j:j + span:s] if dim == 1 else t[:, :, j:j + span:s]

    if k == 1:
        return out.copy_(shifted(0))
    r = op(shifted(0), shifted(1), out=out)
    for j in range(2, k):
        op(r, shifted(j), out=r)
    return r


def pool2d(x: torch.Tensor, kernel, stride, pad, out_hw, method: str, fill: float = 0.0) -> torch.Tensor:
    """Caffe's MAX pooling value (windows clipped to the image; ``fill`` where a window holds no image cell)
    or AVE pooling's window sums (zero padding; the caller divides by Caffe's window sizes), reduced over
    the window's columns, then over its rows, a chunk of planes at a time."""
    op = {"MAX": torch.maximum, "SUM": torch.add}[method]
    if method == "SUM":
        fill = 0.0
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_hw
    eh = max(0, (oh - 1) * sh + kh - h - ph)
    ew = max(0, (ow - 1) * sw + kw - w - pw)
    padded = bool(ph or pw or eh or ew)
    if (kh, kw) == (h, w) and not padded:     # global pooling: one reduction
        return x.amax((2, 3), keepdim=True) if method == "MAX" else x.sum((2, 3), keepdim=True)
    if not pool2d_supported(kernel, pad, (h, w)):
        raise ValueError(f"pool2d: kernel {kernel} is wider than {MAX_SEPARABLE_KERNEL}")
    planes = x.reshape(n * c, h, w)
    out = x.new_empty((n, c, oh, ow))
    out_planes = out.view(n * c, oh, ow)
    step = max(1, min(n * c, CHUNK_BYTES // max(1, h * w * x.element_size())))
    hp, wp = ph + h + eh, pw + w + ew
    # scratch reused by every chunk: the padded planes (border = fill, written once), the column reductions
    pad_buf = x.new_full((step, hp, wp), fill) if padded else None
    cols_buf = x.new_empty((step, hp, ow))
    for i in range(0, n * c, step):
        xc = planes[i:i + step]
        m = xc.shape[0]
        if padded:
            pad_buf[:m, ph:ph + h, pw:pw + w].copy_(xc)
            xc = pad_buf[:m]
        cols = _window_reduce(op, xc, 2, kw, sw, ow, cols_buf[:m])
        _window_reduce(op, cols, 1, kh, sh, oh, out_planes[i:i + step])
    return out


def _pow_neg_(s: torch.Tensor, beta: float, scratch: torch.Tensor) -> torch.Tensor:
    """s **= -beta in place. beta = 0.75 (AlexNet, CaffeNet, GoogLeNet) as rsqrt(s) * rsqrt(sqrt(s)): ~2.5x
    faster than pow's exp/log on CPU, within 3e-7 relative."""
    if beta == 0.75:
        r = torch.rsqrt(s, out=scratch)
        return s.sqrt_().rsqrt_().mul_(r)
    return s.pow_(-beta)


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """x * (k + alpha/size * sum over the size-channel window (zero outside) of x^2)^-beta, a chunk of
    spatial positions of one or more images at a time, through two scratch buffers reused by every chunk."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, math.prod(x.shape[2:]))
    hw = flat.shape[2]
    out = torch.empty((n, c, hw), dtype=x.dtype, device=x.device)
    half = min((size - 1) // 2, c - 1)
    a = alpha / size
    image_bytes = max(1, c * hw * x.element_size())
    imgs = max(1, CHUNK_BYTES // image_bytes)
    cols = hw if imgs > 1 else max(1, hw * CHUNK_BYTES // image_bytes)
    sq_buf = x.new_empty((min(imgs, n), c, min(cols, hw)))
    s_buf = torch.empty_like(sq_buf)
    for i in range(0, n, imgs):
        for p in range(0, hw, cols):
            xc = flat[i:i + imgs, :, p:p + cols]
            m, _, w = xc.shape
            sq = torch.mul(xc, xc, out=sq_buf[:m, :, :w])
            s = torch.mul(sq, a, out=s_buf[:m, :, :w])
            for j in range(1, half + 1):
                s[:, j:].add_(sq[:, :-j], alpha=a)
                s[:, :-j].add_(sq[:, j:], alpha=a)
            _pow_neg_(s.add_(k), beta, sq)
            torch.mul(xc, s, out=out[i:i + imgs, :, p:p + cols])
    return out.view(x.shape)
