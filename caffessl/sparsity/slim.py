"""Slimming: remove zero filters and unused channels for good, giving a smaller net that computes the same.

The Python API (what ``caffessl slim`` runs)::

    from caffessl.sparsity.slim import slim, check, write
    result = slim(net)                 # net: a built caffessl.Net with its (sparse) weights; not modified
    result.producers                   # [ProducerReport]: per Convolution/InnerProduct, before/after and why
    result.to_dict()                   # the same as JSON-ready data (``caffessl slim --json``)
    diffs = check(net, result)         # both nets on one batch: max |difference| per output blob
    write(result, "slim.prototxt", "slim.caffemodel")                # unchecked; or, as the command does:
    write_checked(net, result, "slim.prototxt", "slim.caffemodel")   # check, then write; SlimCheckError
                                                                     # (nothing written) past 1e-4 relative

    from caffessl.sparsity.channels import ChannelGraph, plan        # the decision alone, nothing cut:
    p = plan(ChannelGraph(net))        # p.remove (per slot), p.why(slot), p.graph.slots(blob version)

Which channels go is decided over the whole graph (``caffessl.sparsity.channels``): channels tied by
residual Eltwise adds, Split, Concat, Slice, depthwise and grouped convolutions form groups that go or stay
as a whole; a group goes when every layer that mixes channels either does not read it or can take its
constant value (a zero filter's bias through the per-channel layers) into its bias exactly; anything else
that reads it keeps it and is named in the report. ``caffessl.sparsity.rewrite`` then cuts the weights and
the prototxt. With ``depth`` (default), residual branches whose weights are all zero first become Bias
layers (``caffessl.sparsity.depth``), then channels are removed from what remains, in the same run.

The result is exact for the phase the net was built in (TEST for deploy/inference; a TRAIN BatchNorm would
see other batch statistics) up to float rounding of the folded biases.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import CaffeSSLError
from .channels import ChannelGraph, plan, weight_rows
from ..weights_matrix import check_block
from .rewrite import rewrite


# largest |slimmed - original| output difference accepted by the check, relative to the outputs' scale
CHECK_RTOL = 1e-4


class SlimCheckError(CaffeSSLError):
    """The slimmed net's outputs differ from the original's: nothing was written."""


@dataclass
class ProducerReport:
    layer: str
    type: str
    before: int
    after: int
    unused: int = 0              # removed channels no reader used
    folded: int = 0              # removed channels whose constant went into the readers' biases
    kept_zero: int = 0           # zero filters that had to stay
    kept_why: dict = field(default_factory=dict)   # reason -> number of kept channels
    blocked_by: str | None = None                   # the first layer that keeps channels whatever their weights

    @property
    def removed(self) -> int:
        return self.before - self.after


@dataclass
class SlimResult:
    net_param: "caffe_pb2.NetParameter"    # the whole (unfiltered) net with the new shapes
    arrays: "OrderedDict[str, list]"       # layer name -> learnable blobs (numpy), Caffe order
    producers: list
    warnings: list = field(default_factory=list)   # SSL settings the new shapes no longer fit
    branches: list = field(default_factory=list)   # depth.Branch: zero residual branches now a Bias layer
    removed_layers: list = field(default_factory=list)

    @property
    def removed(self) -> int:
        return sum(p.before - p.after for p in self.producers)

    def to_dict(self) -> dict:
        return {"channels_removed": self.removed, "producers": [asdict(p) for p in self.producers],
                "branches": [asdict(b) for b in self.branches], "removed_layers": list(self.removed_layers),
                "warnings": list(self.warnings)}


def slim(net, depth: bool = True) -> SlimResult:
    """Plan and apply the slimming of ``net`` (weights loaded); the net itself is not modified. With ``depth``,
    zeroed residual branches are removed first (``caffessl.sparsity.depth``), then channels."""
    if depth:
        from .depth import drop_zero_branches
        param, arrays, branches, removed = drop_zero_branches(net)
        if branches:
            result = _slim_channels(_built(net, param, arrays))
            result.branches, result.removed_layers = branches, removed
            return result
    return _slim_channels(net)


def _built(net, param, arrays):
    """A Net of ``param`` in ``net``'s phase with ``arrays`` as its weights."""
    from ..net import Net
    other = Net(param, phase=net.phase, device=net.device, dtype=net.dtype)
    for layer in other.layers:
        with torch.no_grad():
            for t, a in zip(layer.params, arrays[layer.name]):
                t.copy_(torch.as_tensor(a).reshape(t.shape))
    return other


def _slim_channels(net) -> SlimResult:
    cg = ChannelGraph(net)
    p = plan(cg)
    param, arrays = rewrite(cg, p.remove)
    reports = [_report(cg, p, i) for i, (r, l) in enumerate(zip(cg.roles, net.layers))
               if r in ("conv", "ip", "channelwise") or (getattr(l, "sparse_modes", False) and l.params)]
    return SlimResult(param, arrays, reports, _ssl_warnings(net, arrays))


def _report(cg, p, i) -> ProducerReport:
    layer = cg.net.layers[i]
    s = cg.slots(cg.outs[i][0])
    gone, used = p.remove[s], p.used[s]
    zero = ~(weight_rows(layer) != 0).any(axis=1)
    own = f"; live filter in '{layer.name}'"                 # said of its own filters: no news
    why = Counter(p.why(x).replace(own, "") for x in s[~gone])
    blockers = [w for w in why if not w.startswith(("read by", "equal channel", "the last channel"))]
    return ProducerReport(layer.name, layer.type, int(s.size), int((~gone).sum()), int((gone & ~used).sum()),
                          int((gone & used).sum()), int((zero & ~gone).sum()), dict(why.most_common()),
                          blockers[0] if blockers else None)


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
    small = _built(net, result.net_param, result.arrays)
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


def check_report(net, result: SlimResult, rtol: float = CHECK_RTOL, seed: int = 0) -> dict:
    """:func:`check` with its verdict: {"max_abs_diff": {output: diff}, "scale", "rtol", "ok"}; ``ok`` when
    every difference is within ``rtol`` times the largest |output| of the original (at least 1)."""
    diffs = check(net, result, seed)
    scale = max([float(np.abs(net.blobs[k].data).max()) for k in diffs] + [1.0])
    from ..net import TRAIN
    drop = [l.name for l in net.layers if l.type == "Dropout" and net.phase == TRAIN]
    return {"max_abs_diff": diffs, "scale": scale, "rtol": rtol,
            "ok": max(diffs.values(), default=0.0) <= rtol * scale,
            "random": f"Dropout layer '{drop[0]}'" if drop else None}


def refuse(report: dict, phase: str = "TEST"):
    """Raise :class:`SlimCheckError` for a failed :func:`check_report`."""
    if not report["ok"]:
        worst = max(report["max_abs_diff"].values())
        hint = "" if not report.get("random") else (
            f"; {report['random']} draws random masks in the TRAIN phase, so the two nets cannot agree there: "
            f"check with --phase TEST or skip it with --no-check")
        raise SlimCheckError(f"slim: the slimmed net's outputs differ from the original's by {worst:.3g} "
                             f"(scale {report['scale']:.3g}, {phase} phase); nothing written{hint}")


def write_checked(net, result: SlimResult, model_out, weights_out, rtol: float = CHECK_RTOL) -> dict:
    """Check the slimmed net against ``net`` (its phase), then write it; raises :class:`SlimCheckError`
    and writes nothing when the check fails. Returns the check report."""
    from ..net import TEST
    report = check_report(net, result, rtol)
    refuse(report, "TEST" if net.phase == TEST else "TRAIN")
    write(result, model_out, weights_out)
    return report
