"""FLOPs that remain after SSL removes whole rows (filters / output neurons) and columns (input channels,
kernel-shape positions / input neurons) of a layer's weight matrix.

A conv group's lowered GEMM is (R/g x C) . (C x H_out*W_out); after dropping its all-zero rows and columns
it is (r_kept x c_kept) . (c_kept x H_out*W_out). The count below is multiply-accumulates of the GEMMs
(bias and activation work is not counted), the quantity the SSL paper's "FLOP" percentages compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .matrix import as_matrix, conv_groups, nonzero_rows_cols

COUNTED_TYPES = ("Convolution", "InnerProduct", "Deconvolution")


@dataclass
class LayerFlops:
    name: str
    type: str
    rows: int            # filters / output neurons
    rows_kept: int
    cols: int            # columns of one conv group's matrix
    cols_kept: float     # averaged over conv groups
    positions: int       # output spatial positions (1 for InnerProduct)
    dense: int
    remaining: int

    @property
    def fraction(self) -> float:
        return self.remaining / self.dense if self.dense else 0.0


def matrix_flops(weight, groups: int = 1, positions: int = 1):
    """(dense, remaining, rows_kept, mean cols_kept) multiply-accumulates of a weight's GEMM(s)."""
    m = as_matrix(weight.detach())
    r, c = m.shape
    rows, cols = nonzero_rows_cols(m, groups)          # (g, R/g), (g, C)
    rk = rows.sum(dim=1).cpu().numpy().astype(np.int64)
    ck = cols.sum(dim=1).cpu().numpy().astype(np.int64)
    dense = int(r * c * positions)
    remaining = int((rk * ck).sum() * positions)
    return dense, remaining, int(rk.sum()), float(ck.mean())


def net_flops(net) -> list[LayerFlops]:
    """Per Convolution / InnerProduct layer of ``net`` (after a reshape/forward, so top shapes are known)."""
    out = []
    for layer in net.layers:
        lp = layer.param
        if lp.type not in COUNTED_TYPES or not layer.params:
            continue
        top = net.blobs[lp.top[0]].shape
        if lp.type == "InnerProduct":
            positions, g = 1, 1
        else:
            positions = int(np.prod(top[2:])) if lp.type == "Convolution" else int(np.prod(net.blobs[lp.bottom[0]].shape[2:]))
            g = conv_groups(lp)
        w = layer.params[0]
        dense, rem, rk, ck = matrix_flops(w, g, positions)
        r, c = as_matrix(w.detach()).shape
        out.append(LayerFlops(layer.name, lp.type, r, rk, c, ck, positions, dense, rem))
    return out
