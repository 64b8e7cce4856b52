"""Where a layer's output channels go, and removing some of them in place (the weights stay their shape).

A *producer* (Convolution with group 1, InnerProduct with axis 1) writes C channels. They pass through layers
that act on each channel alone (*passes*: neurons, BatchNorm, per-channel Scale/Bias, Pooling MAX/AVE, LRN
within a channel, Flatten, Split, Dropout) to the layers that mix them (*absorbers*: Convolution group 1,
InnerProduct axis 1). Anything else reading them (a loss, Eltwise, Concat, a net output) *blocks*: the
producer's channels cannot be removed.

Removing channel c of a producer zeroes its filter row and bias, the per-channel scale/shift of the passes
(Scale, Bias) and the absorbers' columns reading c. What the channel carried once its filter is gone is a
constant (its bias pushed through the passes, ``v``); each absorber takes ``v * (sum of its weights on c)``
into its bias first, so the net computes what it computed with the filter zeroed (exact when the absorber
has a bias and no padding, or ``v`` is 0; the report counts the channels where that was not possible).
With the absorbers' columns at zero, nothing downstream reads the channel: fine-tuning gives its filter,
bias, scale and shift a zero gradient, and ``connectivity_mode: DISCONNECTED_GRPWISE`` on the producer and
absorbers freezes the zero rows and columns against weight decay and momentum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..proto import caffe_pb2

PRODUCER_TYPES = ("Convolution", "InnerProduct")
_NEURONS = {"ReLU", "PReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold",
            "Clip", "Swish", "BatchNorm", "Scale", "Bias"}
_IDENTITY = {"Split", "Flatten", "Dropout"}
_Pool = caffe_pb2.PoolingParameter


@dataclass
class Flow:
    producer: int                                   # layer index
    passes: list = field(default_factory=list)      # layer indices, net order
    absorbers: list = field(default_factory=list)   # layer indices
    blocker: str | None = None                      # what stops removal, or None


def _role(layer) -> str:
    """'absorb', 'pass' or 'block' for channel data entering ``layer``."""
    t, lp = layer.type, layer.param
    if any(s.name for s in lp.param):
        return "block"                              # shared params: another layer sees the same weights
    if t == "Convolution":
        return "absorb" if lp.convolution_param.group == 1 and len(lp.bottom) == 1 and \
            lp.convolution_param.axis == 1 else "block"
    if t == "InnerProduct":
        return "absorb" if lp.inner_product_param.axis == 1 else "block"
    if t in ("Scale", "Bias"):
        sp = lp.scale_param if t == "Scale" else lp.bias_param
        return "pass" if len(lp.bottom) == 1 and sp.axis == 1 and sp.num_axes == 1 else "block"
    if t == "Pooling":
        return "pass" if lp.pooling_param.pool in (_Pool.MAX, _Pool.AVE) else "block"
    if t == "LRN":
        return "pass" if lp.lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL else "block"
    if t == "Flatten":
        return "pass" if lp.flatten_param.axis == 1 and lp.flatten_param.end_axis == -1 else "block"
    return "pass" if t in _NEURONS or t in _IDENTITY else "block"


def is_producer(layer) -> bool:
    return layer.type in PRODUCER_TYPES and bool(layer.params) and _role(layer) == "absorb"


def channel_flow(net, p: int) -> Flow:
    """Follow producer ``p``'s top through the passes to the absorbers (net order, in-place layers included)."""
    flow = Flow(p)
    live = {net.layers[p].param.top[0]}
    for i in range(p + 1, len(net.layers)):
        layer = net.layers[i]
        reads = live.intersection(layer.param.bottom)
        if not reads:
            live.difference_update(layer.param.top)          # a blob name rewritten by an unrelated layer
            continue
        role = _role(layer)
        if role == "block":
            flow.blocker = f"{layer.type} layer '{layer.name}' reads its channels"
            return flow
        if role == "absorb":
            flow.absorbers.append(i)
            live.difference_update(layer.param.top)
        else:
            flow.passes.append(i)
            live.update(layer.param.top)
    built = set(net.layer_dict)
    other = next((lp for lp in net.net_param_full.layer if lp.name not in built and live.intersection(lp.bottom)),
                 None)
    if live.intersection(net.outputs):
        flow.blocker = f"its channels are the net output '{sorted(live.intersection(net.outputs))[0]}'"
    elif other is not None:
        flow.blocker = f"{other.type} layer '{other.name}' (other phase) reads its channels"
    elif not flow.absorbers:
        flow.blocker = "no Convolution or InnerProduct layer reads its channels"
    return flow


def _constant_through(layer, v: torch.Tensor, ndim: int) -> torch.Tensor:
    """The per-channel constant after ``layer`` given constant ``v`` before it (NaN: not a constant)."""
    t = layer.type
    if t in ("Split", "Flatten") or (t == "Dropout" and layer.phase == caffe_pb2.TEST):
        return v
    if t == "Pooling":
        p = layer.param.pooling_param
        return v if p.pool == _Pool.MAX or not any(layer.pad) else torch.where(v == 0, v, torch.nan)
    if t == "LRN":
        return torch.where(v == 0, v, torch.nan)
    if t == "Dropout" or (t == "BatchNorm" and layer.phase != caffe_pb2.TEST):
        return torch.full_like(v, torch.nan)
    shape = (1, v.numel()) + (1,) * (ndim - 2)
    with torch.no_grad():
        out = layer.forward([torch.nan_to_num(v).reshape(shape).to(layer.dtype)])[0].reshape(-1).to(v.dtype)
    return torch.where(torch.isnan(v), v, out)


def absorber_columns(layer, w: torch.Tensor, channels: int) -> torch.Tensor:
    """An absorber's weight viewed as (outputs, channels, positions per channel) -- a view of ``w``."""
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        return w.t().reshape(w.shape[1], channels, -1)       # (K, N) -> a strided view
    return w.reshape(w.shape[0], channels, -1)


def producer_rows(layer, w: torch.Tensor) -> torch.Tensor:
    if layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
        return w.t()
    return w.reshape(w.shape[0], -1)


def remove_channels(net, flow: Flow, remove: np.ndarray) -> int:
    """Remove the channels where ``remove`` (bool, (C,)) is True, folding their constant into the absorbers'
    biases. Returns how many removed channels could not be folded exactly."""
    prod = net.layers[flow.producer]
    c = remove.size
    idx = torch.as_tensor(np.flatnonzero(remove), dtype=torch.long)
    if idx.numel() == 0:
        return 0
    with torch.no_grad():
        rows = producer_rows(prod, prod.params[0])
        rows[idx] = 0
        bias = prod.params[1] if len(prod.params) > 1 else None
        v = torch.zeros(c, dtype=torch.float64) if bias is None else bias.detach().double().cpu().clone()
        ndim = len(net.blobs[prod.param.top[0]].shape)
        for i in flow.passes:
            v = _constant_through(net.layers[i], v, ndim)
        v = torch.where(torch.as_tensor(remove), v, torch.zeros_like(v))
        unfolded = torch.zeros(c, dtype=torch.bool)
        for i in flow.absorbers:
            a = net.layers[i]
            cols = absorber_columns(a, a.params[0], c)                    # (O, C, positions)
            used = (cols[:, idx] != 0).any(dim=2).any(dim=0)
            vi = v[idx]
            padded = a.type == "Convolution" and any(a.pad)
            ok = ~used | (vi == 0) | (torch.isfinite(vi) & (len(a.params) > 1) & (not padded))
            unfolded[idx[~ok]] = True
            fold = torch.where(ok & torch.isfinite(vi), vi, torch.zeros_like(vi))
            if len(a.params) > 1 and bool((fold != 0).any()):
                add = (cols[:, idx].double().sum(dim=2) * fold[None, :]).sum(dim=1)
                a.params[1].add_(add.to(a.params[1].dtype).reshape(a.params[1].shape))
            cols[:, idx] = 0
        if bias is not None:
            bias[idx] = 0
        for i in flow.passes:
            layer = net.layers[i]
            if layer.type in ("Scale", "Bias"):              # the removed channels' scale and shift
                for p in layer.params:
                    if p.dim() == 1 and p.numel() == c:
                        p[idx] = 0
    return int(unfolded.sum())
