"""Depth slimming: residual branches that SSL's depth-wise group Lasso zeroed become one Bias layer.

A two-input Eltwise SUM whose input j comes from a Convolution/InnerProduct with *all* weights zero, through
per-channel layers only (BatchNorm, Scale, ReLU... as in ``slim``), adds a constant per channel ``v`` (the
producer's bias pushed through those layers) to its other input. The branch from the zero producer to the
Eltwise is removed, the Eltwise becomes a ``Bias`` layer (same name and top) adding ``coeff_j * v`` to the other
input, and the layers that only fed the removed branch (the block's first convolution and its BatchNorm/Scale/
ReLU) are removed with it. ResNet-20 with depth SSL: each zeroed block is one per-channel add.

A branch stays when its blobs are read by anything else (also a layer of the other phase), when the other
input is scaled (``coeff`` != 1) or when a constant is not exact (e.g. AVE pooling with padding in between).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..proto import caffe_pb2
from .slim import _graph, _kind, _through

_SUM = caffe_pb2.EltwiseParameter.SUM


@dataclass
class Branch:
    eltwise: str          # the Eltwise layer, now a Bias layer
    producer: str         # the all-zero layer that rooted the branch
    chain: list           # the branch's layers, producer first, Eltwise excluded


def _branch(net, graph, e: int, j: int):
    """Layers (net indices, producer first) from an all-zero producer to Eltwise ``e``'s input ``j``, each
    read only by the next; None if there is no such chain."""
    consumers, ins, outs = graph
    producer_of = {k: i for i, o in enumerate(outs) for k in o}
    chain, key = [], ins[e][j]
    while True:
        i = producer_of.get(key)
        if i is None or len(consumers.get(key, [])) != 1 or len(outs[i]) != 1:
            return None
        layer = net.layers[i]
        chain.append(i)
        if layer.sparse_modes:
            w = layer.params[0] if layer.params else None
            if w is None or bool((w != 0).any()) or len(layer.param.bottom) != 1:
                return None
            return chain[::-1]
        if _kind(layer, 0) != "pass" or len(ins[i]) != 1 or layer.type == "Split":
            return None
        key = ins[i][0]


def _constant(net, graph, chain) -> torch.Tensor:
    _, ins, outs = graph
    p = net.layers[chain[0]]
    c = p.params[0].shape[1] if p.type == "InnerProduct" and p.param.inner_product_param.transpose \
        else p.params[0].shape[0]
    v = p.params[1].detach().double() if len(p.params) > 1 else torch.zeros(c, dtype=torch.float64)
    for i in chain[1:]:
        v = _through(net.layers[i], v, len(net.blobs[ins[i][0][0]].shape))
    return v


def _live_names(layers, outputs) -> set:
    """Blob names read by a layer that does not also write them (in-place layers read their own top), plus
    the net outputs."""
    live = set(outputs)
    for lp in layers:
        live.update(b for b in lp.bottom if b not in lp.top)
    return live


def drop_zero_branches(net):
    """(new NetParameter, arrays, [Branch], [removed layer names]) with every removable zero residual branch replaced; the net itself
    is not modified. Layers of the other phase count as readers."""
    graph = _graph(net)
    arrays = OrderedDict((l.name, [p.detach().cpu().numpy().copy() for p in l.params]) for l in net.layers)
    built = set(net.layer_dict)
    foreign = {b for lp in net.net_param_full.layer if lp.name not in built for b in lp.bottom}
    replace, removed, branches = {}, set(), []
    for e, layer in enumerate(net.layers):
        ep = layer.param.eltwise_param
        if layer.type != "Eltwise" or ep.operation != _SUM or len(layer.param.bottom) != 2:
            continue
        coeff = list(ep.coeff) or [1.0, 1.0]
        for j in (0, 1):
            chain = _branch(net, graph, e, j)
            if chain is None or coeff[1 - j] != 1.0:
                continue
            names = {t for i in chain for t in net.layers[i].param.top}
            if names & foreign:
                continue
            v = _constant(net, graph, chain)
            if not bool(torch.isfinite(v).all()):
                continue
            bias = caffe_pb2.LayerParameter(name=layer.name, type="Bias", bottom=[layer.param.bottom[1 - j]],
                                            top=list(layer.param.top))
            bias.bias_param.axis, bias.bias_param.num_axes = 1, 1
            replace[layer.name] = bias
            arrays[layer.name] = [(coeff[j] * v).numpy().astype(np.float32)]
            gone = [net.layers[i].name for i in chain]
            removed.update(gone)
            branches.append(Branch(layer.name, gone[0], gone))
            break
    if not branches:
        return net.net_param_full, arrays, [], []
    # layers that fed only the removed branches: live before, dead after (in this phase and the full net)
    full = [replace.get(lp.name, lp) for lp in net.net_param_full.layer if lp.name not in removed]
    outputs = set(net.outputs)
    while True:
        live = _live_names(full, outputs)
        dead = [lp for lp in full if lp.name in built and lp.bottom and not set(lp.top) & live
                and lp.name not in replace]
        if not dead:
            break
        removed.update(lp.name for lp in dead)
        full = [lp for lp in full if lp.name not in removed]
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.net_param_full)
    del out.layer[:]
    out.layer.extend(full)
    for name in removed:
        arrays.pop(name, None)
    return out, arrays, branches, [n for n in net.layer_dict if n in removed]
