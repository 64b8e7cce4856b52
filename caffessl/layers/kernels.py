"""CPU kernels for the memory-bound layers: MAX and AVE pooling, LRN across channels.

They give the same values as the torch ops / autograd formulas but work through the tensor in cache-sized
chunks with in-place ops, so each element crosses main memory about twice instead of once per op (AlexNet,
batch 32, on the 2-core benchmark machine: pool1 30 -> 3.8 ms, norm1 128 -> 22 ms against torch's ops;
bench/RESULTS.md "## Layers"). The forward kernels build no autograd graph, so the layers call them only when
no gradient is needed (``applies``); for training, LRN across channels has its own autograd Function with
Caffe's backward formula, and pooling keeps torch's op (its backward routes the gradient to the first maximum,
as Caffe's does).
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


class _Chunks:
    """Cache-sized chunks of a (N, C, H*W) tensor -- whole images, or column ranges of one image -- with
    scratch buffers of one chunk's shape reused by every chunk."""

    def __init__(self, x: torch.Tensor):
        self.n, self.c = x.shape[:2]
        self.hw = math.prod(x.shape[2:])
        image_bytes = max(1, self.c * self.hw * x.element_size())
        self.imgs = max(1, CHUNK_BYTES // image_bytes)
        self.cols = self.hw if self.imgs > 1 else max(1, self.hw * CHUNK_BYTES // image_bytes)
        self.like = x

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.n, self.c, self.hw)

    def buffers(self, count: int):
        shape = (min(self.imgs, self.n), self.c, min(self.cols, self.hw))
        return [self.like.new_empty(shape) for _ in range(count)]

    def __iter__(self):
        for i in range(0, self.n, self.imgs):
            for p in range(0, self.hw, self.cols):
                yield (slice(i, i + self.imgs), slice(None), slice(p, p + self.cols))


def _window_sum(src: torch.Tensor, out: torch.Tensor, size: int, coef: float) -> torch.Tensor:
    """out = coef * (sum of src over the size-channel window centred on each channel, zero outside)."""
    torch.mul(src, coef, out=out)
    for j in range(1, min((size - 1) // 2, src.shape[1] - 1) + 1):
        out[:, j:].add_(src[:, :-j], alpha=coef)
        out[:, :-j].add_(src[:, j:], alpha=coef)
    return out


def _fit(buf: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return buf[:like.shape[0], :, :like.shape[2]]


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        scale: torch.Tensor | None = None) -> torch.Tensor:
    """x * (k + alpha/size * sum over the size-channel window (zero outside) of x^2)^-beta, a chunk at a time.
    ``scale`` (x's shape), when given, receives k + alpha/size * window sum (what the backward needs)."""
    ch = _Chunks(x)
    flat = ch.flat(x)
    out = torch.empty(flat.shape, dtype=x.dtype, device=x.device)
    sq_buf, s_buf = ch.buffers(2)
    scale_flat = None if scale is None else ch.flat(scale)
    for sl in ch:
        xc = flat[sl]
        sq = torch.mul(xc, xc, out=_fit(sq_buf, xc))
        s = _window_sum(sq, _fit(s_buf, xc), size, alpha / size).add_(k)
        if scale_flat is not None:
            scale_flat[sl].copy_(s)
        torch.mul(xc, _pow_neg_(s, beta, sq), out=out[sl])
    return out.view(x.shape)


def lrn_across_channels_backward(x, y, scale, dy, size: int, alpha: float, beta: float) -> torch.Tensor:
    """Caffe's CrossChannelBackward: dx = dy * scale^-beta - (2 alpha beta / size) * x * window sum of
    (dy * y / scale), a chunk at a time."""
    ch = _Chunks(x)
    shape = x.shape
    x, y, scale, dy = (ch.flat(t) for t in (x, y, scale, dy))
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    r_buf, acc_buf, p_buf = ch.buffers(3)
    for sl in ch:
        xc, sc, gc = x[sl], scale[sl], dy[sl]
        r = torch.mul(gc, y[sl], out=_fit(r_buf, xc)).div_(sc)
        acc = _window_sum(r, _fit(acc_buf, xc), size, 2.0 * alpha * beta / size).mul_(xc)
        p = _pow_neg_(_fit(p_buf, xc).copy_(sc), beta, r)
        torch.mul(gc, p, out=dx[sl]).sub_(acc)
    return dx.view(shape)


class LRNAcrossChannels(torch.autograd.Function):
    """LRN ACROSS_CHANNELS for training: the chunked forward (keeping the scale, as Caffe does) and Caffe's
    backward formula: AlexNet norm1 forward+backward 248 -> 66 ms (autograd through the elementwise ops)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        scale = torch.empty_like(x, memory_format=torch.contiguous_format)
        y = lrn_across_channels(x, size, alpha, beta, k, scale)
        ctx.save_for_backward(x, y, scale)
        ctx.params = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, scale = ctx.saved_tensors
        return lrn_across_channels_backward(x, y, scale, dy, *ctx.params), None, None, None, None
