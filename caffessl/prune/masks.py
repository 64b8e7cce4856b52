"""Channel masks (Yang et al. 2019): ``insert_masks`` puts a per-channel Scale (no bias, gamma = 1, L1 through
the param's ``regularization_type: "L1"`` and ``decay_mult``) right after each chosen producer, in place on
its top. After training, ``prune(net, "mask-threshold", t)`` removes the channels whose |m| <= t and absorbs
the other masks into the producer's weights and bias exactly (W[c] *= m[c], b[c] *= m[c]), dropping the mask
layers from the fine-tuning net."""
from __future__ import annotations

import numpy as np

from ..errors import PruneError
from ..proto import caffe_pb2
from .channels import channel_flow, is_producer

MASK_SUFFIX = "_mask"


def mask_layer_param(producer_lp, decay_mult: float) -> "caffe_pb2.LayerParameter":
    lp = caffe_pb2.LayerParameter()
    lp.name = producer_lp.name + MASK_SUFFIX
    lp.type = "Scale"
    lp.bottom.append(producer_lp.top[0])
    lp.top.append(producer_lp.top[0])
    spec = lp.param.add()
    spec.lr_mult = 1
    spec.decay_mult = decay_mult
    spec.regularization_type = "L1"
    lp.scale_param.bias_term = False
    lp.scale_param.filler.type = "constant"
    lp.scale_param.filler.value = 1
    return lp


def insert_masks(net, layers=None, decay_mult: float = 1.0):
    """(NetParameter with a mask after each chosen producer, {layer: arrays} for a caffemodel: ``net``'s
    weights plus masks of ones). Default: every producer whose channels can be removed."""
    chosen = list(layers or [])
    for name in chosen:
        if name not in net.layer_dict:
            raise PruneError(f"--layers: no layer named '{name}' in net '{net.name}'")
    producers = []
    for i, layer in enumerate(net.layers):
        if not is_producer(layer) or (chosen and layer.name not in chosen):
            continue
        flow = channel_flow(net, i)
        if flow.blocker:
            if layer.name in chosen:
                raise PruneError(f"layer '{layer.name}': cannot mask its channels: {flow.blocker}")
            continue
        producers.append(layer.name)
    if not producers:
        raise PruneError(f"--insert-masks: no layer of net '{net.name}' has channels a mask could remove")
    existing = {lp.name for lp in net.net_param_full.layer}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.net_param_full)
    del out.layer[:]
    arrays = {l.name: [p.detach().cpu().numpy() for p in l.params] for l in net.layers}
    for lp in net.net_param_full.layer:
        out.layer.add().CopyFrom(lp)
        if lp.name in producers and lp.name in net.layer_dict:
            m = mask_layer_param(lp, decay_mult)
            if m.name in existing:
                raise PruneError(f"layer '{lp.name}' already has a layer named '{m.name}' (masks inserted twice?)")
            m.include.extend(lp.include)
            m.exclude.extend(lp.exclude)
            out.layer.add().CopyFrom(m)
            c = net.blobs[lp.top[0]].shape[1]
            arrays[m.name] = [np.ones(c, np.float32)]
    return out, arrays, producers
