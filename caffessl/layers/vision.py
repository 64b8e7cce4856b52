"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP, LRN, Crop -- with Caffe's semantics.

Where Caffe and PyTorch agree the torch op is called directly (that is also the fast path); where they
differ (pooling's clipped ceil rounding when torch's rule disagrees, pads >= kernel/2, stochastic pooling,
LRN within a channel) the Caffe formula is written out with a handful of vectorised torch ops.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ShapeMismatchError, UnsupportedError
from ..proto import caffe_pb2
from . import kernels
from .base import Layer, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_PP = caffe_pb2.PoolingParameter
FLT_MIN = torch.finfo(torch.float32).tiny   # Caffe's FLT_MIN (stochastic pooling's TEST sum starts there)
FLT_MAX = torch.finfo(torch.float32).max    # MAX pooling starts at -FLT_MAX (whatever the Dtype)


def spatial_values(param, name: str, n: int, default, layer: Layer):
    """Caffe's repeated pad/stride/dilation/kernel_size, or their _h/_w forms, expanded to n spatial dims
    with BaseConvolutionLayer::LayerSetUp's checks (default None: the field is required)."""
    base = "kernel" if name == "kernel_size" else name
    hw_h, hw_w = f"{base}_h", f"{base}_w"
    rep = list(getattr(param, name))
    fields = param.DESCRIPTOR.fields_by_name
    if hw_h in fields and (param.HasField(hw_h) or param.HasField(hw_w)):
        if n != 2:
            layer.fail(f"{hw_h} & {hw_w} can only be used for 2D convolution (this one has {n} spatial axes)")
        if rep:
            layer.fail(f"either {name} or {hw_h}/{hw_w} should be specified; not both")
        return [getattr(param, hw_h), getattr(param, hw_w)]
    if not rep:
        if default is None:
            layer.fail(f"{name} is required")
        return [default] * n
    if len(rep) == 1:
        return rep * n
    if len(rep) != n:
        layer.fail(f"{name} must be specified once, or once per spatial dimension ({n}), got {len(rep)}")
    return rep


class _ConvGeometry(Layer):
    """The parameter parsing that Convolution, Deconvolution and Im2col share (BaseConvolutionLayer)."""

    def _geometry(self, shape):
        p = self.param.convolution_param
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.nsp = len(shape) - self.axis - 1
        if self.nsp not in _CONV:
            raise UnsupportedError(f"layer '{self.name}' ({self.type}): {self.nsp}-D convolution is not "
                                      f"implemented (1-D, 2-D and 3-D spatial blobs are)")
        self.kernel = spatial_values(p, "kernel_size", self.nsp, None, self)
        self.pad = spatial_values(p, "pad", self.nsp, 0, self)
        self.stride = spatial_values(p, "stride", self.nsp, 1, self)
        self.dilation = spatial_values(p, "dilation", self.nsp, 1, self)
        if any(k <= 0 for k in self.kernel):
            self.fail(f"filter dimensions must be nonzero, got kernel {self.kernel}")
        if any(s <= 0 for s in self.stride):
            self.fail(f"stride dimensions must be nonzero, got stride {self.stride}")
        if any(d <= 0 for d in self.dilation):
            self.fail(f"dilation must be positive, got {self.dilation}")
        self.channels = shape[self.axis]
        self.spatial_in = tuple(shape[self.axis + 1:])
        # force_nd_im2col only selects Caffe's N-D im2col kernels, which compute the same convolution as the
        # 2-D ones (the SSL fork's N-D path corrupts the heap: golden README, surprise 17); the torch
        # convolution below is the same for both.

    def _check_spatial_rank(self, s):
        if len(s) != self.axis + 1 + self.nsp:
            self.shape_error(f"bottom num_axes may not change: set up with {self.axis + 1 + self.nsp} axes, "
                             f"got {tuple(s)}")

    def _conv_out(self, s):
        out = []
        for i in range(self.nsp):
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            o = (s[self.axis + 1 + i] + 2 * self.pad[i] - ext) // self.stride[i] + 1
            if o <= 0:
                self.shape_error(f"input {tuple(s)} is smaller than the (dilated) kernel {self.kernel} "
                                 f"with pad {self.pad}")
            out.append(o)
        return out

    def _split(self, x):
        """Fold the axes before the channel axis into one batch axis."""
        return x.shape[:self.axis], x.reshape(-1, *x.shape[self.axis:])


class _ConvBase(_ConvGeometry):
    num_bottoms = (1, None)
    num_tops = (1, None)

    def _conv_setup(self, shape):
        self._geometry(shape)
        p = self.param.convolution_param
        self.group = p.group
        self.num_output = p.num_output
        if self.num_output <= 0:
            self.fail("convolution_param.num_output must be positive")
        if self.group <= 0:
            self.fail(f"group must be positive, got {self.group}")
        if self.channels % self.group:
            self.fail(f"channels ({self.channels}) must be a multiple of group ({self.group})",
                      ShapeMismatchError)
        if self.num_output % self.group:
            self.fail(f"number of outputs ({self.num_output}) should be a multiple of group ({self.group})")
        if len(self.param.bottom) != len(self.param.top):
            self.fail(f"needs as many tops as bottoms ({len(self.param.bottom)} vs {len(self.param.top)})")

    def _check_bottoms(self, bottom_shapes):
        for s in bottom_shapes:
            if tuple(s) != tuple(bottom_shapes[0]):
                self.shape_error(f"all inputs must have the same shape, got {[tuple(b) for b in bottom_shapes]}")
        s = bottom_shapes[0]
        self._check_spatial_rank(s)
        if s[self.axis] != self.channels:
            self.shape_error(f"input {tuple(s)} has {s[self.axis]} channels, the weights expect {self.channels}")


@register("Convolution")
class Convolution(_ConvBase):
    """Dense convolution = the conv-modes' LOWERED_GEMM path. Other conv modes run through ``self.engine``,
    which caffessl.conv_modes builds (on weight loading / parameter change); ``None`` means dense."""
    weight_matrix = True
    sparse_modes = True

    def setup(self, bottom_shapes):
        self._conv_setup(bottom_shapes[0])
        p = self.param.convolution_param
        self.conv_mode = p.conv_mode
        self.engine = None
        self.new_param((self.num_output, self.channels // self.group, *self.kernel), p.weight_filler)
        if p.bias_term:
            self.new_param((self.num_output,), p.bias_filler)

    def reshape(self, bottom_shapes):
        self._check_bottoms(bottom_shapes)
        s = bottom_shapes[0]
        return [tuple(s[:self.axis]) + (self.num_output, *self._conv_out(s))] * len(bottom_shapes)

    def forward(self, bottoms):
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        conv = _CONV[self.nsp]
        args = (self.stride, self.pad, self.dilation, self.group)
        if self.conv_mode != caffe_pb2.ConvolutionParameter.LOWERED_GEMM:
            conv = self._forward_only(conv) if self.engine is None else self._engine_conv
        tops = []
        for x in bottoms:
            if self.axis == 1:
                tops.append(conv(x, w, b, *args))
                continue
            lead, x2 = self._split(x)
            y = conv(x2, w, b, *args)
            tops.append(y.reshape(*lead, *y.shape[1:]))
        return tops

    def _engine_conv(self, x, w, b, *args):
        return self.engine(x, w, b)          # the engine's kernel knows the geometry it was built for

    def _forward_only(self, conv):
        """No sparse structure built (no weights loaded yet, DIRECT_DCONV, N-D ``auto``): the forward is the
        dense one, but the fork's backward stops in every conv_mode but LOWERED_GEMM. (``auto``, caffessl's
        override, picks the dense kernel for such a layer, which trains as LOWERED_GEMM does.)"""
        from ..conv_modes import AUTO, mode_name
        from ..conv_modes.engine import forward_only
        if self.conv_mode == AUTO:
            return conv
        where = f"layer '{self.name}' (Convolution, conv_mode {mode_name(self.conv_mode)})"

        def run(x, w, b, *args):
            return forward_only(lambda x, w, b: conv(x, w, b, *args), x, w, b, where)
        return run

    def on_weights_loaded(self, fmt):
        """Connectivity mask (Layer), then caffessl.conv_modes builds ``self.engine`` for sparse conv modes."""
        super().on_weights_loaded(fmt)
        from ..conv_modes import make_engine  # Caffe's WeightAlign: build the conv_mode structures once
        self.engine = make_engine(self)


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution. Weights (C_in, C_out/group, k...); out = s(in-1) + d(k-1)+1 - 2p.
    Its forward is Caffe's backward-data GEMM, which the SSL fork refuses in every conv_mode but LOWERED_GEMM
    (ssl_fork.md 5): such a layer is a configuration error here."""
    weight_matrix = True

    def setup(self, bottom_shapes):
        self._conv_setup(bottom_shapes[0])
        p = self.param.convolution_param
        if p.conv_mode != caffe_pb2.ConvolutionParameter.LOWERED_GEMM:
            self.fail(f"conv_mode {caffe_pb2.ConvolutionParameter.ConvMode.Name(p.conv_mode)}: the SSL fork's "
                      f"Deconvolution forward is a backward GEMM, which stops with 'Training in sparse format is "
                      f"not supported' in every mode but LOWERED_GEMM")
        self.new_param((self.channels, self.num_output // self.group, *self.kernel), p.weight_filler)
        if p.bias_term:
            self.new_param((self.num_output,), p.bias_filler)

    def reshape(self, bottom_shapes):
        self._check_bottoms(bottom_shapes)
        s = bottom_shapes[0]
        out = []
        for i in range(self.nsp):
            o = (self.stride[i] * (s[self.axis + 1 + i] - 1) + self.dilation[i] * (self.kernel[i] - 1) + 1
                 - 2 * self.pad[i])
            if o <= 0:
                self.shape_error(f"input {tuple(s)} with kernel {self.kernel}, stride {self.stride} and pad "
                                 f"{self.pad} gives a non-positive output size")
            out.append(o)
        return [tuple(s[:self.axis]) + (self.num_output, *out)] * len(bottom_shapes)

    def forward(self, bottoms):
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        deconv = _DECONV[self.nsp]
        tops = []
        for x in bottoms:
            lead, x2 = self._split(x)
            y = deconv(x2, w, b, self.stride, self.pad, 0, self.group, self.dilation)
            tops.append(y.reshape(*lead, *y.shape[1:]))
        return tops


@register("Im2col")
class Im2col(_ConvGeometry):
    """Caffe's im2col as a layer: (.., C, spatial...) -> (.., C*prod(k), out spatial...), channel-major
    columns (c, k...) exactly as Caffe lays them out."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        self._geometry(bottom_shapes[0])
        self.kdim = math.prod(self.kernel)
        # one-hot grouped-convolution weights give im2col for 1-D and 3-D (exact: products with 1 and 0)
        eye = torch.eye(self.kdim, dtype=self.dtype, device=self.device)
        self._onehot = eye.reshape(self.kdim, 1, *self.kernel).repeat(self.channels, 1, *([1] * self.nsp))

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        self._check_spatial_rank(s)
        if s[self.axis] != self.channels:
            self.shape_error(f"input {tuple(s)} has {s[self.axis]} channels, set up with {self.channels}")
        return [tuple(s[:self.axis]) + (self.channels * self.kdim, *self._conv_out(s))]

    def forward(self, bottoms):
        lead, x2 = self._split(bottoms[0])
        if self.nsp == 2:
            out_hw = self._conv_out(bottoms[0].shape)
            cols = F.unfold(x2, self.kernel, self.dilation, self.pad, self.stride)
            y = cols.reshape(x2.shape[0], cols.shape[1], *out_hw)
        else:
            w = self._onehot.to(dtype=x2.dtype, device=x2.device)
            y = _CONV[self.nsp](x2, w, None, self.stride, self.pad, self.dilation, self.channels)
        return [y.reshape(*lead, *y.shape[1:])]


# -- pooling -------------------------------------------------------------------------------------------

def pooled_size(h, k, p, s, round_mode, any_pad):
    """PoolingLayer::Reshape: ceil (or floor) rounding, then drop a last window that would start in the
    padding -- a check Caffe makes only when some pad (h or w) is non-zero."""
    if round_mode == _PP.FLOOR:
        out = (h + 2 * p - k) // s + 1
    else:
        out = -((-(h + 2 * p - k)) // s) + 1
    if any_pad and (out - 1) * s >= h + p:
        out -= 1
    return out


def ave_divisor(hw, kernel, stride, pad, out_hw) -> np.ndarray:
    """Caffe's AVE pooling divisor per output cell, (oh, ow) float64: (min(hs+kh, H+ph) - hs) *
    (min(ws+kw, W+pw) - ws) with hs = i*sh - ph -- padding cells count, the ceil overhang does not.
    Used by the layer and by the ONNX exporter."""
    def axis(size, k, s, p, n_out):
        start = np.arange(n_out, dtype=np.int64) * s - p
        return (np.minimum(start + k, size + p) - start).astype(np.float64)
    dh = axis(hw[0], kernel[0], stride[0], pad[0], out_hw[0])
    dw = axis(hw[1], kernel[1], stride[1], pad[1], out_hw[1])
    return np.outer(dh, dw)


def _torch_pooled_size(h, k, p, s, ceil_mode):
    out = (h + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= h + p:
        out -= 1
    return out


def _pool_hw(param, layer, name, required):
    """kernel/pad/stride from their scalar or _h/_w forms with PoolingLayer::LayerSetUp's checks."""
    base = "kernel" if name == "kernel_size" else name
    hh, ww = f"{base}_h", f"{base}_w"
    has, has_h, has_w = param.HasField(name), param.HasField(hh), param.HasField(ww)
    if has and (has_h or has_w):
        layer.fail(f"{name} is {name} OR {hh} and {ww}; not both")
    if has_h != has_w:
        layer.fail(f"{hh} and {ww} must be given together")
    if has_h:
        return [getattr(param, hh), getattr(param, ww)]
    if required and not has:
        layer.fail(f"{name} or {hh} and {ww} are required")
    return [getattr(param, name)] * 2


@register("Pooling")
class Pooling(Layer):
    num_bottoms = 1
    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.pooling_param
        shape = bottom_shapes[0]
        if len(shape) != 4:
            self.shape_error(f"input must have 4 axes (num, channels, height, width), got {tuple(shape)}")
        self.method = p.pool
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                self.fail("with global_pooling: true, the filter size cannot be specified")
            self.kernel = [shape[2], shape[3]]
        else:
            self.kernel = _pool_hw(p, self, "kernel_size", True)
        self.pad = _pool_hw(p, self, "pad", False)
        self.stride = _pool_hw(p, self, "stride", False)
        if self.global_pooling and (self.pad != [0, 0] or self.stride != [1, 1]):
            self.fail(f"with global_pooling: true only pad = 0 and stride = 1 (got pad {self.pad}, "
                      f"stride {self.stride})")
        if any(k <= 0 for k in self.kernel):
            self.fail(f"filter dimensions cannot be zero, got kernel {self.kernel}")
        if any(s <= 0 for s in self.stride):
            self.fail(f"stride must be positive, got {self.stride}")
        if any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            self.fail(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        if self.method not in (_PP.MAX, _PP.AVE, _PP.STOCHASTIC):
            self.fail(f"unknown pooling method {self.method}")
        if len(self.param.top) == 2 and self.method != _PP.MAX:
            self.fail("a second (mask) top is only produced by MAX pooling")
        self.round_mode = p.round_mode

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        if len(s) != 4:
            self.shape_error(f"input must have 4 axes (num, channels, height, width), got {tuple(s)}")
        n, c, h, w = s
        if self.global_pooling:
            self.kernel = [h, w]
        any_pad = bool(self.pad[0] or self.pad[1])
        self.out_hw = [pooled_size(h, self.kernel[0], self.pad[0], self.stride[0], self.round_mode, any_pad),
                       pooled_size(w, self.kernel[1], self.pad[1], self.stride[1], self.round_mode, any_pad)]
        if min(self.out_hw) <= 0:
            self.shape_error(f"input {tuple(s)} is smaller than the kernel {self.kernel}")
        ceil_mode = self.round_mode != _PP.FLOOR
        # torch's pooling computes exactly Caffe's windows and AVE divisor when its output size agrees
        # and its pad limit (pad <= kernel/2) holds; otherwise pad explicitly (below).
        self.torch_ok = all(2 * pd <= k for pd, k in zip(self.pad, self.kernel)) and self.out_hw == [
            _torch_pooled_size(d, k, pd, st, ceil_mode)
            for d, k, pd, st in zip((h, w), self.kernel, self.pad, self.stride)]
        self.ceil_mode = ceil_mode
        self._div = None
        if not self.torch_ok:   # the explicitly padded input (_pad_to_windows) is a blob of its own
            self.reserve("padded input", (n, c) + tuple((o - 1) * st + k for o, st, k in
                                                        zip(self.out_hw, self.stride, self.kernel)))
        return [(n, c, *self.out_hw)] * len(self.param.top)

    def _pad_to_windows(self, x, value, left=True):
        """Pad so that every window of the output grid lies inside the tensor."""
        h, w = x.shape[2:]
        ph, pw = (self.pad if left else (0, 0))
        eh = max(0, (self.out_hw[0] - 1) * self.stride[0] + self.kernel[0] - h - ph)
        ew = max(0, (self.out_hw[1] - 1) * self.stride[1] + self.kernel[1] - w - pw)
        return F.pad(x, (pw, ew, ph, eh), value=value)

    def _divisor(self, h, w, like):
        """Caffe's AVE divisor (min(hs+k, H+p) - hs)(min(ws+k, W+p) - ws), hs = i*s - p, cached per shape."""
        key = (h, w, like.dtype, like.device)
        if self._div is None or self._div[0] != key:
            div = ave_divisor((h, w), self.kernel, self.stride, self.pad, self.out_hw)
            self._div = (key, torch.from_numpy(div).to(like.dtype).to(like.device))
        return self._div[1]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.method == _PP.MAX:
            return self._max(x)
        if self.method == _PP.AVE:
            return [self._ave(x)]
        return [self._stochastic(x)]

    def _max(self, x):
        want_mask = len(self.param.top) == 2
        if not want_mask and self._use_kernel(x):
            # inference: the same values, MAX 5-17x, AVE 2-3x faster than torch's ops (bench/layers.py --inference)
            return [kernels.pool2d(x, self.kernel, self.stride, self.pad, self.out_hw, "MAX", -FLT_MAX)]
        if self.torch_ok:
            if not want_mask:
                return [F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode)]
            y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode,
                                  return_indices=True)
            return [y, idx.to(x.dtype)]   # torch's index is Caffe's mask: h*W + w in the unpadded plane
        h, w = x.shape[2:]
        oh, ow = self.out_hw
        # pad with -FLT_MAX: a window with no image cell gives -FLT_MAX (and mask -1), as in Caffe
        xp = self._pad_to_windows(x, -FLT_MAX)
        y, idx = F.max_pool2d(xp, self.kernel, self.stride, 0, return_indices=True)
        y = y[:, :, :oh, :ow]
        if not want_mask:
            return [y]
        idx = idx[:, :, :oh, :ow]
        wp = xp.shape[3]
        r = idx // wp - self.pad[0]
        c = idx % wp - self.pad[1]
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        return [y, torch.where(inside, r * w + c, torch.full_like(r, -1)).to(x.dtype)]

    def _use_kernel(self, x):
        return kernels.pool2d_supported(self.kernel, self.pad, x.shape[2:]) and kernels.applies(x)

    def _ave(self, x):
        if self._use_kernel(x):
            s = kernels.pool2d(x, self.kernel, self.stride, self.pad, self.out_hw, "SUM")
            return s.div_(self._divisor(*x.shape[2:], x))
        if self.torch_ok:
            return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode,
                                count_include_pad=True)
        h, w = x.shape[2:]
        oh, ow = self.out_hw
        s = F.avg_pool2d(self._pad_to_windows(x, 0.0), self.kernel, self.stride, 0) * (
            self.kernel[0] * self.kernel[1])
        return s[:, :, :oh, :ow] / self._divisor(h, w, x)

    def _stochastic(self, x):
        """Caffe's GPU kernels (its CPU code aborts with "Not Implemented Yet"). Windows start at i*stride
        and ignore pad (pad only changes the output size). TEST: sum(x^2) / (FLT_MIN + sum(x)), or 0 when
        that sum is not positive. TRAIN: pick the first cell whose running sum reaches u * sum(x), u ~ U(0,1)
        from torch's generator; its value is the output and it alone receives the gradient. (Caffe's TEST
        backward reuses stale TRAIN sample indices; we differentiate the TEST formula instead.)"""
        oh, ow = self.out_hw
        xp = self._pad_to_windows(x, 0.0, left=False)
        k = self.kernel[0] * self.kernel[1]
        if self.phase == caffe_pb2.TEST:
            s1 = F.avg_pool2d(xp, self.kernel, self.stride, 0)[:, :, :oh, :ow] * k + FLT_MIN
            s2 = F.avg_pool2d(xp * xp, self.kernel, self.stride, 0)[:, :, :oh, :ow] * k
            return torch.where(s1 > 0, s2 / s1, torch.zeros_like(s1))
        n, c = x.shape[:2]
        cols = F.unfold(xp.reshape(n * c, 1, *xp.shape[2:]), self.kernel, 1, 0, self.stride)
        lw = (xp.shape[3] - self.kernel[1]) // self.stride[1] + 1
        lh = cols.shape[2] // lw
        cols = cols.reshape(n * c, k, lh, lw)[:, :, :oh, :ow].reshape(n * c, k, oh * ow)
        with torch.no_grad():
            csum = torch.cumsum(cols.detach(), dim=1)
            thres = torch.rand(n * c, 1, oh * ow, dtype=x.dtype, device=x.device) * csum[:, -1:]
            pick = torch.argmax((csum >= thres).to(torch.int8), dim=1, keepdim=True)
        return torch.gather(cols, 1, pick).reshape(n, c, oh, ow)


@register("SPP")
class SPP(Layer):
    """Spatial pyramid pooling: level i pools to 2^i x 2^i bins (kernel ceil(H/bins), pad (rem+1)/2, stride
    = kernel, through a Pooling layer with Caffe's rounding); the levels are flattened and concatenated."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        sp = self.param.spp_param
        if not sp.HasField("pyramid_height") or sp.pyramid_height <= 0:
            self.fail("spp_param.pyramid_height must be given and positive")
        self.height = sp.pyramid_height

    def _levels(self, shape):
        if len(shape) != 4:
            self.shape_error(f"input must have 4 axes (num, channels, height, width), got {tuple(shape)}")
        h, w = shape[2:]
        levels = []
        for i in range(self.height):
            bins = 2 ** i
            lp = caffe_pb2.LayerParameter()
            lp.name, lp.type = f"{self.name}/level{i}", "Pooling"
            lp.top.append("t")
            pp = lp.pooling_param
            pp.pool = self.param.spp_param.pool
            kh, kw = -(-h // bins), -(-w // bins)
            pp.kernel_h, pp.kernel_w = kh, kw
            pp.stride_h, pp.stride_w = kh, kw
            pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
            pool = Pooling(lp, self.phase, self.device, self.dtype)
            pool.setup([shape])
            out = pool.reshape([shape])[0]
            levels.append((pool, out))
        return levels

    def reshape(self, bottom_shapes):
        s = tuple(bottom_shapes[0])
        self.levels = self._levels(s)
        if self.height == 1:
            return [self.levels[0][1]]
        return [(s[0], sum(math.prod(o[1:]) for _, o in self.levels))]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.height == 1:
            return self.levels[0][0].forward([x])
        return [torch.cat([pool.forward([x])[0].reshape(x.shape[0], -1) for pool, _ in self.levels], dim=1)]


# -- LRN -------------------------------------------------------------------------------------------------

@register("LRN")
class LRN(Layer):
    """ACROSS_CHANNELS: x / (k + alpha/n * sum_{n channels, zero-padded} x^2)^beta (torch's
    local_response_norm is exactly this formula for odd n). WITHIN_CHANNEL: x / (1 + alpha * AVE-pool_{n x n,
    pad (n-1)/2, stride 1}(x^2))^beta, the divisor always n^2; Caffe builds it from Power/Pooling layers,
    so ``k`` is ignored."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.lrn_param
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.region = p.norm_region
        if self.size % 2 != 1:
            self.fail(f"LRN only supports odd values for local_size, got {self.size}")
        if self.region not in (caffe_pb2.LRNParameter.ACROSS_CHANNELS, caffe_pb2.LRNParameter.WITHIN_CHANNEL):
            self.fail(f"unknown normalize region {self.region}")
        self.reshape(bottom_shapes)

    def reshape(self, bottom_shapes):
        s = tuple(bottom_shapes[0])
        if len(s) != 4:
            self.shape_error(f"input must have 4 axes (num, channels, height, width), got {s}")
        return [s]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            if kernels.applies(x):
                # inference: the same formula in cache-sized chunks, 4-8x faster (bench/layers.py --inference)
                return [kernels.lrn_across_channels(x, self.size, self.alpha, self.beta, self.k)]
            if x.device.type == "cpu":
                # training: the chunked forward and Caffe's backward formula (bench/layers.py)
                return [kernels.LRNAcrossChannels.apply(x, self.size, self.alpha, self.beta, self.k)]
            # other devices: the zero-padded channel window summed with local_size shifted in-place adds
            # (the value of F.local_response_norm, whose avg_pool3d is ~2x slower), through autograd
            n, c, half = self.size, x.shape[1], (self.size - 1) // 2
            sq = F.pad(x * x, (0, 0, 0, 0, half, half))
            s = sq[:, 0:c].clone()
            for j in range(1, n):
                s += sq[:, j:j + c]
            return [x * s.mul_(self.alpha / n).add_(self.k).pow(-self.beta)]
        pad = (self.size - 1) // 2
        avg = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        return [x * torch.pow(avg * self.alpha + 1.0, -self.beta)]


# -- Crop ------------------------------------------------------------------------------------------------

@register("Crop")
class Crop(Layer):
    """Crop bottom 0 to bottom 1's shape on the axes from ``axis`` on, starting at ``offset`` (none: 0; one:
    every cropped axis; else one per cropped axis). Bottom 1 only gives the shape (no gradient)."""
    num_bottoms = 2
    num_tops = 1
    no_grad_bottoms = (1,)

    def reshape(self, bottom_shapes):
        a, b = (tuple(s) for s in bottom_shapes)
        if len(a) != len(b):
            self.shape_error(f"bottom[0] {a} and bottom[1] {b} must have the same number of axes")
        p = self.param.crop_param
        start = self.canonical_axis(p.axis, len(a))
        offs = list(p.offset)
        ncrop = len(a) - start
        if len(offs) > 1 and len(offs) != ncrop:
            self.fail(f"number of offsets ({len(offs)}) must be 0, 1 or the number of cropped axes ({ncrop})")
        self.slices = []
        for i in range(len(a)):
            if i < start:
                self.slices.append(slice(None))
                continue
            o = 0 if not offs else (offs[0] if len(offs) == 1 else offs[i - start])
            if a[i] - o < b[i]:
                self.shape_error(f"invalid crop parameters in dimension {i}: bottom[0] {a}, bottom[1] {b}, "
                                 f"offset {o}")
            self.slices.append(slice(o, o + b[i]))
        return [a[:start] + b[start:]]

    def forward(self, bottoms):
        return [bottoms[0][tuple(self.slices)]]
