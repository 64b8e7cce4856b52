"""Channel groups of a built net: which channels can be removed together, exactly, and why the others stay.

The unit is a *slot*: one channel (axis 1) of one blob *version* (an in-place layer writes a new version of
the same name). Layers tie slots together; the connected components are the *groups* that go or stay as a
whole (a vectorized union-find: :func:`components`):

* per-channel layers (ReLU and the other neurons, Dropout, BatchNorm, per-channel Scale/Bias, PReLU, MAX/AVE
  Pooling, LRN within a channel, Split, Flatten) tie input channel c to output channel c;
* Eltwise (SUM with coefficients, PROD, MAX) ties channel c of every input and of the output, so a channel of
  a residual stage goes only if it goes in every branch and in the shortcut;
* Concat ties input i's channel c to output channel offset_i + c, Slice output j's channel c to input
  channel offset_j + c;
* a channel-wise convolution (each group reads one input channel: depthwise, with any multiplier) ties
  input channel c to the outputs of its group; its filters go with the channel.

Producers (Convolution, InnerProduct) start new slots (one per filter); *readers* mix channels (a
Convolution with channels per group > 1, an InnerProduct with axis 1) and are where a removed channel
disappears: a group goes when every reader of every slot in it either has all-zero weights on it (*unused*)
or can take its value exactly into its bias -- the value is a known constant ``v`` per slot (a zero filter's
bias, or a Scale's bias where its scale is 0, pushed through the per-channel layers, Eltwise and Concat) and the reader has no padding that would
mix ``v`` with zeros at the border (unless ``v`` is 0) and a bias term (unless its weights on the slot sum
to 0). Any other reader (Softmax, a loss, LRN across channels, Reshape, a layer this module does not know,
a net output, a layer of the other phase, a shared or multi-input convolution...) keeps every group it
reads and is named as the reason. A grouped convolution keeps the same number of channels per group (the
extra removable ones of a group stay), and every blob keeps at least one channel.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..proto import caffe_pb2

PARAMLESS = {"ReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold", "Clip",
             "Swish", "Dropout", "Split"}
PER_CHANNEL_BLOBS = {"PReLU": (0,), "BatchNorm": (0, 1), "Scale": (0, 1), "Bias": (0,)}
_POOL = caffe_pb2.PoolingParameter
_ELT = caffe_pb2.EltwiseParameter


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by the edges ``a[i]-b[i]``: each node's label is the
    smallest node of its component (label propagation with pointer jumping, all numpy)."""
    lab = np.arange(n)
    while True:
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, lab):
            return lab
        lab = new


def graph(net):
    """Blob *versions* (in-place layers write a new version of the same name): the consumers of each
    version [(layer index, bottom index)], each layer's input and output versions."""
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


def conv_form(layer) -> str | None:
    """'full' (channels per group > 1, or group 1), 'channelwise' (each group reads one channel), or None
    when the slimmer cannot reshape the layer (shared weights, several bottoms, axis != 1, no weights)."""
    if layer.type != "Convolution" or _shared(layer) or len(layer.param.bottom) != 1 or layer.axis != 1 \
            or not layer.params:
        return None
    return "channelwise" if layer.channels == layer.group and layer.group > 1 else "full"


def role(layer, block: int = 1) -> str:
    """How ``layer`` treats the channels of its bottoms: 'conv' / 'ip' (producer and reader), 'channelwise'
    (depthwise convolution), 'pass' (per channel), 'eltwise', 'concat', 'slice', 'flatten', 'silence' or
    'block'.
    ``block`` > 1: the bottom is a flattened blob (several features per channel)."""
    t, lp = layer.type, layer.param
    if t == "InnerProduct":
        return "ip" if layer.axis == 1 and not _shared(layer) and layer.params else "block"
    if t == "Convolution":
        form = conv_form(layer)
        return {"full": "conv", "channelwise": "channelwise"}.get(form, "block") if block == 1 else "block"
    if t in PARAMLESS:
        return "pass"
    if t == "Silence":                    # reads nothing that matters: any shape will do
        return "silence"
    if t == "Eltwise":
        return "eltwise"
    if t == "Flatten":
        return "flatten" if lp.flatten_param.axis == 1 and lp.flatten_param.end_axis == -1 else "block"
    if block > 1:
        return "block"
    if t in ("Scale", "Bias"):
        sp = lp.scale_param if t == "Scale" else lp.bias_param
        return "pass" if len(lp.bottom) == 1 and sp.axis == 1 and sp.num_axes == 1 else "block"
    if t in ("PReLU", "BatchNorm"):
        return "pass" if not _shared(layer) else "block"
    if t == "Pooling":
        return "pass" if lp.pooling_param.pool in (_POOL.MAX, _POOL.AVE) else "block"
    if t == "LRN":
        return "pass" if lp.lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL else "block"
    if t in ("Concat", "Slice"):
        return t.lower() if layer.axis == 1 else "block"
    return "block"


def through(layer, v: torch.Tensor, ndim: int) -> torch.Tensor:
    """The constant per channel after the per-channel ``layer`` (NaN where it is not a constant any more)."""
    t = layer.type
    nan = torch.full_like(v, float("nan"))
    if t in ("Split", "Flatten"):
        return v
    if t == "Dropout":                    # the identity at TEST; a random mask at TRAIN
        return v if layer.phase == caffe_pb2.TEST else nan
    if t == "Pooling":
        p = layer.param.pooling_param
        if p.pool == _POOL.MAX or not any(layer.pad):
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
        x = torch.nan_to_num(v, nan=0.0).reshape(shape).to(layer.dtype)
        out = layer.forward([x])[0].reshape(-1).to(v.dtype)
    varying = torch.isnan(v)                         # a non-constant stays one...
    if t == "Scale":                                 # ...unless its scale is 0 (Network Slimming's gamma):
        varying &= layer.params[0].detach().reshape(-1).to(v.device) != 0       # then it is the bias
    return torch.where(varying, nan, out)


def weight_rows(layer) -> np.ndarray:
    """A producer's weights as (filters, fan-in), a numpy view."""
    w = layer.params[0].detach().cpu().numpy()
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        return w.T
    return w.reshape(w.shape[0], -1)


def bias_of(layer) -> np.ndarray | None:
    return layer.params[1].detach().cpu().numpy() if len(layer.params) > 1 else None


def reader_sums(layer, n: int):
    """A reader's weights per input slot: (uses (n,), sums (O, n) float64) -- whether any weight on the
    slot is nonzero, and each output's weight sum over the slot's kernel/features. A grouped convolution
    is seen as its block-diagonal full matrix."""
    w = layer.params[0].detach().cpu().numpy()
    if layer.type == "InnerProduct":
        w = w.T if layer.param.inner_product_param.transpose else w        # (outputs, features)
        cols = w.reshape(w.shape[0], n, -1)
        return (cols != 0).any(axis=(0, 2)), cols.sum(axis=2, dtype=np.float64)
    g, o, cpg = layer.group, w.shape[0], w.shape[1]
    blocks = w.reshape(g, o // g, cpg, -1)
    uses = (blocks != 0).any(axis=(1, 3)).reshape(-1)
    sums = np.zeros((o, n))
    s = blocks.sum(axis=3, dtype=np.float64)                       # (g, o/g, cpg)
    for k in range(g):
        sums[k * (o // g):(k + 1) * (o // g), k * cpg:(k + 1) * cpg] = s[k]
    return uses, sums


@dataclass
class Reader:
    layer: int                 # net index
    key: tuple                 # the blob version it reads
    uses: np.ndarray           # (n,) bool
    sums: np.ndarray           # (O, n) float64
    foldable: np.ndarray       # (n,) bool: unused, or a constant it can take into its bias exactly
    why: np.ndarray            # (n,) object: why a used slot cannot be folded ('' where foldable)


class ChannelGraph:
    """The slots, their groups, the per-slot constants, readers and blockers of a built net.

    ``base[key]``/``size[key]``: slot range of a blob version; ``block[key]``: features per slot on axis 1
    (> 1 after a Flatten); ``label``: group of each slot; ``const``: the slot's constant value (NaN: not
    one); ``blocked``: [(slots, reason)]; ``readers``: [Reader]; ``balance``: per grouped convolution, its slot
    ranges per group (inputs, then outputs) that must keep equal counts; ``source``: {blob version:
    producer layer index}."""

    def __init__(self, net):
        self.net = net
        self.consumers, self.ins, self.outs = graph(net)
        self.base, self.size, self.block = {}, {}, {}
        self.roles = []
        self.n = 0
        self._edges = []
        self.blocked = []
        self.source = {}
        self.balance = []
        self.vals = {}
        self._reader_keys = []
        for i, layer in enumerate(net.layers):
            self._add_layer(i, layer)
        self.const = np.concatenate([self.vals[k] for k in self.base]) if self.base else np.zeros(0)
        a = np.concatenate([e[0] for e in self._edges]) if self._edges else np.zeros(0, int)
        b = np.concatenate([e[1] for e in self._edges]) if self._edges else np.zeros(0, int)
        self.label = components(self.n, a, b)
        self._block_outputs_and_foreign()
        self.readers = [self._reader(i, k) for i, k in self._reader_keys]

    # -- construction ------------------------------------------------------------------------------------
    def slots(self, key) -> np.ndarray:
        return np.arange(self.base[key], self.base[key] + self.size[key])

    def _new(self, key, n: int, block: int = 1):
        self.base[key], self.size[key], self.block[key] = self.n, n, block
        self.n += n

    def _tie(self, a: np.ndarray, b: np.ndarray):
        self._edges.append((a, b))

    def _block(self, key, why: str):
        self.blocked.append((self.slots(key), why))

    def _add_layer(self, i, layer):
        ins, outs = self.ins[i], self.outs[i]
        block = max([self.block[k] for k in ins], default=1)
        r = role(layer, block) if ins else "input"
        self.roles.append(r)
        vals = [torch.as_tensor(self.vals[k]) for k in ins]
        if r in ("block", "input"):
            why = f"{layer.type} layer '{layer.name}'"
            for k in ins:
                self._block(k, why)
            if getattr(layer, "sparse_modes", False):
                why += " (shared weights, several bottoms, a flattened input or axis != 1: not reshaped)"
            for t in outs:
                n = self._channels(t)
                self._new(t, n)
                self.vals[t] = np.full(n, np.nan)
                self._block(t, f"net input '{t[0]}' ({why})" if r == "input" else why)   # keeps its shape
            return
        out_vals = getattr(self, "_" + r)(i, layer, ins, outs, vals)
        for t, v in zip(outs, out_vals):
            self.vals[t] = np.asarray(v, np.float64)

    def _channels(self, key) -> int:
        shape = self.net.blobs[key[0]].shape
        return int(shape[1]) if len(shape) >= 2 else 1

    def _producer(self, i, layer, outs):
        rows = weight_rows(layer)
        self._new(outs[0], rows.shape[0])
        zero = ~(rows != 0).any(axis=1)
        bias = bias_of(layer)
        self.source[outs[0]] = i
        return zero, (bias if bias is not None else np.zeros(rows.shape[0]))

    def _conv(self, i, layer, ins, outs, vals):
        self._reader_keys.append((i, ins[0]))
        zero, bias = self._producer(i, layer, outs)
        if layer.type == "Convolution" and layer.group > 1:
            g = layer.group
            self.balance.append((layer.name, np.split(self.slots(ins[0]), g), np.split(self.slots(outs[0]), g)))
        return [np.where(zero, bias, np.nan)]

    _ip = _conv

    def _channelwise(self, i, layer, ins, outs, vals):
        zero, bias = self._producer(i, layer, outs)
        m = layer.num_output // layer.group
        self._tie(np.repeat(self.slots(ins[0]), m), self.slots(outs[0]))
        v = np.repeat(vals[0].numpy(), m)
        sums = weight_rows(layer).sum(axis=1, dtype=np.float64)
        if any(layer.pad):
            v = np.where(v == 0, v, np.nan)          # the border reads zeros
        return [np.where(zero, bias, v * sums + bias)]

    def _silence(self, i, layer, ins, outs, vals):
        return []

    def _pass(self, i, layer, ins, outs, vals):
        k = ins[0]
        res = []
        for t in outs:
            self._new(t, self.size[k], self.block[k])
            self._tie(self.slots(k), self.slots(t))
            res.append(through(layer, vals[0], len(self.net.blobs[k[0]].shape)).numpy())
        return res

    def _flatten(self, i, layer, ins, outs, vals):
        k, t = ins[0], outs[0]
        feats = int(np.prod(self.net.blobs[t[0]].shape[1:]))
        self._new(t, self.size[k], feats // self.size[k])
        self._tie(self.slots(k), self.slots(t))
        return [vals[0].numpy()]

    def _eltwise(self, i, layer, ins, outs, vals):
        t = outs[0]
        self._new(t, self.size[ins[0]], self.block[ins[0]])
        for k in ins:
            self._tie(self.slots(k), self.slots(t))
        p = layer.param.eltwise_param
        v = torch.stack(vals).numpy()
        if p.operation == _ELT.SUM:
            coeff = np.asarray(list(p.coeff) or [1.0] * len(ins))[:, None]
            return [(coeff * v).sum(axis=0)]
        if p.operation == _ELT.PROD:
            return [np.where((v == 0).any(axis=0), 0.0, v.prod(axis=0))]
        return [v.max(axis=0)]                       # MAX: NaN unless every input is a constant

    def _concat(self, i, layer, ins, outs, vals):
        t = outs[0]
        self._new(t, sum(self.size[k] for k in ins))
        start = self.base[t]
        for k in ins:
            self._tie(self.slots(k), np.arange(start, start + self.size[k]))
            start += self.size[k]
        return [np.concatenate([v.numpy() for v in vals])]

    def _slice(self, i, layer, ins, outs, vals):
        k = ins[0]
        start, res = self.base[k], []
        v = vals[0].numpy()
        for t, n in zip(outs, layer.sizes):
            self._new(t, n)
            self._tie(np.arange(start, start + n), self.slots(t))
            res.append(v[start - self.base[k]:start - self.base[k] + n])
            start += n
        return res

    def _block_outputs_and_foreign(self):
        last = {}
        for k in self.base:
            last[k[0]] = k
        for name in self.net.outputs:
            self._block(last[name], f"net output '{name}'")
        built = set(self.net.layer_dict)
        phase = caffe_pb2.Phase.Name(self.net.phase)
        for lp in self.net.net_param_full.layer:
            if lp.name in built:
                continue
            for k in self.base:
                if k[0] in lp.bottom:
                    self._block(k, f"{lp.type} layer '{lp.name}' (not in the {phase} net)")

    def _reader(self, i, key) -> Reader:
        layer = self.net.layers[i]
        n = self.size[key]
        uses, sums = reader_sums(layer, n)
        v = self.const[self.slots(key)]
        why = np.full(n, "", dtype=object)
        why[~np.isfinite(v) & uses] = "not constant"
        if layer.type == "Convolution" and any(layer.pad):
            why[(why == "") & uses & (v != 0)] = "constant, but the convolution is padded"
        if bias_of(layer) is None:
            contrib = (sums * np.nan_to_num(v)[None, :] != 0).any(axis=0)
            why[(why == "") & contrib] = "constant, but the layer has no bias term"
        return Reader(i, key, uses, sums, why == "", why)


@dataclass
class Plan:
    """Which slots go (``remove``), why each kept group stays (``reason``: {group label: text}) and whether
    some reader uses a group (``used``, per slot)."""
    graph: ChannelGraph
    remove: np.ndarray
    used: np.ndarray
    reason: dict

    def why(self, slot: int) -> str:
        return self.reason.get(int(self.graph.label[slot]), "")


def plan(cg: ChannelGraph) -> Plan:
    """Decide every group: blockers first, then readers that cannot lose or absorb a slot, then the
    equal-channels-per-group rule of grouped convolutions and one channel left in every blob."""
    lab = cg.label
    ok = np.ones(cg.n, bool)                    # indexed by group label
    reason = {}

    def keep(slots, why):
        changed = False
        for g in np.unique(lab[slots]):
            if ok[g]:
                ok[g], reason[int(g)], changed = False, why, True
        return changed

    for slots, why in cg.blocked:
        keep(slots, why)
    live = _live_sources(cg)
    used = np.zeros(cg.n, bool)
    for r in cg.readers:
        s = cg.slots(r.key)
        used[lab[s[r.uses]]] = True
        layer = cg.net.layers[r.layer]
        for why in sorted(set(r.why[~r.foldable])):
            bad = s[r.why == why]
            groups = np.unique(lab[bad])
            for g in groups[ok[groups]]:
                extra = f"; live filter in '{live[g]}'" if why == "not constant" and g in live else ""
                keep(np.array([g]), f"read by {layer.type} '{layer.name}' ({why}{extra})")
    _balance(cg, ok, keep)
    return Plan(cg, ok[lab], used[lab], reason)


def _live_sources(cg) -> dict:
    """group label -> the first producer whose filter in that group is not a constant."""
    live = {}
    for key, i in cg.source.items():
        s = cg.slots(key)
        for g in np.unique(cg.label[s[~np.isfinite(cg.const[s])]]):
            live.setdefault(int(g), cg.net.layers[i].name)
    return live


def _balance(cg, ok, keep):
    lab = cg.label
    changed = True
    while changed:
        changed = False
        for name, *sides in cg.balance:
            for blocks in sides:
                counts = [int(ok[lab[b]].sum()) for b in blocks]
                for b, c in zip(blocks, counts):
                    extra = b[ok[lab[b]]][min(counts):]
                    if extra.size:
                        changed |= keep(extra, f"equal channel counts per group in '{name}'")
        for key in cg.base:
            s = cg.slots(key)
            if s.size and ok[lab[s]].all():
                changed |= keep(s[-1:], f"the last channel of blob '{key[0]}'")
