"""Normalization layers: BatchNorm (Caffe's three statistic blobs), Scale, Bias, MVN. (LRN is in vision.)"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..proto import caffe_pb2
from .base import Layer, register


@register("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: no affine part (use Scale). Blobs: mean-sum, var-sum, scale factor; the
    statistics are b0/b2 and b1/b2 (0 when b2 = 0). ``use_global_stats`` defaults to phase == TEST. Without
    global stats the batch mean and biased variance normalise, and forward updates the blobs:
    b2 = maf*b2 + 1, b0 = maf*b0 + mean, b1 = maf*b1 + m/(m-1)*var (m = elements per channel)."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.batch_norm_param
        shape = tuple(bottom_shapes[0])
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == caffe_pb2.TEST)
        self.maf = p.moving_average_fraction
        self.eps = p.eps
        if len(shape) < 1:
            self.shape_error(f"input must have at least one axis, got {shape}")
        self.channels = 1 if len(shape) == 1 else shape[1]
        for sz in ((self.channels,), (self.channels,), (1,)):
            self.new_param(sz)   # Caffe zero-fills the statistics
        # Caffe masks the statistics from optimisation: add lr_mult 0 specs, reject any other lr_mult
        for i in range(3):
            if len(self.param.param) == i:
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[i].lr_mult != 0:
                self.fail(f"cannot configure batch normalization statistics as layer parameters "
                          f"(param {i} has lr_mult {self.param.param[i].lr_mult}; it must be 0)")

    def reshape(self, bottom_shapes):
        s = tuple(bottom_shapes[0])
        c = 1 if len(s) == 1 else s[1]
        if c != self.channels:
            self.shape_error(f"input {s} has {c} channels, the statistics have {self.channels}")
        return [s]

    def forward(self, bottoms):
        x = bottoms[0]
        shape = x.shape
        x3 = x.reshape(shape[0], self.channels, -1)
        b0, b1, b2 = (p.detach() for p in self.params)
        if self.use_global_stats:
            f = torch.where(b2 == 0, torch.zeros_like(b2), 1.0 / b2)
            y = F.batch_norm(x3, (b0 * f).to(x.dtype), (b1 * f).to(x.dtype), None, None, False, 0.0, self.eps)
            return [y.reshape(shape)]
        m = x3.shape[0] * x3.shape[2]
        mean = torch.zeros(self.channels, dtype=x.dtype, device=x.device)
        var_unbiased = torch.ones(self.channels, dtype=x.dtype, device=x.device)
        if m > 1:
            # momentum 1 makes torch's running buffers the batch mean and the unbiased (m/(m-1)) variance
            y = F.batch_norm(x3, mean, var_unbiased, None, None, True, 1.0, self.eps)
        else:   # one value per channel: zero variance, Caffe's bias correction factor is 1
            mean = x3.detach().reshape(self.channels)
            var_unbiased = torch.zeros_like(mean)
            y = (x3 - x3.detach()) / math.sqrt(self.eps)
        with torch.no_grad():
            p0, p1, p2 = self.params
            p2.mul_(self.maf).add_(1.0)
            p0.mul_(self.maf).add_(mean.to(p0.dtype))
            p1.mul_(self.maf).add_(var_unbiased.to(p1.dtype))
        return [y.reshape(shape)]


class _Broadcast(Layer):
    """Shared set-up of Scale and Bias: the operand is bottom 1 or a learnable blob of shape
    bottom[0].shape[axis : axis+num_axes] (num_axes -1: to the end), broadcast over the other axes."""
    num_bottoms = (1, 2)
    num_tops = 1
    what = "operand"

    def _operand_shape(self, shape, axis, num_axes):
        if num_axes < -1:
            self.fail(f"num_axes must be non-negative, or -1 to extend to the end of bottom[0]; got {num_axes}")
        a = 0 if num_axes == 0 else self.canonical_axis(axis, len(shape))
        if num_axes >= 0 and a + num_axes > len(shape):
            self.shape_error(f"{self.what} blob's shape extends past bottom[0]'s shape {tuple(shape)} when "
                             f"applied starting with bottom[0] axis = {a}")
        end = len(shape) if num_axes == -1 else a + num_axes
        return tuple(shape[a:end])

    def _view_shape(self, xshape, oshape, axis):
        """Check ``oshape`` against bottom[0] at ``axis`` and return the broadcastable view shape."""
        a = 0 if len(oshape) == 0 else self.canonical_axis(axis, len(xshape))
        if a + len(oshape) > len(xshape) or tuple(xshape[a:a + len(oshape)]) != tuple(oshape):
            self.shape_error(f"{self.what} shape {tuple(oshape)} does not match bottom[0] {tuple(xshape)} "
                             f"starting at axis {a}")
        return (1,) * a + tuple(oshape) + (1,) * (len(xshape) - a - len(oshape))


@register("Bias")
class Bias(_Broadcast):
    what = "bias"

    def setup(self, bottom_shapes):
        p = self.param.bias_param
        if len(bottom_shapes) == 1:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0)
            self.new_param(self._operand_shape(bottom_shapes[0], p.axis, p.num_axes), filler)

    def reshape(self, bottom_shapes):
        oshape = bottom_shapes[1] if len(bottom_shapes) > 1 else tuple(self.params[0].shape)
        self.view = self._view_shape(bottom_shapes[0], oshape, self.param.bias_param.axis)
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        b = bottoms[1] if len(bottoms) > 1 else self.params[0]
        return [bottoms[0] + b.reshape(self.view)]


@register("Scale")
class Scale(_Broadcast):
    """top = x * scale (+ bias). The scale is bottom 1 or blob 0 (filler default constant 1); with
    bias_term the bias is the next blob, shaped like the scale (filler: bias_filler, default 0)."""
    what = "scale"

    def setup(self, bottom_shapes):
        p = self.param.scale_param
        if len(bottom_shapes) == 1:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1)
            self.new_param(self._operand_shape(bottom_shapes[0], p.axis, p.num_axes), filler)
            oshape = tuple(self.params[0].shape)
        else:
            oshape = tuple(bottom_shapes[1])
            self._view_shape(bottom_shapes[0], oshape, p.axis)
        self.bias_index = None
        if p.bias_term:
            self.bias_index = len(self.params)
            self.new_param(oshape, p.bias_filler)   # Caffe copies bias_filler (default: constant 0)

    def reshape(self, bottom_shapes):
        oshape = bottom_shapes[1] if len(bottom_shapes) > 1 else tuple(self.params[0].shape)
        self.view = self._view_shape(bottom_shapes[0], oshape, self.param.scale_param.axis)
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        s = bottoms[1] if len(bottoms) > 1 else self.params[0]
        y = bottoms[0] * s.reshape(self.view)
        if self.bias_index is not None:
            y = y + self.params[self.bias_index].reshape(self.view)
        return [y]


class _MVNFunction(torch.autograd.Function):
    """MVN with normalize_variance, with Caffe's backward: (dy - mean(dy) - mean(dy*y)*y) / (std + eps).
    (It treats y as if eps were 0 in the std derivative, which differs from the exact gradient by O(eps/std).)"""

    @staticmethod
    def forward(ctx, x2, eps):
        mean = x2.mean(dim=1, keepdim=True)
        z = x2 - mean
        d = torch.sqrt((z * z).mean(dim=1, keepdim=True)) + eps
        y = z / d
        ctx.save_for_backward(y, d)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, d = ctx.saved_tensors
        g = dy - dy.mean(dim=1, keepdim=True) - (dy * y).mean(dim=1, keepdim=True) * y
        return g / d, None


@register("MVN")
class MVN(Layer):
    """Mean-variance normalisation per (n, c) -- or per n with across_channels -- and eps added to the
    standard deviation after the sqrt, as Caffe does."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.mvn_param
        self.normalize_variance, self.across_channels, self.eps = p.normalize_variance, p.across_channels, p.eps
        if len(bottom_shapes[0]) < (1 if self.across_channels else 2):
            self.shape_error(f"input {tuple(bottom_shapes[0])} has too few axes")

    def forward(self, bottoms):
        x = bottoms[0]
        rows = x.shape[0] if self.across_channels else x.shape[0] * x.shape[1]
        x2 = x.reshape(rows, -1)
        if self.normalize_variance:
            y = _MVNFunction.apply(x2, self.eps)
        else:
            y = x2 - x2.mean(dim=1, keepdim=True)
        return [y.reshape(x.shape)]
