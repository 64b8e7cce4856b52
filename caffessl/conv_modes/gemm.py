"""LOWERED_GEMM: Caffe's im2col + one dense GEMM per group, and the fast dense default (F.conv2d)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .lowering import ConvGeometry, full_columns, scatter_rows, weight_matrix


class DenseConv:
    """The default dense path: torch's convolution (oneDNN / cuDNN). Differentiable."""
    name = "LOWERED_GEMM"
    differentiable = True

    def __init__(self, geom: ConvGeometry, w: torch.Tensor):
        self.geom = geom

    def __call__(self, x, w, b):
        g = self.geom
        return F.conv2d(x, w, b, g.stride, g.pad, g.dilation, g.group)


class LoweredGemmConv(DenseConv):
    """The lowering written out: im2col of the batch (K*g x N*L), then W_g (M x K) . Col_g per group."""

    def __call__(self, x, w, b):
        g = self.geom
        n = x.shape[0]
        oh, ow = g.out_hw(*x.shape[2:])
        cols = full_columns(x, g, oh, ow).reshape(g.group, g.K, -1)      # (g, K, N*L)
        y = torch.bmm(weight_matrix(w, g.group), cols)                     # (g, M, N*L)
        return scatter_rows(y.reshape(g.num_output, -1), None, g.num_output, n, oh, ow, b)
