"""Common layers: InnerProduct, Softmax, and the structural layers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Layer, register


@register("InnerProduct")
class InnerProduct(Layer):
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.inner_product_param
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.K = math.prod(shape[self.axis:])
        self.N = p.num_output
        if self.N <= 0:
            self.fail("inner_product_param.num_output must be positive")
        self.transpose = p.transpose
        wshape = (self.K, self.N) if self.transpose else (self.N, self.K)
        self.new_param(wshape, p.weight_filler)
        if p.bias_term:
            self.new_param((self.N,), p.bias_filler)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        k = math.prod(shape[self.axis:])
        if k != self.K:
            self.shape_error(f"input {tuple(shape)} has {k} features from axis {self.axis}; "
                             f"the weights expect {self.K}")
        return [tuple(shape[:self.axis]) + (self.N,)]

    def forward(self, bottoms):
        x = bottoms[0]
        lead = x.shape[:self.axis]
        x2 = x.reshape(-1, self.K)
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        y = x2 @ w if self.transpose else F.linear(x2, w)
        if b is not None:
            y = y + b
        return [y.reshape(*lead, self.N)]


@register("Softmax")
class Softmax(Layer):
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        self.axis = self.canonical_axis(self.param.softmax_param.axis, len(bottom_shapes[0]))

    def forward(self, bottoms):
        return [torch.softmax(bottoms[0], dim=self.axis)]
