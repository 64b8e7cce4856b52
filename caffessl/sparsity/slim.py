"""Slimming: remove zero filters and unused channels for good, giving a smaller net that computes the same.

For each *producer* (a Convolution with group 1 or an InnerProduct with axis 1, in net order) the channels of
its top are followed through the layers that act on each channel alone (*transparent*: ReLU and the other
neurons, Dropout, BatchNorm, per-channel Scale/Bias, PReLU, Pooling, LRN within a channel, Flatten, Split)
to the layers that mix them (*absorbers*: Convolution with group 1, InnerProduct with axis 1). A channel c of
the producer is removed when

* no absorber uses it (its column(s) are all zero in every absorber: SSL's channel-wise sparsity of the
  next layer), or
* its filter is all zero, so the channel is the constant bias[c] (passed through the transparent layers:
  ``v``), and each absorber that uses it can take ``v * sum of its weights on c`` into its bias exactly:
  an InnerProduct always, a Convolution when it has no padding (a padded border reads zeros, not ``v``) or
  when ``v`` is 0 (a ReLU after a non-positive bias). The layer needs a bias term for a nonzero ``v``.

Anything else that reads the channels (Concat, Eltwise, LRN across channels, Softmax, a loss, a net output,
a grouped convolution, a shared param...) keeps the producer as it is; the report says which layer stopped it.
The producer's rows, the per-channel blobs of the transparent layers (PReLU slopes, BatchNorm mean/variance,
Scale/Bias) and the absorbers' columns are sliced; ``num_output`` shrinks in the prototxt. The result is exact
for the phase the net was built in (TEST for deploy/inference; a TRAIN BatchNorm would see other batch
statistics) up to float rounding of the folded biases.
"""
from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..proto import caffe_pb2
from ..weights_matrix import check_block

NEURONS = {"ReLU", "PReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold",
           "Clip", "Swish", "Dropout", "BatchNorm", "Scale", "Bias"}
PER_CHANNEL_BLOBS = {"PReLU": (0,), "BatchNorm": (0, 1), "Scale": (0, 1), "Bias": (0,)}


@dataclass
class ProducerReport:
    layer: str
    type: str
    before: int
    after: int
    unused: int = 0              # channels no absorber reads
    folded: int = 0              # zero filters whose constant went into the absorbers' biases
    kept_zero: int = 0           # zero filters that had to stay (padding, no bias term)
    absorbers: list = field(default_factory=list)
    blocked_by: str | None = None


@dataclass
class SlimResult:
    net_param: "caffe_pb2.NetParameter"    # the whole (unfiltered) net with the new num_output values
    arrays: "OrderedDict[str, list]"       # layer name -> learnable blobs (numpy), Caffe order
    producers: list
    warnings: list = field(default_factory=list)   # SSL settings the new shapes no longer fit
    branches: list = field(default_factory=list)   # depth.Branch: zero residual branches now a Bias layer
    removed_layers: list = field(default_factory=list)

    @property
    def removed(self) -> int:
        return sum(p.before - p.after for p in self.producers)


def _graph(net):
    """Blob *versions* (in-place layers write a new version of the same name): consumers of each version,
    each layer's input/output versions."""
    version = {}
    consumers = defaultdict(list)
    ins, outs = [], []
    for i, layer in enumerate(net.layers):
        keys = [(b, version[b]) for b in layer.param.bottom]
        for j, k in enumerate(keys):
            consumers[k].append((i, j))
        ins.append(keys)
        o = []
        for t in layer.param.top:
            version[t] = version.get(t, -1) + 1
            o.append((t, version[t]))
        outs.append(o)
    return consumers, ins, outs


def _shared(layer) -> bool:
    return any(s.name for s in layer.param.param)


def _kind(layer, j: int) -> str:
    """'absorb', 'pass' or 'block' for channel data entering ``layer`` through bottom ``j``."""
    t, lp = layer.type, layer.param
    if _shared(layer):
        return "block"
    if t == "Convolution":
        ok = lp.convolution_param.group == 1 and getattr(layer, "axis", 1) == 1 and len(lp.bottom) == 1
        return "absorb" if ok else "block"
    if t == "InnerProduct":
        return "absorb" if getattr(layer, "axis", None) == 1 else "block"
    if t in ("Scale", "Bias"):
        sp = lp.scale_param if t == "Scale" else lp.bias_param
        return "pass" if len(lp.bottom) == 1 and sp.axis == 1 and sp.num_axes == 1 else "block"
    if t == "PReLU" or t in NEURONS:
        return "pass"
    if t == "Pooling":
        return "pass" if lp.pooling_param.pool in (caffe_pb2.PoolingParameter.MAX,
                                                   caffe_pb2.PoolingParameter.AVE) else "block"
    if t == "LRN":
        return "pass" if lp.lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL else "block"
    if t == "Flatten":
        return "pass" if lp.flatten_param.axis == 1 and lp.flatten_param.end_axis == -1 else "block"
    if t == "Split":
        return "pass"
    return "block"


def _through(layer, v: torch.Tensor, ndim: int) -> torch.Tensor:
    """The constant per channel after ``layer`` (NaN where it is not a constant any more)."""
    t = layer.type
    nan = torch.full_like(v, float("nan"))
    if t in ("Split", "Flatten"):
        return v
    if t == "Dropout":                    # the identity at TEST; a random mask at TRAIN
        return v if layer.phase == caffe_pb2.TEST else nan
    if t == "Pooling":
        p = layer.param.pooling_param
        if p.pool == caffe_pb2.PoolingParameter.MAX or not any(layer.pad):
            return v        # MAX ignores padding; AVE without padding divides by the cells it summed
        return torch.where(v == 0, v, nan)       # AVE counts padding cells as zeros
    if t == "LRN":
        return torch.where(v == 0, v, nan)
    if t == "BatchNorm":
        bp = layer.param.batch_norm_param
        if not (bp.use_global_stats if bp.HasField("use_global_stats") else layer.phase == caffe_pb2.TEST):
            return nan                    # batch statistics (and running a forward would update them)
    shape = (1, v.numel()) + (1,) * (ndim - 2)
    with torch.no_grad():
        out = layer.forward([v.reshape(shape).to(layer.dtype)])[0].reshape(-1).to(v.dtype)
    return torch.where(torch.isnan(v), nan, out)     # a non-constant stays one (Threshold(NaN) is 0)


def _region(net, graph, p: int):
    """Follow producer ``p``'s top to its absorbers. Returns (absorbers [(layer index, blob key)],
    transparent layer indices in net order, the blob names reached, what stopped the walk or None)."""
    consumers, _, outs = graph
    start = outs[p][0]
    stack, seen = [start], {start}
    absorbers, passes = [], []
    names = {start[0]}
    while stack:
        key = stack.pop()
        cons = consumers.get(key, [])
        if not cons:
            return absorbers, passes, names, f"net output '{key[0]}'"
        for i, j in cons:
            layer = net.layers[i]
            kind = _kind(layer, j)
            if kind == "block":
                return absorbers, passes, names, f"{layer.type} layer '{layer.name}'"
            if kind == "absorb":
                absorbers.append((i, key))
                continue
            if i not in passes:
                passes.append(i)
            for o in outs[i]:
                if o not in seen:
                    seen.add(o)
                    names.add(o[0])
                    stack.append(o)
    return absorbers, sorted(passes), names, None


def _weight_cols(arrs, layer, channels: int) -> np.ndarray:
    """An absorber's weights as (out, channels, per-channel block)."""
    w = arrs[0]
    if layer.type == "Convolution":
        return w.reshape(w.shape[0], channels, -1)
    if layer.param.inner_product_param.transpose:
        return w.T.reshape(w.shape[1], channels, -1)
    return w.reshape(w.shape[0], channels, -1)


def _set_cols(arrs, layer, channels: int, keep: np.ndarray):
    w = arrs[0]
    if layer.type == "Convolution":
        arrs[0] = np.ascontiguousarray(w[:, keep])
    elif layer.param.inner_product_param.transpose:                       # (K, N): rows are the features
        arrs[0] = np.ascontiguousarray(w.reshape(channels, -1, w.shape[1])[keep].reshape(-1, w.shape[1]))
    else:
        arrs[0] = np.ascontiguousarray(w.reshape(w.shape[0], channels, -1)[:, keep].reshape(w.shape[0], -1))


def _rows(arrs, layer) -> np.ndarray:
    """The producer's weights as (out channels, fan-in)."""
    w = arrs[0]
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        return w.T
    return w.reshape(w.shape[0], -1)


def _set_rows(arrs, layer, keep: np.ndarray):
    w = arrs[0]
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        arrs[0] = np.ascontiguousarray(w[:, keep])
    else:
        arrs[0] = np.ascontiguousarray(w[keep])
    if len(arrs) > 1:
        arrs[1] = np.ascontiguousarray(arrs[1][keep])


def _other_phase_readers(net, names) -> str | None:
    """A layer outside the built phase (e.g. a TRAIN-only head) that reads one of ``names``."""
    built = set(net.layer_dict)
    for lp in net.net_param_full.layer:
        if lp.name not in built and names.intersection(lp.bottom):
            return f"{lp.type} layer '{lp.name}' (not in the {caffe_pb2.Phase.Name(net.phase)} net)"
    return None


def slim(net, depth: bool = True) -> SlimResult:
    """Plan and apply the slimming of ``net`` (weights loaded); the net itself is not modified. With ``depth``,
    zeroed residual branches are removed first (``caffessl.sparsity.depth``), then channels."""
    if depth:
        from ..net import Net
        from .depth import drop_zero_branches
        param, arrays, branches, removed = drop_zero_branches(net)
        if branches:
            shallow = Net(param, phase=net.phase, device=net.device, dtype=net.dtype)
            for layer in shallow.layers:
                with torch.no_grad():
                    for t, a in zip(layer.params, arrays[layer.name]):
                        t.copy_(torch.as_tensor(a).reshape(t.shape))
            result = _slim_channels(shallow)
            result.branches, result.removed_layers = branches, removed
            return result
    return _slim_channels(net)


def _slim_channels(net) -> SlimResult:
    graph = _graph(net)
    _, ins, _ = graph
    arrays = OrderedDict((l.name, [p.detach().cpu().numpy().copy() for p in l.params]) for l in net.layers)
    num_output = {}
    reports = []
    for p, layer in enumerate(net.layers):
        if not layer.sparse_modes or not layer.params:
            continue
        arrs = arrays[layer.name]
        rows = _rows(arrs, layer)
        c = rows.shape[0]
        rep = ProducerReport(layer.name, layer.type, c, c)
        reports.append(rep)
        if _kind(layer, 0) != "absorb":
            rep.blocked_by = "its own form (grouped, shared params, several bottoms or axis != 1)"
            continue
        absorbers, passes, names, blocker = _region(net, graph, p)
        blocker = blocker or _other_phase_readers(net, names)
        if blocker is None and not absorbers:
            blocker = "no layer reads its channels"
        rep.absorbers = [net.layers[i].name for i, _ in absorbers]
        if blocker:
            rep.blocked_by = blocker
            continue
        # constants of the zero filters, pushed through the transparent layers (blob version -> (C,) values)
        zero = ~(rows != 0).any(axis=1)
        bias = arrs[1] if len(arrs) > 1 else np.zeros(c, np.float32)
        vals = {graph[2][p][0]: torch.as_tensor(np.where(zero, bias, np.nan), dtype=torch.float64)}
        for i in passes:                  # net order: a layer's input constant is known before it runs
            key = next(k for k in ins[i] if k in vals)
            v = _through(net.layers[i], vals[key], len(net.blobs[key[0]].shape))
            for o in graph[2][i]:
                vals[o] = v
        used = np.zeros(c, bool)
        foldable = zero.copy()
        folds = []
        for i, key in absorbers:
            a = net.layers[i]
            cols = _weight_cols(arrays[a.name], a, c)                          # (O, C, block)
            uses = (cols != 0).any(axis=(0, 2))
            used |= uses
            v = vals[key].numpy()
            contrib = cols.sum(axis=2) * np.nan_to_num(v)[None, :]            # (O, C): v * sum of its weights
            ok = np.isfinite(v) | ~uses
            if a.type == "Convolution" and any(a.pad):
                ok &= (v == 0) | ~uses
            if len(arrays[a.name]) < 2:                                        # no bias term to fold into
                ok &= ~(contrib != 0).any(axis=0)
            foldable &= ok
            folds.append((a, contrib))
        remove = ~used | foldable
        if remove.all():
            remove[0] = False          # a layer keeps at least one output (num_output > 0)
        keep = np.flatnonzero(~remove)
        rep.unused = int((~used & remove).sum())
        rep.folded = int((used & remove).sum())
        rep.kept_zero = int((zero & ~remove).sum())
        rep.after = keep.size
        if keep.size == c:
            continue
        folded = used & remove
        for a, contrib in folds:
            if folded.any() and len(arrays[a.name]) > 1:
                arrays[a.name][1] = (arrays[a.name][1] + contrib[:, folded].sum(axis=1)).astype(np.float32)
            _set_cols(arrays[a.name], a, c, keep)
        _set_rows(arrs, layer, keep)
        for i in passes:
            t = net.layers[i]
            for j in PER_CHANNEL_BLOBS.get(t.type, ()):
                b = arrays[t.name]
                if j < len(b) and b[j].shape == (c,):
                    b[j] = np.ascontiguousarray(b[j][keep])
        num_output[layer.name] = keep.size
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.net_param_full)
    for lp in out.layer:
        if lp.name in num_output:
            sub = lp.convolution_param if lp.type == "Convolution" else lp.inner_product_param
            sub.num_output = num_output[lp.name]
    return SlimResult(out, arrays, reports, _ssl_warnings(net, arrays))


def _ssl_warnings(net, arrays) -> list:
    """Training settings of reshaped layers that no longer fit: block group Lasso specs that stop tiling the
    weight matrix (training would refuse them) and element-wise ``decay_proto`` files of the old shape."""
    out = []
    for layer in net.layers:
        new = arrays[layer.name]
        for j, (p, a) in enumerate(zip(layer.params, new)):
            if tuple(p.shape) == a.shape or j >= len(layer.param.param):
                continue
            spec = layer.param.param[j]
            for b in spec.block_group_lasso:
                why = check_block(a.shape, b.ydimen, b.xdimen)
                if why:
                    out.append(f"layer '{layer.name}' param {j}: {why}; edit its block_group_lasso before "
                               f"training the slimmed net")
            if spec.decay_proto:
                out.append(f"layer '{layer.name}' param {j}: decay_proto '{spec.decay_proto}' holds "
                           f"{tuple(p.shape)} multipliers, the slimmed blob is {a.shape}")
    return out


def param_count(arrays) -> int:
    return sum(math.prod(a.shape) for arrs in arrays.values() for a in arrs)


def write(result: SlimResult, model_out, weights_out) -> None:
    """The slimmed prototxt and caffemodel (each written to a temporary file and renamed)."""
    from ..io.caffemodel import write_caffemodel
    from ..io.prototxt import write_prototxt
    write_prototxt(model_out, result.net_param)
    write_caffemodel(weights_out, result.net_param, result.arrays)


def check(net, result: SlimResult, seed: int = 0) -> dict:
    """Run ``net`` and the slimmed net on the same batch; the largest |difference| per output blob.

    Inputs: random normal data in the Input blobs; the data layers' tops of ``net`` (one batch from its
    sources) copied into the slimmed net, which then runs from its first non-data layer."""
    from ..net import Net
    small = Net(result.net_param, phase=net.phase)
    for layer in small.layers:
        with torch.no_grad():
            for p, a in zip(layer.params, result.arrays[layer.name]):
                p.copy_(torch.as_tensor(a).reshape(p.shape))
    gen = np.random.default_rng(seed)
    feeds = {}
    for name in net.inputs:
        feeds[name] = gen.standard_normal(net.blobs[name].shape).astype(np.float32)
    with torch.no_grad():
        ref = net.forward(**feeds)
        data_tops = [t for l in net.layers if l.is_data for t in l.param.top]
        first = next((l.name for l in small.layers if not l.is_data), None)
        for t in data_tops:
            small.blobs[t].reshape(*net.blobs[t].shape)
            small.blobs[t].data[...] = net.blobs[t].data
        got = small.forward(start=first, **feeds)
    return {k: float(np.abs(np.asarray(got[k], np.float64) - ref[k]).max()) if np.size(ref[k]) else 0.0
            for k in ref if k in got}
