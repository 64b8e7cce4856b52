"""Apply a channel plan (``caffessl.sparsity.channels.plan``): the smaller NetParameter and its weights.

Per layer of the built net: a producer loses the rows of its removed filters (``num_output`` shrinks; a
channel-wise convolution's ``group`` with it); a reader first takes the constants of the removed slots it
used into its bias (``bias += sum over removed slots of v * its weights on the slot``), then loses those
columns (per group for a grouped convolution, per feature block after a Flatten); BatchNorm/Scale/Bias/PReLU
lose the entries of their per-channel blobs; a Slice gets new ``slice_point`` values. Concat, Eltwise,
Split and the neurons need nothing: their shapes follow.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..proto import caffe_pb2
from .channels import PER_CHANNEL_BLOBS, ChannelGraph


def arrays_of(net) -> "OrderedDict[str, list]":
    return OrderedDict((l.name, [p.detach().cpu().numpy().copy() for p in l.params]) for l in net.layers)


def _cut_rows(arrs, layer, keep):
    w = arrs[0]
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        arrs[0] = np.ascontiguousarray(w[:, keep])
    else:
        arrs[0] = np.ascontiguousarray(w[keep])
    if len(arrs) > 1:
        arrs[1] = np.ascontiguousarray(arrs[1][keep])


def _cut_cols(arrs, layer, n, keep):
    w = arrs[0]
    if layer.type == "InnerProduct":
        if layer.param.inner_product_param.transpose:                  # (K, N): rows are the features
            arrs[0] = np.ascontiguousarray(w.reshape(n, -1, w.shape[1])[keep].reshape(-1, w.shape[1]))
        else:
            arrs[0] = np.ascontiguousarray(w.reshape(w.shape[0], n, -1)[:, keep].reshape(w.shape[0], -1))
        return
    g = layer.group
    o = w.shape[0] // g
    per = keep.reshape(g, -1)                                          # equal kept counts per group
    arrs[0] = np.ascontiguousarray(np.concatenate([w[k * o:(k + 1) * o][:, per[k]] for k in range(g)]))


def _fold(arrs, reader, v, removed):
    """Add the removed slots' constants times the reader's weights on them to its bias."""
    gone = removed & reader.uses
    if gone.any() and len(arrs) > 1:
        add = (reader.sums[:, gone] * v[gone][None, :]).sum(axis=1)
        arrs[1] = (arrs[1].astype(np.float64) + add).astype(arrs[1].dtype)


def rewrite(cg: ChannelGraph, remove: np.ndarray):
    """(NetParameter, arrays) of the slim net: ``remove`` says per slot of ``cg`` which channels go."""
    net = cg.net
    arrays = arrays_of(net)
    readers = {r.layer: r for r in cg.readers}
    edits = {}
    for i, layer in enumerate(net.layers):
        role, arrs = cg.roles[i], arrays[layer.name]
        ins, outs = cg.ins[i], cg.outs[i]
        if role in ("conv", "ip"):
            gone = remove[cg.slots(ins[0])]
            if gone.any():
                _fold(arrs, readers[i], cg.const[cg.slots(ins[0])], gone)
                _cut_cols(arrs, layer, cg.size[ins[0]], ~gone)
        if role in ("conv", "ip", "channelwise"):
            keep = ~remove[cg.slots(outs[0])]
            if not keep.all():
                _cut_rows(arrs, layer, keep)
                edits[layer.name] = _num_output(layer, int(keep.sum()))
        elif role == "pass":
            keep = ~remove[cg.slots(ins[0])]
            for j in PER_CHANNEL_BLOBS.get(layer.type, ()):
                if j < len(arrs) and arrs[j].shape == (keep.size,):
                    arrs[j] = np.ascontiguousarray(arrs[j][keep])
        elif role == "slice":
            kept = [int((~remove[cg.slots(t)]).sum()) for t in outs]
            if kept != [cg.size[t] for t in outs]:
                edits[layer.name] = _slice_points(np.cumsum(kept)[:-1])
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.net_param_full)
    for lp in out.layer:
        if lp.name in edits:
            edits[lp.name](lp)
    return out, arrays


def _num_output(layer, n: int):
    def edit(lp):
        if lp.type == "Convolution":
            if layer.group > 1:                        # channel-wise: one group per remaining channel
                lp.convolution_param.group = n // (layer.num_output // layer.group) if \
                    layer.channels == layer.group else layer.group
            lp.convolution_param.num_output = n
        else:
            lp.inner_product_param.num_output = n
    return edit


def _slice_points(points):
    def edit(lp):
        del lp.slice_param.slice_point[:]
        lp.slice_param.slice_point.extend(int(p) for p in points)
    return edit
