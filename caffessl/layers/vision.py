"""Vision layers: Convolution, Pooling (Caffe's ceil rounding and padded-window average)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..proto import caffe_pb2
from .base import Layer, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def spatial_values(param, name: str, n: int, default: int, layer: Layer):
    """Caffe's repeated pad/stride/dilation/kernel_size, or their _h/_w forms, expanded to n dims."""
    base = "kernel" if name == "kernel_size" else name
    hw_h, hw_w = f"{base}_h", f"{base}_w"
    rep = list(getattr(param, name))
    fields = param.DESCRIPTOR.fields_by_name
    has_hw = hw_h in fields and (param.HasField(hw_h) or param.HasField(hw_w))
    if has_hw:
        if n != 2:
            layer.fail(f"{hw_h}/{hw_w} are only for 2-D spatial blobs")
        if rep:
            layer.fail(f"either {name} or {hw_h}/{hw_w} may be given, not both")
        return [getattr(param, hw_h), getattr(param, hw_w)]
    if not rep:
        if default is None:
            layer.fail(f"{name} is required")
        return [default] * n
    if len(rep) == 1:
        return rep * n
    if len(rep) != n:
        layer.fail(f"{name} must be given once or once per spatial dimension ({n}), got {len(rep)}")
    return rep


class _ConvBase(Layer):
    num_bottoms = (1, None)
    num_tops = (1, None)

    def _geometry(self, shape):
        p = self.param.convolution_param
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.nsp = len(shape) - self.axis - 1
        if self.nsp not in _CONV:
            raise NotImplementedError(f"layer '{self.name}': {self.nsp}-D convolution is not implemented "
                                      f"(1-D, 2-D and 3-D are)")
        self.kernel = spatial_values(p, "kernel_size", self.nsp, None, self)
        self.pad = spatial_values(p, "pad", self.nsp, 0, self)
        self.stride = spatial_values(p, "stride", self.nsp, 1, self)
        self.dilation = spatial_values(p, "dilation", self.nsp, 1, self)
        if any(k <= 0 for k in self.kernel) or any(s <= 0 for s in self.stride):
            self.fail(f"kernel {self.kernel} and stride {self.stride} must be positive")
        self.group = p.group
        self.num_output = p.num_output
        self.channels = shape[self.axis]
        if self.num_output <= 0:
            self.fail("convolution_param.num_output must be positive")
        if self.channels % self.group or self.num_output % self.group:
            self.fail(f"channels ({self.channels}) and num_output ({self.num_output}) must be multiples of "
                      f"group ({self.group})", cls=__import__("caffessl").errors.ShapeMismatchError)

    def _check_bottoms(self, bottom_shapes):
        if len(bottom_shapes) != len(self.param.top):
            self.fail(f"needs as many tops as bottoms ({len(bottom_shapes)} vs {len(self.param.top)})")
        for s in bottom_shapes:
            if tuple(s) != tuple(bottom_shapes[0]):
                self.shape_error(f"all bottoms must have the same shape, got {list(map(tuple, bottom_shapes))}")
        s = bottom_shapes[0]
        if s[self.axis] != self.channels:
            self.shape_error(f"input {tuple(s)} has {s[self.axis]} channels, the weights expect {self.channels}")

    def _split(self, x):
        lead = x.shape[:self.axis]
        return lead, x.reshape(-1, *x.shape[self.axis:])


@register("Convolution")
class Convolution(_ConvBase):
    def setup(self, bottom_shapes):
        self._geometry(bottom_shapes[0])
        p = self.param.convolution_param
        self.new_param((self.num_output, self.channels // self.group, *self.kernel), p.weight_filler)
        if p.bias_term:
            self.new_param((self.num_output,), p.bias_filler)

    def reshape(self, bottom_shapes):
        self._check_bottoms(bottom_shapes)
        s = bottom_shapes[0]
        out = []
        for i in range(self.nsp):
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            o = (s[self.axis + 1 + i] + 2 * self.pad[i] - ext) // self.stride[i] + 1
            if o <= 0:
                self.shape_error(f"input {tuple(s)} is smaller than the (dilated) kernel {self.kernel}")
            out.append(o)
        return [tuple(s[:self.axis]) + (self.num_output, *out)] * len(bottom_shapes)

    def forward(self, bottoms):
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        conv = _CONV[self.nsp]
        tops = []
        for x in bottoms:
            lead, x2 = self._split(x)
            y = conv(x2, w, b, self.stride, self.pad, self.dilation, self.group)
            tops.append(y.reshape(*lead, *y.shape[1:]))
        return tops

    def on_weights_loaded(self, fmt):
        pass


def pooled_size(h, k, p, s, round_mode):
    if round_mode == caffe_pb2.PoolingParameter.FLOOR:
        out = (h + 2 * p - k) // s + 1
    else:
        out = int(math.ceil((h + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= h + p:
        out -= 1  # Caffe clips the last window so that it starts inside the image
    return out


@register("Pooling")
class Pooling(Layer):
    num_bottoms = 1
    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.pooling_param
        shape = bottom_shapes[0]
        if len(shape) != 4:
            self.shape_error(f"pooling needs a 4-D input (N, C, H, W), got {tuple(shape)}")
        self.method = p.pool
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h"):
                self.fail("with global_pooling, kernel size cannot be specified")
            self.kernel = [shape[2], shape[3]]
        elif p.HasField("kernel_size"):
            self.kernel = [p.kernel_size] * 2
        elif p.HasField("kernel_h") and p.HasField("kernel_w"):
            self.kernel = [p.kernel_h, p.kernel_w]
        else:
            self.fail("kernel_size or kernel_h and kernel_w are required")
        self.pad = [p.pad_h, p.pad_w] if (p.HasField("pad_h") or p.HasField("pad_w")) else [p.pad] * 2
        self.stride = ([p.stride_h, p.stride_w] if (p.HasField("stride_h") or p.HasField("stride_w"))
                       else [p.stride] * 2)
        if self.global_pooling:
            self.pad, self.stride = [0, 0], [1, 1]
        if any(k <= 0 for k in self.kernel) or any(s <= 0 for s in self.stride):
            self.fail(f"kernel {self.kernel} and stride {self.stride} must be positive")
        if any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            self.fail(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        if len(self.param.top) == 2 and self.method != caffe_pb2.PoolingParameter.MAX:
            self.fail("a second (mask) top is only produced by MAX pooling")
        self.round_mode = p.round_mode

    def reshape(self, bottom_shapes):
        n, c, h, w = bottom_shapes[0]
        if self.global_pooling:
            self.kernel = [h, w]
        self.out_hw = [pooled_size(h, self.kernel[0], self.pad[0], self.stride[0], self.round_mode),
                       pooled_size(w, self.kernel[1], self.pad[1], self.stride[1], self.round_mode)]
        self._div = None
        return [(n, c, *self.out_hw)] * len(self.param.top)

    def _pad_to_windows(self, x, value):
        """Pad so that every (clipped) window of the output grid lies inside the tensor."""
        h, w = x.shape[2:]
        eh = max(0, (self.out_hw[0] - 1) * self.stride[0] + self.kernel[0] - h - 2 * self.pad[0])
        ew = max(0, (self.out_hw[1] - 1) * self.stride[1] + self.kernel[1] - w - 2 * self.pad[1])
        return F.pad(x, (self.pad[1], self.pad[1] + ew, self.pad[0], self.pad[0] + eh), value=value)

    def _divisor(self, h, w, like):
        if self._div is None or self._div.shape != tuple(self.out_hw) or self._div.device != like.device:
            def axis(n_out, size, k, s, p):
                start = torch.arange(n_out, dtype=torch.float64) * s - p
                return torch.minimum(start + k, torch.tensor(float(size + p))) - start
            dh = axis(self.out_hw[0], h, self.kernel[0], self.stride[0], self.pad[0])
            dw = axis(self.out_hw[1], w, self.kernel[1], self.stride[1], self.pad[1])
            self._div = (dh[:, None] * dw[None, :]).to(like.dtype).to(like.device)
        return self._div

    def forward(self, bottoms):
        x = bottoms[0]
        h, w = x.shape[2:]
        oh, ow = self.out_hw
        if self.method == caffe_pb2.PoolingParameter.MAX:
            xp = self._pad_to_windows(x, float("-inf"))
            y, idx = F.max_pool2d(xp, self.kernel, self.stride, 0, return_indices=True)
            y = y[:, :, :oh, :ow]
            if len(self.param.top) == 1:
                return [y]
            idx = idx[:, :, :oh, :ow]
            wp = xp.shape[3]
            r = idx // wp - self.pad[0]
            c = idx % wp - self.pad[1]
            return [y, (r * w + c).to(x.dtype)]
        if self.method == caffe_pb2.PoolingParameter.AVE:
            xp = self._pad_to_windows(x, 0.0)
            s = F.avg_pool2d(xp, self.kernel, self.stride, 0) * (self.kernel[0] * self.kernel[1])
            return [s[:, :, :oh, :ow] / self._divisor(h, w, x)]
        raise NotImplementedError(f"layer '{self.name}': STOCHASTIC pooling is not implemented yet")
