"""Export a caffessl Net (TEST phase) to ONNX (opset 13) with the ``onnx`` helper API.

Each supported Caffe layer type maps to a few ONNX nodes that compute exactly what Caffe computes:

* Pooling keeps Caffe's output size (ceil rounding, last window dropped when it starts in the padding) with
  explicit end pads and ``ceil_mode=0``; AVE pooling divides by Caffe's divisor (padding cells count, the
  ceil overhang does not) as a sum pool times a constant ``k*k/divisor`` map.
* BatchNorm's statistics are divided by its scale-factor blob; Scale/Bias become Mul/Add with broadcast
  shapes; InnerProduct is Flatten + Gemm (+ Reshape for axis > 1); Dropout is the identity.
* RNN and LSTM are unrolled over the T timesteps of the net's blob shapes (Gemm, Mul, Add, Sigmoid, Tanh,
  Split, Concat), with ``cont`` multiplying the previous state at each step as in caffessl; the graph starts
  from zeros (caffessl's state after loading or ``reset()``) or from the h_0/c_0 inputs with expose_hidden.
* ArgMax is TopK over the reversed axis, which gives Caffe's tie order (the larger index first).
* Shapes are static (the net's current blob shapes, batch included).

A layer that ONNX cannot express (or that is not implemented here) raises ExportError naming it.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import ExportError
from ..layers.vision import ave_divisor
from ..proto import caffe_pb2

log = logging.getLogger("caffessl")

OPSET = 13
IR_VERSION = 8   # the IR that introduced opset 13's era; runtimes older than the onnx package still load it
_PP = caffe_pb2.PoolingParameter
_EW = caffe_pb2.EltwiseParameter
_LRN = caffe_pb2.LRNParameter


class _Graph:
    def __init__(self, net):
        self.net = net
        self.nodes, self.inits = [], []
        self.names = {}          # caffe blob -> current onnx value name
        self.count = {}

    def fresh(self, base):
        n = self.count.get(base, 0)
        self.count[base] = n + 1
        return base if n == 0 else f"{base}__{n}"

    def const(self, base, arr, dtype=np.float32):
        from onnx import numpy_helper
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(arr, dtype=dtype)), name))
        return name

    def node(self, op, inputs, base, **attrs):
        from onnx import helper
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def rename(self, old, new):
        for n in self.nodes:
            for lst in (n.input, n.output):
                for i, v in enumerate(lst):
                    if v == old:
                        lst[i] = new
        for k, v in self.names.items():
            if v == old:
                self.names[k] = new

    def shape(self, blob):
        return tuple(self.net.blobs[blob].shape)


def _fail(layer, why):
    raise ExportError(f"layer '{layer.name}' ({layer.type}): cannot export to ONNX: {why}")


def _params(layer):
    return [p.detach().cpu().numpy().astype(np.float32) for p in layer.params]


# -- converters: (graph, layer, [input names], [bottom blob names]) -> [output names] ------------------

def _conv(g, layer, xs, bottoms):
    if layer.param.convolution_param.axis != 1 or len(layer.kernel) != 2:
        _fail(layer, "only 2-D convolution over axis 1 is exported")
    ps = _params(layer)
    ins = [xs[0], g.const(layer.name + "_W", ps[0])] + ([g.const(layer.name + "_b", ps[1])] if len(ps) > 1 else [])
    op = "Conv" if layer.type == "Convolution" else "ConvTranspose"
    return [g.node(op, ins, layer.name, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                   pads=list(layer.pad) * 2, dilations=list(layer.dilation), group=int(layer.group))]


def _pool(g, layer, xs, bottoms):
    n, c, h, w = g.shape(bottoms[0])
    if len(layer.param.top) != 1:
        _fail(layer, "the MAX-pool mask top has no ONNX equivalent")
    if layer.method == _PP.STOCHASTIC:
        _fail(layer, "STOCHASTIC pooling")
    kh, kw = layer.kernel
    ph, pw = layer.pad
    sh, sw = layer.stride
    oh, ow = layer.out_hw
    if layer.global_pooling:
        return [g.node("GlobalMaxPool" if layer.method == _PP.MAX else "GlobalAveragePool", xs[:1], layer.name)]
    # end pads that make floor-mode windows land exactly on Caffe's (ceil / dropped-window) output size
    eh = max((oh - 1) * sh + kh - h - ph, 0)
    ew = max((ow - 1) * sw + kw - w - pw, 0)
    if max(ph, eh) >= kh or max(pw, ew) >= kw:
        _fail(layer, f"padding ({ph},{eh})x({pw},{ew}) is not smaller than the kernel {kh}x{kw}")
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, eh, ew])
    if layer.method == _PP.MAX:
        return [g.node("MaxPool", xs[:1], layer.name, **attrs)]
    div = ave_divisor((h, w), layer.kernel, layer.stride, layer.pad, layer.out_hw)
    avg = g.node("AveragePool", xs[:1], layer.name + "_avg", count_include_pad=1, **attrs)
    if np.all(div == kh * kw):
        return [avg]
    factor = (kh * kw / div).astype(np.float32).reshape(1, 1, oh, ow)
    return [g.node("Mul", [avg, g.const(layer.name + "_divisor", factor)], layer.name)]


def _lrn(g, layer, xs, bottoms):
    p = layer.param.lrn_param
    if p.norm_region != _LRN.ACROSS_CHANNELS:
        _fail(layer, "WITHIN_CHANNEL LRN")
    return [g.node("LRN", xs, layer.name, size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta),
                   bias=float(p.k))]


def _batchnorm(g, layer, xs, bottoms):
    p = layer.param.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        _fail(layer, "use_global_stats: false normalises with batch statistics, not exportable for inference")
    mean, var, factor = _params(layer)
    f = float(factor.reshape(-1)[0])
    scale = 0.0 if f == 0 else 1.0 / f
    c = mean.size
    shape = g.shape(bottoms[0])
    x = xs[0]
    if len(shape) < 2:
        _fail(layer, f"input of shape {shape}")
    return [g.node("BatchNormalization", [x, g.const(layer.name + "_scale", np.ones(c)),
                                          g.const(layer.name + "_bias", np.zeros(c)),
                                          g.const(layer.name + "_mean", mean * scale),
                                          g.const(layer.name + "_var", var * scale)],
                   layer.name, epsilon=float(p.eps))]


def _broadcast(arr, bshape, axis):
    axis = axis % len(bshape)
    return arr.reshape(tuple(arr.shape) + (1,) * (len(bshape) - axis - arr.ndim))


def _scale_bias(g, layer, xs, bottoms):
    if len(bottoms) != 1:
        _fail(layer, "a scale/bias taken from a second bottom")
    bshape = g.shape(bottoms[0])
    ps = _params(layer)
    if layer.type == "Scale":
        axis = layer.param.scale_param.axis
        y = g.node("Mul", [xs[0], g.const(layer.name + "_gamma", _broadcast(ps[0], bshape, axis))],
                   layer.name + ("_mul" if len(ps) > 1 else ""))
        if len(ps) > 1:
            y = g.node("Add", [y, g.const(layer.name + "_beta", _broadcast(ps[1], bshape, axis))], layer.name)
        return [y]
    axis = layer.param.bias_param.axis
    return [g.node("Add", [xs[0], g.const(layer.name + "_b", _broadcast(ps[0], bshape, axis))], layer.name)]


def _eltwise(g, layer, xs, bottoms):
    p = layer.param.eltwise_param
    if p.operation == _EW.PROD:
        return [_chain(g, "Mul", xs, layer.name)]
    if p.operation == _EW.MAX:
        return [g.node("Max", xs, layer.name)]
    coeffs = list(p.coeff)
    if coeffs and len(coeffs) != len(xs):
        _fail(layer, f"{len(coeffs)} coefficients for {len(xs)} bottoms")
    terms = []
    for i, x in enumerate(xs):
        c = coeffs[i] if coeffs else 1.0
        terms.append(x if c == 1.0 else g.node("Mul", [x, g.const(f"{layer.name}_coeff{i}", np.float32(c))],
                                                 f"{layer.name}_term{i}"))
    return [g.node("Sum", terms, layer.name)]


def _chain(g, op, xs, name):
    y = xs[0]
    for i, x in enumerate(xs[1:]):
        y = g.node(op, [y, x], name if i == len(xs) - 2 else f"{name}_{i}")
    return y


def _concat(g, layer, xs, bottoms):
    p = layer.param.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    return [g.node("Concat", xs, layer.name, axis=int(axis))]


def _softmax(g, layer, xs, bottoms):
    return [g.node("Softmax", xs, layer.name, axis=int(layer.param.softmax_param.axis))]


def _inner_product(g, layer, xs, bottoms):
    p = layer.param.inner_product_param
    bshape = g.shape(bottoms[0])
    axis = p.axis % len(bshape)
    ps = _params(layer)
    w = ps[0] if not p.transpose else ps[0].T
    flat = g.node("Flatten", xs[:1], layer.name + "_flatten", axis=int(axis)) if len(bshape) != 2 or axis != 1 \
        else xs[0]
    ins = [flat, g.const(layer.name + "_W", w)]
    if len(ps) > 1:
        ins.append(g.const(layer.name + "_b", ps[1]))
    out_shape = tuple(bshape[:axis]) + (w.shape[0],)
    y = g.node("Gemm", ins, layer.name + ("_gemm" if len(out_shape) != 2 else ""), transB=1)
    if len(out_shape) != 2:
        y = g.node("Reshape", [y, g.const(layer.name + "_shape", out_shape, np.int64)], layer.name)
    return [y]


def _relu(g, layer, xs, bottoms):
    slope = layer.param.relu_param.negative_slope
    if slope != 0:
        return [g.node("LeakyRelu", xs, layer.name, alpha=float(slope))]
    return [g.node("Relu", xs, layer.name)]


def _prelu(g, layer, xs, bottoms):
    (slope,) = _params(layer)
    bshape = g.shape(bottoms[0])
    if slope.size == 1:
        s = slope.reshape(1)
    else:
        s = _broadcast(slope, bshape, 1)
    return [g.node("PRelu", [xs[0], g.const(layer.name + "_slope", s)], layer.name)]


def _simple(op):
    def conv(g, layer, xs, bottoms):
        return [g.node(op, xs, layer.name)]
    return conv


def _elu(g, layer, xs, bottoms):
    return [g.node("Elu", xs, layer.name, alpha=float(layer.param.elu_param.alpha))]


def _affine(g, layer, x, scale, shift):
    if scale != 1.0:
        x = g.node("Mul", [x, g.const(layer.name + "_scale", np.float32(scale))], layer.name + "_scaled")
    if shift != 0.0:
        x = g.node("Add", [x, g.const(layer.name + "_shift", np.float32(shift))], layer.name + "_shifted")
    return x


def _power(g, layer, xs, bottoms):
    p = layer.param.power_param
    if p.power == 0:  # Caffe: y = 1 whatever x
        zero = g.node("Mul", [xs[0], g.const(layer.name + "_zero", np.float32(0))], layer.name + "_zero")
        return [g.node("Add", [zero, g.const(layer.name + "_one", np.float32(1))], layer.name)]
    y = _affine(g, layer, xs[0], p.scale, p.shift)
    if p.power == 1.0:
        return [g.node("Identity", [y], layer.name)]
    return [g.node("Pow", [y, g.const(layer.name + "_power", np.float32(p.power))], layer.name)]


def _exp(g, layer, xs, bottoms):
    p = layer.param.exp_param
    if p.base != -1 and p.base <= 0:
        _fail(layer, f"base {p.base}")
    ln_base = 1.0 if p.base == -1 else math.log(p.base)
    y = _affine(g, layer, xs[0], ln_base * p.scale, ln_base * p.shift)
    return [g.node("Exp", [y], layer.name)]


def _log(g, layer, xs, bottoms):
    p = layer.param.log_param
    if p.base != -1 and p.base <= 0:
        _fail(layer, f"base {p.base}")
    y = g.node("Log", [_affine(g, layer, xs[0], p.scale, p.shift)], layer.name + "_ln")
    if p.base == -1:
        return [g.node("Identity", [y], layer.name)]
    return [g.node("Mul", [y, g.const(layer.name + "_inv_ln_base", np.float32(1.0 / math.log(p.base)))],
                   layer.name)]


def _identity(g, layer, xs, bottoms):
    return [g.node("Identity", [x], t) for x, t in zip(xs, layer.param.top)]


def _reshape_to_top(g, layer, xs, bottoms):
    shape = g.shape_after[layer.name][0]
    return [g.node("Reshape", [xs[0], g.const(layer.name + "_shape", shape, np.int64)], layer.name)]


def _slice(g, layer, xs, bottoms):
    p = layer.param.slice_param
    bshape = g.shape(bottoms[0])
    axis = (p.slice_dim if p.HasField("slice_dim") else p.axis) % len(bshape)
    sizes = [s[axis] for s in g.shape_after[layer.name]]
    from onnx import helper
    outs = [g.fresh(t) for t in layer.param.top]
    g.nodes.append(helper.make_node("Split", [xs[0], g.const(layer.name + "_split", sizes, np.int64)], outs,
                                    name=layer.name, axis=int(axis)))
    return outs


def _crop(g, layer, xs, bottoms):
    starts, ends, axes = [], [], []
    for i, sl in enumerate(layer.slices):
        if sl.start is None:
            continue
        starts.append(sl.start)
        ends.append(sl.stop)
        axes.append(i)
    return [g.node("Slice", [xs[0], g.const(layer.name + "_starts", starts, np.int64),
                             g.const(layer.name + "_ends", ends, np.int64),
                             g.const(layer.name + "_axes", axes, np.int64)], layer.name)]


def _clip(g, layer, xs, bottoms):
    p = layer.param.clip_param
    return [g.node("Clip", [xs[0], g.const(layer.name + "_min", np.float32(p.min)),
                            g.const(layer.name + "_max", np.float32(p.max))], layer.name)]


# -- lookup, selection, reduction, normalisation -------------------------------------------------------

def _embed(g, layer, xs, bottoms):
    # caffessl checks that the (float) indices are integers in [0, input_dim); the graph casts them (a
    # fractional index truncates) and onnxruntime rejects an out-of-range one
    ps = _params(layer)
    idx = g.node("Cast", xs[:1], layer.name + "_index", to=_onnx_type("INT64"))
    y = g.node("Gather", [g.const(layer.name + "_W", ps[0]), idx], layer.name + ("_gather" if len(ps) > 1 else ""),
               axis=0)
    if len(ps) > 1:
        y = g.node("Add", [y, g.const(layer.name + "_b", ps[1])], layer.name)
    return [y]


def _argmax(g, layer, xs, bottoms):
    # Caffe orders ties larger index first; ONNX TopK puts the lower index first. TopK over the reversed axis
    # then maps index j back to n-1-j: the tie order of caffessl's flip + stable descending sort.
    p = layer.param.argmax_param
    bshape = g.shape(bottoms[0])
    k = int(layer.top_k)
    if layer.axis is not None:
        x, axis = xs[0], layer.axis
    else:
        x = g.node("Reshape", [xs[0], g.const(layer.name + "_flat", [bshape[0], -1], np.int64)],
                   layer.name + "_flat")
        axis = 1
    n = bshape[axis] if layer.axis is not None else math.prod(bshape[1:])
    rev = g.node("Slice", [x, g.const(layer.name + "_rs", [n - 1], np.int64),
                           g.const(layer.name + "_re", [np.iinfo(np.int64).min], np.int64),
                           g.const(layer.name + "_ra", [axis], np.int64),
                           g.const(layer.name + "_rstep", [-1], np.int64)], layer.name + "_reversed")
    from onnx import helper
    vals, ridx = g.fresh(layer.name + "_values"), g.fresh(layer.name + "_ridx")
    g.nodes.append(helper.make_node("TopK", [rev, g.const(layer.name + "_k", [k], np.int64)], [vals, ridx],
                                    name=g.fresh(layer.name + "_topk"), axis=int(axis), largest=1, sorted=1))
    idx = g.node("Sub", [g.const(layer.name + "_last", np.int64(n - 1), np.int64), ridx], layer.name + "_i64")
    idx = g.node("Cast", [idx], layer.name + "_indices", to=_onnx_type("FLOAT"))
    if layer.axis is not None:
        return [g.node("Identity", [vals if p.out_max_val else idx], layer.name)]
    one = g.const(layer.name + "_axis1", [1], np.int64)
    parts = [g.node("Unsqueeze", [idx, one], layer.name + "_ui")]
    if p.out_max_val:
        parts.append(g.node("Unsqueeze", [vals, one], layer.name + "_uv"))
    y = g.node("Concat", parts, layer.name + "_cat", axis=1) if len(parts) > 1 else parts[0]
    return [g.node("Reshape", [y, g.const(layer.name + "_shape", g.shape_after[layer.name][0], np.int64)],
                   layer.name)]


def _tile(g, layer, xs, bottoms):
    reps = [1] * len(g.shape(bottoms[0]))
    reps[layer.axis] = int(layer.tiles)
    return [g.node("Tile", [xs[0], g.const(layer.name + "_repeats", reps, np.int64)], layer.name)]


def _reduction(g, layer, xs, bottoms):
    R = caffe_pb2.ReductionParameter
    p = layer.param.reduction_param
    bshape = g.shape(bottoms[0])
    lead = tuple(bshape[:layer.axis])
    dim = math.prod(bshape[layer.axis:])
    x = g.node("Reshape", [xs[0], g.const(layer.name + "_flat", [math.prod(lead), dim], np.int64)],
               layer.name + "_flat")
    if p.operation == R.ASUM:
        x = g.node("Abs", [x], layer.name + "_abs")
    elif p.operation == R.SUMSQ:
        x = g.node("Mul", [x, x], layer.name + "_sq")
    y = g.node("ReduceSum", [x, g.const(layer.name + "_axes", [1], np.int64)], layer.name + "_sum", keepdims=0)
    coeff = p.coeff / dim if p.operation == R.MEAN else p.coeff
    if coeff != 1:
        y = g.node("Mul", [y, g.const(layer.name + "_coeff", np.float32(coeff))], layer.name + "_scaled")
    return [g.node("Reshape", [y, g.const(layer.name + "_shape", lead, np.int64)], layer.name)]


def _mvn(g, layer, xs, bottoms):
    # per row (n, or (n, c)): z = x - mean; with normalize_variance z / (sqrt(mean(z^2)) + eps), eps after sqrt
    bshape = g.shape(bottoms[0])
    rows = bshape[0] if layer.across_channels else bshape[0] * bshape[1]
    x = g.node("Reshape", [xs[0], g.const(layer.name + "_rows", [rows, -1], np.int64)], layer.name + "_rows")
    z = g.node("Sub", [x, g.node("ReduceMean", [x], layer.name + "_mean", axes=[1], keepdims=1)],
               layer.name + "_centered")
    if layer.normalize_variance:
        var = g.node("ReduceMean", [g.node("Mul", [z, z], layer.name + "_sq")], layer.name + "_var",
                     axes=[1], keepdims=1)
        d = g.node("Add", [g.node("Sqrt", [var], layer.name + "_std"),
                           g.const(layer.name + "_eps", np.float32(layer.eps))], layer.name + "_denom")
        z = g.node("Div", [z, d], layer.name + "_normalized")
    return [g.node("Reshape", [z, g.const(layer.name + "_shape", bshape, np.int64)], layer.name)]


def _threshold(g, layer, xs, bottoms):
    t = g.const(layer.name + "_threshold", np.float32(layer.param.threshold_param.threshold))
    return [g.node("Cast", [g.node("Greater", [xs[0], t], layer.name + "_gt")], layer.name,
                   to=_onnx_type("FLOAT"))]


def _onnx_type(name):
    from onnx import TensorProto
    return int(getattr(TensorProto, name))


# -- recurrent layers: unrolled over the T timesteps of the net's blob shapes ------------------------------
#
# Shared pieces: ``_split`` (a multi-output Split), ``_gemm`` (x @ W.T [+ b]) and ``_lstm_step`` (LSTMUnit's
# math on (N, 4D) gate inputs). The graph starts from the state caffessl starts from after loading (or
# ``reset()``): zeros, or h_0/c_0 with expose_hidden. caffessl's carried state across forward calls has no
# stateless ONNX equivalent; a cont of 0 at t = 0 makes the two agree whatever was carried.

def _split(g, x, n, axis, base):
    from onnx import helper
    outs = [g.fresh(f"{base}{i}") for i in range(n)]
    g.nodes.append(helper.make_node("Split", [x], outs, name=g.fresh(base + "split"), axis=int(axis)))
    return outs


def _gemm(g, x, w, b, base):
    return g.node("Gemm", [x, w] + ([b] if b is not None else []), base, transB=1)


def _lstm_step(g, base, c_prev, gates, cont):
    """c_prev (N, D), gates (N, 4D) = [i' f' o' g'], cont (N, 1) -> c, h (N, D), as caffessl's LSTMUnit:
    f = 0 where cont == 0 (even for a NaN f'), else cont * sigmoid(f'); c = f c_prev + i g; h = o tanh(c)."""
    gi, gf, go, gg = _split(g, gates, 4, 1, base + "_gate")
    i = g.node("Sigmoid", [gi], base + "_i")
    o = g.node("Sigmoid", [go], base + "_o")
    gt = g.node("Tanh", [gg], base + "_g")
    f = g.node("Mul", [cont, g.node("Sigmoid", [gf], base + "_sigf")], base + "_contf")
    zero = g.const(base + "_zero", np.float32(0))
    f = g.node("Where", [g.node("Equal", [cont, zero], base + "_reset"), zero, f], base + "_f")
    c = g.node("Add", [g.node("Mul", [f, c_prev], base + "_fc"), g.node("Mul", [i, gt], base + "_ig")],
               base + "_c")
    h = g.node("Mul", [o, g.node("Tanh", [c], base + "_tanhc")], base + "_h")
    return c, h


def _lstm_unit(g, layer, xs, bottoms):
    n, d = g.shape(bottoms[0])[1:]
    c_prev = g.node("Reshape", [xs[0], g.const(layer.name + "_nd", [n, d], np.int64)], layer.name + "_cprev")
    gates = g.node("Reshape", [xs[1], g.const(layer.name + "_n4d", [n, 4 * d], np.int64)], layer.name + "_x")
    cont = g.node("Reshape", [xs[2], g.const(layer.name + "_n1", [n, 1], np.int64)], layer.name + "_cont")
    c, h = _lstm_step(g, layer.name, c_prev, gates, cont)
    shape = g.const(layer.name + "_1nd", [1, n, d], np.int64)
    return [g.node("Reshape", [c, shape], layer.param.top[0]), g.node("Reshape", [h, shape], layer.param.top[1])]


def _recurrent(g, layer, xs, bottoms):
    name, D = layer.name, layer.D
    T, N = g.shape(bottoms[0])[:2]
    ps = _params(layer)
    W_x, b_x = g.const(name + "_W_x", ps[0]), g.const(name + "_b_x", ps[1])
    W_s = g.const(name + "_W_static", ps[2]) if layer.static else None
    W_h = g.const(name + "_W_h", ps[3 if layer.static else 2])
    # the input transform of all timesteps at once, (T*N, G), split into T (N, G) blocks; cont likewise
    x = g.node("Reshape", [xs[0], g.const(name + "_xshape", [T * N, layer.K], np.int64)], name + "_x")
    wx = _gemm(g, x, W_x, b_x, name + "_wx")
    wx = _split(g, wx, T, 0, name + "_wx") if T > 1 else [wx]
    ws = None
    if layer.static:
        s = g.node("Reshape", [xs[2], g.const(name + "_sshape", [N, -1], np.int64)], name + "_xstatic")
        ws = _gemm(g, s, W_s, None, name + "_ws")
    cont = g.node("Reshape", [xs[1], g.const(name + "_cshape", [T * N, 1], np.int64)], name + "_cont")
    cont = _split(g, cont, T, 0, name + "_cont") if T > 1 else [cont]
    if layer.expose:
        nd = g.const(name + "_nd", [N, D], np.int64)
        state = [g.node("Reshape", [v, nd], f"{name}_{s}0")
                 for v, s in zip(xs[layer.state_at:], layer.STATES)]
    else:
        log.warning("layer '%s' (%s): the ONNX graph starts every run from a zero state; caffessl (as Caffe) "
                    "carries the state between forward calls unless cont is 0 at t = 0 (expose_hidden makes the "
                    "state an input)", name, layer.type)
        zeros = g.const(name + "_zeros", np.zeros((N, D)))
        state = [zeros] * len(layer.STATES)
    hs = []
    for t in range(T):
        cont_t, wx_t = cont[t], wx[t]
        # Eltwise SUM order of the unrolled net: W_h (cont_t h), W_x x_t + b, W_static x_static
        hidden = g.node("Mul", [cont_t, state[0]], f"{name}_conth{t}")
        pre = g.node("Add", [_gemm(g, hidden, W_h, None, f"{name}_wh{t}"), wx_t], f"{name}_pre{t}")
        if ws is not None:
            pre = g.node("Add", [pre, ws], f"{name}_pres{t}")
        if layer.type == "LSTM":
            c, h = _lstm_step(g, f"{name}_{t}", state[1], pre, cont_t)
            state = [h, c]
        else:
            state = [g.node("Tanh", [pre], f"{name}_h{t}")]
        hs.append(state[0])
    H = g.node("Concat", hs, name + "_hs", axis=0) if T > 1 else hs[0]          # (T*N, D)
    if layer.type == "RNN":
        W_o, b_o = g.const(name + "_W_o", ps[-2]), g.const(name + "_b_o", ps[-1])
        H = g.node("Tanh", [_gemm(g, H, W_o, b_o, name + "_wo")], name + "_o")
    outs = [g.node("Reshape", [H, g.const(name + "_outshape", [T, N, D], np.int64)], name)]
    if layer.expose:
        one_nd = g.const(name + "_1nd", [1, N, D], np.int64)
        outs += [g.node("Reshape", [s, one_nd], top) for s, top in zip(state, layer.param.top[1:])]
    return outs


CONVERTERS = {
    "Convolution": _conv, "Deconvolution": _conv, "Pooling": _pool, "LRN": _lrn, "BatchNorm": _batchnorm,
    "Scale": _scale_bias, "Bias": _scale_bias, "Eltwise": _eltwise, "Concat": _concat, "Softmax": _softmax,
    "InnerProduct": _inner_product, "ReLU": _relu, "PReLU": _prelu, "Sigmoid": _simple("Sigmoid"),
    "TanH": _simple("Tanh"), "ELU": _elu, "AbsVal": _simple("Abs"), "BNLL": _simple("Softplus"),
    "Power": _power, "Exp": _exp, "Log": _log, "Dropout": _identity, "Split": _identity,
    "Flatten": _reshape_to_top, "Reshape": _reshape_to_top, "Slice": _slice, "Crop": _crop, "Clip": _clip,
    "Embed": _embed, "ArgMax": _argmax, "Tile": _tile, "Reduction": _reduction, "MVN": _mvn,
    "Threshold": _threshold, "LSTMUnit": _lstm_unit, "RNN": _recurrent, "LSTM": _recurrent,
}
SKIPPED = {"Input", "Silence"}


def to_onnx(net, opset: int = OPSET, outputs=None):
    """The ModelProto of ``net`` (its current input shapes and weights). ``outputs``: blob names to expose
    as graph outputs (default: the net's outputs); an in-place blob gives its final value."""
    import onnx
    from onnx import TensorProto, helper
    g = _Graph(net)
    # top shapes as the net computed them (for Reshape/Flatten/Slice targets)
    g.shape_after = {l.name: [tuple(net.blobs[t].shape) for t in l.param.top] for l in net.layers}
    inputs = []
    for name in net.inputs:
        g.names[name] = name
        g.count[name] = 1
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(net.blobs[name].shape)))
    for layer in net.layers:
        lp = layer.param
        if layer.type in SKIPPED:
            continue
        conv = CONVERTERS.get(layer.type)
        if conv is None:
            from .deploy_check import is_training_type
            if is_training_type(layer.type):
                raise ExportError(f"layer '{layer.name}' ({layer.type}): a data, loss or accuracy layer; export "
                                  f"the net built from its deploy prototxt (an Input layer, no loss)")
            raise ExportError(f"layer '{layer.name}' ({layer.type}): no ONNX export for this layer type "
                              f"(exportable: {', '.join(sorted(CONVERTERS))})")
        xs = [g.names[b] for b in lp.bottom]
        outs = conv(g, layer, xs, list(lp.bottom))
        for t, o in zip(lp.top, outs):
            g.names[t] = o
    outs = []
    for name in (outputs if outputs is not None else net.outputs):
        if name not in g.names:
            raise ExportError(f"output '{name}': no such blob in the exported graph")
        v = g.names[name]
        if v != name and name not in net.inputs:   # an in-place chain: give the final value the blob's name
            g.rename(name, g.fresh(name + "_inplace"))
            g.rename(v, name)
            v = name
        outs.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, list(net.blobs[name].shape)))
    graph = helper.make_graph(g.nodes, net.name or "caffessl_net", inputs, outs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="caffessl", ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def export(net, path, opset: int = OPSET, outputs=None):
    """Write ``net`` as an ONNX file at ``path`` (atomically); returns the ModelProto."""
    from ..io.atomic import atomic_write
    model = to_onnx(net, opset, outputs)
    atomic_write(os.fspath(path), model.SerializeToString())
    return model
