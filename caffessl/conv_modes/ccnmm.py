"""LOWERED_CCNMM: drop all-zero filters (rows) and all-zero lowered columns, compute only what remains.

Built once from the weights (Caffe's WeightAlign): per group, the kept rows (filters with a nonzero) and kept
columns ((channel, ky, kx) lowered rows with a nonzero). Two ways to run exactly that math, picked per layer
at build time by a fixed rule on the structure (no timing, deterministic):

* ``gather`` -- the kept lowered rows of a chunk of images are built by one ``index_select`` over a strided
  view of the padded input (``lowering.LoweredRows``, padded-width rows at stride 1; dropped columns are
  never built), then each group's packed (kept rows x kept columns) weights multiply them in one GEMM
  (``matmul.mm``: oneDNN's matmul, ~2x torch.mm's MKL sgemm on the benchmark machine);
* ``conv``   -- when the dropped columns are (mostly) whole input channels, a smaller dense convolution
  (kept filters x kept input channels, the few zero columns inside kept channels kept) -- oneDNN's direct
  conv, whose efficiency the gather path cannot match. Chosen when its FLOPs are at most ``CONV_SLACK``
  times the gather path's.

Packed outputs are scattered to their filters with ``index_copy_``; all-zero filters output their bias
(Caffe writes 0 there and adds the bias afterwards). Images are processed in chunks whose temporaries stay
within a budget (``CCNMMConv._chunks``) that keeps peak memory at or below the dense conv's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import lowering
from .lowering import (
    ConvGeometry,
    LoweredRows,
    PadBuffer,
    image_chunks,
    padded_images,
    store,
    structure,
    weight_matrix,
)
from .matmul import mm

log = logging.getLogger("caffessl")

# conv path when its FLOPs (kept rows x kept channels x kh*kw) <= CONV_SLACK x the gather path's FLOPs
# (kept rows x kept columns): oneDNN's direct conv runs ~1.5x the 1x1-GEMM rate of the gather path and
# needs no gather (bench/conv_modes.py, 'variant' column).
CONV_SLACK = 1.5
# the most bytes of kept lowered rows one chunk builds (``CCNMMConv._chunks``)
LOWERED_BYTES = 4 << 20


def chunk_budget(input_bytes: int, output_bytes: int) -> int:
    """Bytes of temporaries one chunk may hold: the larger of ``lowering.CHUNK_BYTES`` and half the call's
    input + output bytes. The dense conv holds a copy of both (oneDNN's blocked layouts; its measured peak
    is ~2x output + input on AlexNet), so CCNMM's peak stays at or below the dense conv's."""
    return max(lowering.CHUNK_BYTES, (input_bytes + output_bytes) // 2)


@dataclass
class _Part:
    """One call: output rows ``rows`` (global filter indices). Conv path: ``weight`` (R, Ck, kh, kw) with
    ``groups`` groups reading input channels ``chans`` (None = all). Gather path: one group's packed
    ``weight`` (R, K') times its slice ``cols`` of the kept lowered rows."""
    rows: torch.Tensor
    weight: torch.Tensor
    groups: int = 1
    chans: torch.Tensor | None = None
    cols: tuple = (0, 0)
    span: tuple | None = None     # (r0, r1) when ``rows`` is the range r0..r1-1: a slice write, bias fused

    def __post_init__(self):
        r0, n = (int(self.rows[0]), self.rows.numel()) if self.rows.numel() else (0, 0)
        if n and int(self.rows[-1]) - r0 + 1 == n:
            self.span = (r0, r0 + n)


class CCNMMConv:
    name = "LOWERED_CCNMM"
    differentiable = False

    def __init__(self, geom: ConvGeometry, w: torch.Tensor, layer_name: str = "?", variant: str | None = None):
        self.geom = geom
        g = geom.group
        st = self.structure = structure(w, g)
        wd = w.detach()
        wm = weight_matrix(wd, g)                                            # (g, M, K)
        cg, khkw = geom.channels // g, geom.kernel[0] * geom.kernel[1]
        rows_g = st.row_kept.reshape(g, -1)                                  # (g, M)
        chan_g = st.col_kept.reshape(g, cg, khkw).any(2)                     # (g, C/g): channel has a kept column
        r, k, ck = rows_g.sum(1), st.col_kept.sum(1), chan_g.sum(1)
        self.left_cols = k.tolist()
        self.rows = int(r.sum())
        gather_work, conv_work = int((r * k).sum()), int((r * ck).sum()) * khkw
        self.variant = variant or ("conv" if conv_work <= CONV_SLACK * gather_work else "gather")
        kept = st.row_kept.nonzero().squeeze(1)
        self.row_idx = None if kept.numel() == geom.num_output else kept
        self.dropped = None if self.row_idx is None else (~st.row_kept).nonzero().squeeze(1)
        ri = [rows_g[gi].nonzero().squeeze(1) for gi in range(g)]             # a handful of groups
        self.parts = []
        if self.variant == "conv":
            ci = [chan_g[gi].nonzero().squeeze(1) for gi in range(g)]
            blocks = [wd[gi * geom.M + ri[gi]][:, ci[gi]] for gi in range(g)]  # (R_g, Ck_g, kh, kw)
            chans = [ci[gi] + gi * cg for gi in range(g)]
            uniform = len(set(r.tolist())) == 1 and len(set(ck.tolist())) == 1
        else:
            self.lowered = LoweredRows(st.col_kept, geom)
            self.pad_buf = PadBuffer()
            cols = [st.col_kept[gi].nonzero().squeeze(1) for gi in range(g)]
            starts = [0] + torch.cumsum(k, 0).tolist()
            for gi in range(g):                                              # one GEMM per group
                if int(r[gi]):
                    self.parts.append(_Part(ri[gi] + gi * geom.M, wm[gi][ri[gi]][:, cols[gi]].contiguous(),
                                            cols=(starts[gi], starts[gi + 1])))
        if self.variant == "gather" or self.rows == 0:
            pass                                                             # built above / bias-only output
        elif uniform:                                                        # one grouped call
            all_chans = torch.cat(chans)
            if all_chans.numel() == geom.channels:
                all_chans = None
            self.parts.append(_Part(kept, torch.cat(blocks).contiguous(), g, all_chans))
        else:
            for gi in range(g):
                if int(r[gi]):
                    self.parts.append(_Part(ri[gi] + gi * geom.M, blocks[gi].contiguous(), 1, chans[gi]))
        self.identity = self.row_idx is None and len(self.parts) == 1      # output rows = the part's rows
        log.debug("%s CCNMM %s: left_cols=%s left_rows=%s", layer_name, self.variant, self.left_cols, r.tolist())

    # -- forward ---------------------------------------------------------------------------------------
    def _chunks(self, x, oh, ow):
        """Image chunks. Conv path: gathered input channels and packed outputs under half of
        ``lowering.CHUNK_BYTES`` (oneDNN holds blocked copies of both; as fast as larger chunks).
        Gather path: padded images, kept lowered rows and packed outputs under ``chunk_budget``, the kept
        lowered rows alone under ``LOWERED_BYTES``. AlexNet with SSL's sparsity at batch 32: conv3-5 get 6-9
        images a chunk (3-4 under the former fixed 4 MiB budget) and run 0.83-0.91x that time (A/B in one
        process); conv2 (27x27 maps, 3 MB of kept lowered rows per image) stays at one image a chunk: two
        measured 1.4-1.5x slower."""
        g, (n, c, h, w) = self.geom, x.shape
        el = x.element_size()
        out_rows = 0 if self.identity else self.rows * oh * ow
        if self.variant == "conv":
            inp = sum(p.chans.numel() for p in self.parts if p.chans is not None) * h * w
            return image_chunks(n, (inp + out_rows) * el, lowering.CHUNK_BYTES // 2)
        budget = chunk_budget(c * h * w * n * el, g.num_output * oh * ow * n * el)
        ph, pw = g.pad
        wide = (w + 2 * pw) if self.lowered.wide else ow          # a lowered row's width per output row
        lowered = sum(self.left_cols) * oh * wide * el
        padded = g.channels * (h + 2 * ph) * (w + 2 * pw) * el
        return image_chunks(n, lowered + self.rows * oh * wide * el + padded, budget,
                            most=LOWERED_BYTES // max(lowered, 1))

    def _out(self, x, b, shape):
        """The output buffer; the parts write the kept filters' rows, the dropped filters' rows are filled here
        (with their bias, or 0). With at least 1/8 of the filters dropped the whole buffer is filled (one
        broadcast copy, the kept rows written again later): on AlexNet's shapes 1.5-5x faster than an
        index_copy_ of the dropped rows alone, which wins only when few are dropped."""
        out = x.new_empty(shape)
        if self.dropped is not None:
            n, o, oh, ow = shape
            if 8 * self.dropped.numel() >= o:
                return out.zero_() if b is None else out.copy_(b.view(1, -1, 1, 1).expand(shape))
            fill = x.new_zeros(()) if b is None else b.index_select(0, self.dropped).view(-1, 1, 1, 1)
            out.transpose(0, 1).index_copy_(0, self.dropped, fill.expand(self.dropped.numel(), n, oh, ow))
        return out

    def __call__(self, x, w, b):
        g = self.geom
        x = x.contiguous()
        n = x.shape[0]
        oh, ow = g.out_hw(*x.shape[2:])
        shape = (n, g.num_output, oh, ow)
        if not self.parts:
            return self._out(x, b, shape)
        biases = [None if b is None else b.index_select(0, p.rows) for p in self.parts]
        chunks = self._chunks(x, oh, ow)
        if self.variant == "conv":
            return self._conv(x, biases, chunks, shape, b)
        return self._gather(x, biases, chunks, shape, b)

    def _conv(self, x, biases, chunks, shape, b):
        g = self.geom
        if self.identity and len(chunks) == 1:
            p = self.parts[0]
            xin = x if p.chans is None else x.index_select(1, p.chans)
            return F.conv2d(xin, p.weight, biases[0], g.stride, g.pad, g.dilation, p.groups)
        out = self._out(x, b, shape)
        conv_args = (list(g.stride), list(g.pad), list(g.dilation), False, [0, 0])
        for i, m in chunks:
            xc = x[i:i + m]
            for p, bp in zip(self.parts, biases):
                xin = xc if p.chans is None else xc.index_select(1, p.chans)
                if self.identity:            # the part computes every output row: straight into the output
                    torch.ops.aten.convolution.out(xin, p.weight, bp, *conv_args, p.groups, out=out[i:i + m])
                else:
                    y = F.conv2d(xin, p.weight, bp, g.stride, g.pad, g.dilation, p.groups)
                    out[i:i + m].index_copy_(1, p.rows, y)
                    del y                    # before the next call allocates its own
                del xin
        return out

    def _gather(self, x, biases, chunks, shape, b):
        g = self.geom
        _, _, oh, ow = shape
        out = self._out(x, b, shape)
        lowered = self.lowered
        for i, m in chunks:
            xp = padded_images(x, g, i, m, self.pad_buf, lowered.slack)
            cols = lowered(xp, oh, ow)                                       # (K', m, oh, ow or Wp)
            wl = cols.shape[3]
            cols = cols.view(cols.shape[0], m * oh * wl)
            dst = out[i:i + m].transpose(0, 1)                               # (O, m, oh, ow) view
            for p, bp in zip(self.parts, biases):
                c0, c1 = p.cols
                y = mm(p.weight, cols[c0:c1])                                # (R_p, m*oh*wl)
                if p.span is not None:                                       # crop, add the bias, store: one pass
                    store(dst[p.span[0]:p.span[1]], y.view(-1, m, oh, wl)[..., :ow],
                          None if bp is None else bp.view(-1, 1, 1, 1))
                    continue
                if bp is not None:
                    y += bp[:, None]
                dst.index_copy_(0, p.rows, y.view(-1, m, oh, wl)[..., :ow])
            del cols, y          # freed before the next chunk allocates its own: one chunk's temporaries live
        return out
