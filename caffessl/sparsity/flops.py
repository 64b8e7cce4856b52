"""FLOPs that remain after SSL removes whole rows (filters / output neurons) and columns (input channels,
kernel-shape positions / input neurons) of a layer's weight matrix.

A conv group's lowered GEMM is (R/g x C) . (C x H_out*W_out); after dropping its all-zero rows and columns
it is (r_kept x c_kept) . (c_kept x H_out*W_out). The count below is multiply-accumulates of the GEMMs
(bias and activation work is not counted), the quantity the SSL paper's "FLOP" percentages compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights_matrix import as_matrix, conv_groups, matrix_flops


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


def net_flops(net) -> list[LayerFlops]:
    """Per weight-matrix layer of ``net`` (after a reshape/forward, so top shapes are known)."""
    out = []
    for layer in net.layers:
        lp = layer.param
        if not layer.weight_matrix or not layer.params:
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
