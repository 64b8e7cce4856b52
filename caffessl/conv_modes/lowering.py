"""The lowered view of a 2-D convolution, shared by every conv_mode engine.

Caffe lowers a convolution to ``Out_g (M x N) = W_g (M x K) . Col_g (K x N)`` per group g, with
M = num_output/group, K = C/group*kh*kw (rows of ``Col`` ordered (channel, ky, kx)) and N = H_out*W_out.
This module holds that view once: the geometry, the per-group weight matrix, its zero rows/columns, and
``LoweredRows`` -- an im2col that builds only the lowered rows a sparse engine needs, as one strided
gather, never materializing the dropped ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvGeometry:
    channels: int
    num_output: int
    kernel: tuple
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    group: int = 1

    @classmethod
    def of_layer(cls, layer) -> "ConvGeometry":
        return cls(layer.channels, layer.num_output, tuple(layer.kernel), tuple(layer.stride),
                   tuple(layer.pad), tuple(layer.dilation), layer.group)

    @property
    def M(self) -> int:
        return self.num_output // self.group

    @property
    def K(self) -> int:
        return self.channels // self.group * self.kernel[0] * self.kernel[1]

    def out_hw(self, h, w):
        return tuple((s + 2 * p - (d * (k - 1) + 1)) // st + 1
                     for s, p, d, k, st in zip((h, w), self.pad, self.dilation, self.kernel, self.stride))


def weight_matrix(w: torch.Tensor, group: int) -> torch.Tensor:
    """(O, C/g, kh, kw) -> (g, M, K): one M x K matrix per group (a view)."""
    return w.reshape(group, w.shape[0] // group, -1)


@dataclass
class Structure:
    """Zero rows (filters) and columns (per group) of the lowered weight matrix."""
    row_kept: torch.Tensor     # (O,) bool: filter has a nonzero
    col_kept: torch.Tensor     # (g, K) bool: column has a nonzero within its group
    nnz: int
    numel: int

    @property
    def element_sparsity(self) -> float:
        return 1.0 - self.nnz / self.numel if self.numel else 0.0

    @property
    def zero_rows(self) -> int:
        return int((~self.row_kept).sum())

    @property
    def zero_cols(self) -> int:
        return int((~self.col_kept).sum())

    def remaining_fraction(self) -> float:
        """(kept rows x kept cols) / (rows x cols), summed over groups: the FLOP fraction CCNMM computes."""
        g, k = self.col_kept.shape
        rows = self.row_kept.reshape(g, -1).sum(1).to(torch.float64)
        cols = self.col_kept.sum(1).to(torch.float64)
        total = self.row_kept.numel() * k
        return float((rows * cols).sum() / total) if total else 0.0


def structure(w: torch.Tensor, group: int) -> Structure:
    """Caffe's masks: nonzero means exactly != 0 (base_conv_layer WeightAlign)."""
    nz = weight_matrix(w.detach(), group) != 0            # (g, M, K)
    return Structure(row_kept=nz.any(2).reshape(-1), col_kept=nz.any(1),
                     nnz=int(nz.sum()), numel=nz.numel())


def kept_column_coords(col_kept: torch.Tensor, geom: ConvGeometry):
    """Global (channel, ky, kx) of the kept lowered rows, group-major, plus each group's count."""
    g, K = col_kept.shape
    kh, kw = geom.kernel
    cg = geom.channels // geom.group
    flat = col_kept.reshape(-1).nonzero().squeeze(1)    # index in [0, g*K)
    grp, k = flat // K, flat % K
    c = grp * cg + k // (kh * kw)
    ky = (k // kw) % kh
    kx = k % kw
    return (c, ky, kx), col_kept.sum(1).tolist()


# Image chunks bound CCNMM's temporaries (padded images, lowered rows, packed outputs): a chunk's temporaries
# stay under this many bytes at least (ccnmm.chunk_budget may allow more; at least one image).
# bench/conv_modes.py on AlexNet at batch 32: 2 MiB chunks run conv3-5 up to 2x slower (many small GEMMs).
# (CSRMM has its own budget, csrmm.CHUNK_BYTES.)
CHUNK_BYTES = 4 << 20


def image_chunks(n: int, per_image_bytes: int, budget: int | None = None, most: int | None = None):
    """(start, count) chunks of a batch of ``n`` images, ``per_image_bytes`` of temporaries each, at most
    ``most`` images a chunk (at least one)."""
    budget = CHUNK_BYTES if budget is None else budget
    m = min(n, budget // max(per_image_bytes, 1))
    m = max(1, m if most is None else min(m, most))
    return [(i, min(m, n - i)) for i in range(0, n, m)]


def padded_images(x: torch.Tensor, geom: ConvGeometry, i: int, m: int, buf: "PadBuffer | None" = None,
                  slack: int = 0):
    """Images [i, i+m) of x, zero-padded by the conv's pad, contiguous (a view when there is neither pad nor
    slack). With ``buf`` the padded images are written into its reused zero-bordered buffer (valid until the
    next call on that buffer) instead of a fresh ``F.pad`` (which zero-fills the whole padded chunk every
    call); ``slack`` zero elements then follow the images in its storage (``LoweredRows``' wide rows read
    up to ``(kw-1)*dw`` elements past the last image)."""
    ph, pw = geom.pad
    xc = x[i:i + m]
    if not (ph or pw or slack):
        return xc.contiguous()
    if buf is not None:
        return buf(xc, ph, pw, slack)
    return F.pad(xc, (pw, pw, ph, ph))


class PadBuffer:
    """A padded-image buffer kept between calls: its border (and the ``slack`` elements after the images) is
    zeroed once when it is (re)allocated, and each call copies only the interior. One per kernel; chunks of
    one forward reuse it (the lowered rows are gathered out of it before the next chunk is copied in)."""

    def __init__(self):
        self.buf = None

    def __call__(self, xc: torch.Tensor, ph: int, pw: int, slack: int = 0) -> torch.Tensor:
        m, c, h, w = xc.shape
        shape = (c, h + 2 * ph, w + 2 * pw)
        per = shape[0] * shape[1] * shape[2]
        b = self.buf
        if b is None or b.shape[0] < m or tuple(b.shape[1:]) != shape or b.dtype != xc.dtype \
                or b.device != xc.device or b.untyped_storage().nbytes() < (m * per + slack) * b.element_size():
            flat = xc.new_zeros(m * per + slack)
            b = self.buf = flat[:m * per].view(m, *shape)
        out = b[:m]
        out[:, :, ph:ph + h, pw:pw + w].copy_(xc)
        return out


class LoweredRows:
    """Builds only the kept lowered rows (``col_kept``, group-major) of a few images, as ONE index_select.

    Lowered row (c, ky, kx) of image n at output (oy, ox) is padded-input element
    ``n*sn + c*sc + (ky*dh + oy*th)*sh + (kx*dw + ox*tw)*sw``: a flat offset per kept row plus a strided
    (image, oy, ox) pattern shared by all rows. So the rows are ``index_select(0, offsets)`` over the
    strided view ``(offset, image, oy, ox)`` of the padded images -> (K', m, oh, ow), contiguous; the dropped
    rows are never built. The offsets depend on the padded image size only and are cached per size.

    ``wide`` (stride 1, the common case): each row is built ``Wp`` (padded width) wide instead of ``ow`` --
    output column ox in [ow, Wp) reads the next padded row, a value the consumer crops away -- so one image's
    part of a row is ONE contiguous run of ``oh*Wp`` elements instead of ``oh`` runs of ``ow``: the gather
    is a row memcpy (5-12x faster on AlexNet's conv2-5), for ``Wp/ow`` (~1.15x) more GEMM columns. It reads
    up to ``slack`` elements past the last image: the padded images must be followed by that many zeros
    (``PadBuffer(..., slack)``).
    """

    def __init__(self, col_kept: torch.Tensor, geom: ConvGeometry):
        (self.c, self.ky, self.kx), self.counts = kept_column_coords(col_kept, geom)
        self.geom = geom
        self.count = int(self.c.numel())
        self.wide = tuple(geom.stride) == (1, 1)
        self.slack = (geom.kernel[1] - 1) * geom.dilation[1] if self.wide else 0
        self._cache = {}

    def offsets(self, xp: torch.Tensor):
        key = tuple(xp.shape[1:])
        hit = self._cache.get(key)
        if hit is None:
            _, sc, sh, sw = xp.stride()
            (dh, dw) = self.geom.dilation
            off = (self.c * sc + self.ky * (dh * sh) + self.kx * (dw * sw)).to(xp.device)
            hit = self._cache[key] = (off, int(off.max()) + 1 if off.numel() else 1)
        return hit

    def __call__(self, xp: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
        """xp: padded contiguous images (m, C, Hp, Wp) -> kept lowered rows (K', m, oh, ow), or
        (K', m, oh, Wp) when ``wide`` (columns [ow, Wp) to be cropped by the consumer)."""
        off, span = self.offsets(xp)
        sn, _, sh, sw = xp.stride()
        m = xp.shape[0]
        if self.wide:
            wp = xp.shape[3]
            view = xp.as_strided((span, m, oh * wp), (1, sn, 1))
            return view.index_select(0, off).view(-1, m, oh, wp)
        th, tw = self.geom.stride
        view = xp.as_strided((span, m, oh, ow), (1, sn, th * sh, tw * sw))
        return view.index_select(0, off)


def _padded(x: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    ph, pw = geom.pad
    x = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    return x.contiguous()


def patch_view(x: torch.Tensor, geom: ConvGeometry, oh: int, ow: int) -> torch.Tensor:
    """The im2col of x as a strided view (C, kh, kw, N, oh, ow) of the padded input -- no copy."""
    xp = _padded(x, geom)
    n, c, _, _ = xp.shape
    sn, sc, sh, sw = xp.stride()
    kh, kw = geom.kernel
    (dh, dw), (th, tw) = geom.dilation, geom.stride
    return xp.as_strided((c, kh, kw, n, oh, ow), (sc, dh * sh, dw * sw, sn, th * sh, tw * sw))


def full_columns(x: torch.Tensor, geom: ConvGeometry, oh: int, ow: int) -> torch.Tensor:
    """Dense im2col of the whole batch: (C*kh*kw, N*oh*ow), rows (channel, ky, kx) as in Caffe."""
    v = patch_view(x, geom, oh, ow)
    return v.reshape(v.shape[0] * v.shape[1] * v.shape[2], -1)


def scatter_rows(y: torch.Tensor, row_idx, num_output: int, n: int, oh: int, ow: int,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """(R, N*L) rows of the kept filters -> (N, O, oh, ow); dropped filters output the bias (or 0)."""
    r = y.shape[0]
    yv = y.reshape(r, n, oh * ow).transpose(0, 1)        # (N, R, L) view
    if row_idx is None:                                   # every filter kept, in order
        out = yv.contiguous()
    else:
        out = y.new_zeros((n, num_output, oh * ow))
        if r:
            out.index_copy_(1, row_idx, yv)
    if bias is not None:
        out += bias.reshape(1, -1, 1)
    return out.reshape(n, num_output, oh, ow)


def store(dst: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """dst = y, + bias (shaped to broadcast over dst's leading axis) when given: the crop copy of a GEMM
    result into the output and its bias add in one pass."""
    return dst.copy_(y) if bias is None else torch.add(y, bias, out=dst)
