"""Connectivity masks for fine-tuning (LayerParameter.connectivity_mode; Layer::WeightAlign -> Blob::Disconnect).

Built when trained weights are *loaded* into a Convolution, Deconvolution or InnerProduct layer whose
``connectivity_mode`` is not CONNECTED (filler-initialised nets ignore the mode). The weight blob is zeroed
at the threshold first (|w| < 1e-4 -> 0), then:

* DISCONNECTED_ELTWISE: mask = (w != 0) -- every zero weight is frozen;
* DISCONNECTED_GRPWISE: per conv group, mask[r, c] = (row r has a nonzero) and (column c has a nonzero) --
  only weights lying in an all-zero row or column are frozen, isolated zeros keep training.

The mask multiplies the final update of the weight (caffessl.solver.stabilize.Stabilizer), never the
momentum history, the forward or the backward. Only the weights (blob 0) get one; it is never serialized.
The fork builds masks only from binaryproto caffemodels; caffessl builds them for HDF5 weights too.
"""
from __future__ import annotations

import logging

import torch

from ..proto import caffe_pb2
from .matrix import as_matrix, conv_groups, nonzero_rows_cols

log = logging.getLogger("caffessl")

MASKED_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
_Mode = caffe_pb2.LayerParameter


def connectivity_mask(w: torch.Tensor, mode: int, groups: int = 1) -> torch.Tensor | None:
    """The 0/1 mask (dtype of ``w``) of a weight that has already been zeroed at the threshold."""
    if mode == _Mode.CONNECTED:
        return None
    m = as_matrix(w.detach())
    if mode == _Mode.DISCONNECTED_ELTWISE:
        keep = m != 0
    elif mode == _Mode.DISCONNECTED_GRPWISE:
        r, c = m.shape
        rows, cols = nonzero_rows_cols(m, groups)                 # (g, R/g), (g, C)
        keep = (rows.unsqueeze(2) & cols.unsqueeze(1)).reshape(r, c)
    else:
        raise ValueError(f"unknown connectivity_mode {mode}")
    return keep.to(w.dtype).reshape(w.shape)


def disconnect_layer(net, layer, threshold: float) -> None:
    """After loading weights into ``layer``: apply its connectivity_mode (zero, then record the mask in
    ``net.connectivity_masks[layer.name]``). Layers of other types, or CONNECTED, are left alone."""
    lp = layer.param
    if lp.type not in MASKED_TYPES or not layer.params:
        return
    masks = net.__dict__.setdefault("connectivity_masks", {})
    mode = lp.connectivity_mode
    if mode == _Mode.CONNECTED:
        masks.pop(layer.name, None)
        return
    w = layer.params[0]
    with torch.no_grad():
        w.masked_fill_(w.abs() < threshold, 0)
    groups = conv_groups(lp) if lp.type != "InnerProduct" else 1
    masks[layer.name] = connectivity_mask(w, mode, groups)
    if mode == _Mode.DISCONNECTED_ELTWISE:
        log.info("all zero weights of %s are frozen", layer.name)
    else:
        log.info("weights lying in all-zero groups of %s are frozen", layer.name)
