"""Neuron layers: element-wise, one bottom, one top of the same shape (may be computed in place).

Each forward is Caffe's formula; where Caffe's backward is a closed form over (x, y) that differs from what
autograd would derive (at kinks, or by rounding), the layer uses ``elementwise(x, fwd, grad)`` so that the
gradient is Caffe's expression, evaluated on the saved bottom and top.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ShapeMismatchError
from .base import NeuronLayer, register


class _Elementwise(torch.autograd.Function):
    """y = fwd(x) with dy/dx = grad(x, y) (Caffe's Backward_cpu formula); first-order only."""

    @staticmethod
    def forward(ctx, x, fwd, grad):
        y = fwd(x)
        ctx.grad = grad
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * ctx.grad(x, y), None, None


def elementwise(x, fwd, grad):
    return _Elementwise.apply(x, fwd, grad)


@register("ReLU")
class ReLU(NeuronLayer):
    """y = max(x, 0) + negative_slope * min(x, 0); dy/dx = 1 for x > 0, negative_slope for x <= 0."""

    def forward(self, bottoms):
        x = bottoms[0]
        slope = self.param.relu_param.negative_slope
        if slope == 0:
            return [torch.relu(x)]
        return [torch.where(x > 0, x, x * slope)]


@register("PReLU")
class PReLU(NeuronLayer):
    """ReLU with a learned negative slope per channel (axis 1), or one shared slope (a 0-axis blob)."""

    def setup(self, bottom_shapes):
        p = self.param.prelu_param
        shape = bottom_shapes[0]
        if len(shape) < 2:
            self.fail(f"bottom {tuple(shape)} must have at least 2 axes", ShapeMismatchError)
        self.channels = shape[1]
        self.shared = p.channel_shared
        if p.HasField("filler"):
            filler = p.filler
        else:  # Caffe's default: constant 0.25
            from ..proto import caffe_pb2
            filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
        self.new_param(() if self.shared else (self.channels,), filler)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2 or (not self.shared and shape[1] != self.channels):
            self.shape_error(f"bottom {tuple(shape)} does not have the {self.channels} channels the slopes "
                             f"were set up for")
        return [tuple(shape)]

    def forward(self, bottoms):
        x = bottoms[0]
        a = self.params[0]
        if not self.shared:
            a = a.reshape((1, -1) + (1,) * (x.dim() - 2))
        return [torch.where(x > 0, x, x * a)]


@register("ELU")
class ELU(NeuronLayer):
    """y = max(x, 0) + alpha * (exp(min(x, 0)) - 1); dy/dx = 1 for x > 0, y + alpha for x <= 0."""

    def forward(self, bottoms):
        alpha = self.param.elu_param.alpha
        return [elementwise(
            bottoms[0],
            lambda x: torch.clamp(x, min=0) + alpha * (torch.exp(torch.clamp(x, max=0)) - 1),
            lambda x, y: torch.where(x > 0, torch.ones_like(y), y + alpha))]


@register("Sigmoid")
class Sigmoid(NeuronLayer):
    """Caffe computes 0.5 * tanh(0.5 x) + 0.5; dy/dx = y (1 - y)."""

    def forward(self, bottoms):
        return [elementwise(bottoms[0], lambda x: 0.5 * torch.tanh(0.5 * x) + 0.5, lambda x, y: y * (1 - y))]


@register("TanH")
class TanH(NeuronLayer):
    def forward(self, bottoms):
        return [elementwise(bottoms[0], torch.tanh, lambda x, y: 1 - y * y)]


@register("AbsVal")
class AbsVal(NeuronLayer):
    """y = |x|; dy/dx = sign(x) with sign(0) = 0 (torch's abs backward is the same)."""

    def forward(self, bottoms):
        return [torch.abs(bottoms[0])]


@register("BNLL")
class BNLL(NeuronLayer):
    """y = log(1 + exp(x)), computed as x + log(1 + exp(-x)) for x > 0; dy/dx = e/(1+e), e = exp(min(x, 50))."""
    THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD

    def forward(self, bottoms):
        def fwd(x):
            # max(x, 0) + log(1 + exp(-|x|)) is Caffe's two branches in one expression
            return torch.clamp(x, min=0) + torch.log(1 + torch.exp(-torch.abs(x)))

        def grad(x, y):
            e = torch.exp(torch.clamp(x, max=self.THRESHOLD))
            return e / (e + 1)
        return [elementwise(bottoms[0], fwd, grad)]


@register("Power")
class Power(NeuronLayer):
    """y = (shift + scale * x) ^ power.

    If power * scale == 0 the top is the constant 1 (power 0) or shift^power, with a zero gradient, as in
    Caffe. Otherwise dy/dx = power * scale * (shift + scale x)^(power - 1). Caffe evaluates this as
    ``power*scale * y / (shift + scale x)``, which is NaN where the base is exactly 0; we use the direct
    form, equal to Caffe's wherever Caffe's is finite.
    """

    def forward(self, bottoms):
        p = self.param.power_param
        power, scale, shift = p.power, p.scale, p.shift
        x = bottoms[0]
        diff_scale = power * scale
        if diff_scale == 0:
            value = 1.0 if power == 0 else math.pow(shift, power)
            return [elementwise(x, lambda t: torch.full_like(t, value), lambda t, y: torch.zeros_like(y))]
        if power == 1:
            return [x * scale + shift if (scale != 1 or shift != 0) else x.view_as(x)]

        def fwd(t):
            base = t * scale + shift if (scale != 1 or shift != 0) else t
            return torch.pow(base, power)

        def grad(t, y):
            base = t * scale + shift
            if power == 2:
                return diff_scale * base
            return diff_scale * torch.pow(base, power - 1)
        return [elementwise(x, fwd, grad)]


@register("Exp")
class Exp(NeuronLayer):
    """y = base ^ (shift + scale x) (base -1 means e) = outer * exp(inner * x); dy/dx = inner * y."""

    def setup(self, bottom_shapes):
        p = self.param.exp_param
        base = p.base
        if base != -1 and base <= 0:
            self.fail(f"exp_param.base must be strictly positive (or -1 for e), got {base}")
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner = log_base * p.scale
        self.outer = 1.0 if p.shift == 0 else (math.exp(p.shift) if base == -1 else math.pow(base, p.shift))

    def forward(self, bottoms):
        inner, outer = self.inner, self.outer

        def fwd(x):
            y = torch.exp(x * inner if inner != 1 else x)
            return y * outer if outer != 1 else y
        return [elementwise(bottoms[0], fwd, lambda x, y: y * inner)]


@register("Log")
class Log(NeuronLayer):
    """y = log_base(shift + scale x) (base -1 means e); dy/dx = scale / log(base) / (shift + scale x)."""

    def setup(self, bottom_shapes):
        p = self.param.log_param
        base = p.base
        if base != -1 and base <= 0:
            self.fail(f"log_param.base must be strictly positive (or -1 for e), got {base}")
        self.base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        self.scale, self.shift = p.scale, p.shift

    def forward(self, bottoms):
        bs, scale, shift = self.base_scale, self.scale, self.shift

        def inp(x):
            z = x * scale if scale != 1 else x
            return z + shift if shift != 0 else z

        def fwd(x):
            y = torch.log(inp(x))
            return y * bs if bs != 1 else y
        return [elementwise(bottoms[0], fwd, lambda x, y: (scale * bs) / inp(x))]


@register("Threshold")
class Threshold(NeuronLayer):
    """y = 1 if x > threshold else 0. No backward (Caffe: NOT_IMPLEMENTED); force_backward skips it."""
    has_backward = False

    def forward(self, bottoms):
        x = bottoms[0]
        return [(x > self.param.threshold_param.threshold).to(x.dtype)]


@register("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: y = x * mask * scale, gradient through the same mask; TEST: the identity. As Caffe's CPU
    forward: the mask is caffe_rng_bernoulli(count, 1. - ratio) on Caffe's global stream (caffessl.caffe_rng:
    a double comparison per 32-bit draw) and scale = float(1. / (1. - ratio)), the ratio being the float
    field -- so after the same seed and the same draws before it, the mask is Caffe's."""

    def setup(self, bottom_shapes):
        p = self.param.dropout_param.dropout_ratio
        if not 0 <= p < 1:
            self.fail(f"dropout_param.dropout_ratio must lie in [0, 1), got {p}")
        self.ratio = p
        self.keep = 1.0 - float(np.float32(p))        # Caffe: 1. - threshold_ (a float), in double
        self.scale = float(np.float32(1.0 / self.keep))

    def forward(self, bottoms):
        from .. import caffe_rng
        from ..proto import caffe_pb2
        x = bottoms[0]
        if self.phase != caffe_pb2.TRAIN:
            return [x.view_as(x)]
        bits = caffe_rng.get().bernoulli(x.numel(), self.keep, dtype=np.float64)
        mask = torch.from_numpy(bits.reshape(tuple(x.shape))).to(device=x.device, dtype=x.dtype)
        # Caffe: top = bottom * mask * scale (in that order)
        return [x * mask * self.scale]


@register("Clip")
class Clip(NeuronLayer):
    """y = max(min, min(x, max)); dy/dx = 1 where min <= x <= max (BVLC's ClipLayer)."""

    def setup(self, bottom_shapes):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            self.fail("clip_param needs both min and max")

    def forward(self, bottoms):
        p = self.param.clip_param
        lo, hi = p.min, p.max

        def fwd(x):
            return torch.clamp(torch.clamp(x, max=hi), min=lo)

        def grad(x, y):
            return ((x >= lo) & (x <= hi)).to(x.dtype)
        return [elementwise(bottoms[0], fwd, grad)]


@register("Swish")
class Swish(NeuronLayer):
    """y = x * sigmoid(beta x); dy/dx = beta y + sigmoid(beta x) (1 - beta y) (BVLC's SwishLayer)."""

    def forward(self, bottoms):
        beta = self.param.swish_param.beta

        def sig(x):
            return 0.5 * torch.tanh(0.5 * (x * beta)) + 0.5

        def grad(x, y):
            return beta * y + sig(x) * (1 - beta * y)
        return [elementwise(bottoms[0], lambda x: x * sig(x), grad)]

