"""LOWERED_CCNMM: drop all-zero filters (rows) and all-zero lowered columns, GEMM what remains.

Built once from the weights (Caffe's WeightAlign): per group, the kept rows and columns and the packed
``left_rows x left_cols`` weight block. Forward gathers only the kept lowered rows of the input (one
strided gather over the whole batch, group after group), runs one smaller GEMM per group, and scatters
the packed output rows back to their filters; all-zero filters give bias-only outputs (Caffe writes 0
there and adds the bias afterwards).
"""
from __future__ import annotations

import logging

import torch

from .lowering import ConvGeometry, gather_columns, kept_column_coords, scatter_rows, structure, weight_matrix

log = logging.getLogger("caffessl")


class CCNMMConv:
    name = "LOWERED_CCNMM"
    differentiable = False

    def __init__(self, geom: ConvGeometry, w: torch.Tensor, layer_name: str = "?"):
        self.geom = geom
        st = self.structure = structure(w, geom.group)
        wm = weight_matrix(w.detach(), geom.group)                          # (g, M, K)
        rows_g = st.row_kept.reshape(geom.group, -1)                        # (g, M)
        self.coords, self.left_cols = kept_column_coords(st.col_kept, geom)
        self.blocks = []                                                    # per group: (row0, packed W)
        r0 = c0 = 0
        for gi in range(geom.group):                                        # a handful of groups
            ri = rows_g[gi].nonzero().squeeze(1)
            ci = st.col_kept[gi].nonzero().squeeze(1)
            self.blocks.append((r0, r0 + ri.numel(), c0, c0 + ci.numel(),
                                wm[gi].index_select(0, ri).index_select(1, ci).contiguous()))
            r0 += ri.numel()
            c0 += ci.numel()
        self.rows = r0
        kept = st.row_kept.nonzero().squeeze(1)
        self.row_idx = None if kept.numel() == geom.num_output else kept
        log.debug("%s left_cols=%s left_rows=%s", layer_name, self.left_cols,
                  rows_g.sum(1).tolist())

    def __call__(self, x, w, b):
        g = self.geom
        n = x.shape[0]
        oh, ow = g.out_hw(*x.shape[2:])
        y = x.new_empty((self.rows, n * oh * ow))
        if self.rows:
            cols = gather_columns(x, g, self.coords, oh, ow)               # (sum left_cols, N*L)
            for r0, r1, c0, c1, wk in self.blocks:
                if r1 > r0:
                    torch.mm(wk, cols[c0:c1], out=y[r0:r1])
        return scatter_rows(y, self.row_idx, g.num_output, n, oh, ow, b)
