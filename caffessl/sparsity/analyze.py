"""The SSL fork's ``examples/sparsity_analyzer.py`` as a library: how sparse, and how structured, a tuned model
is, layer by layer -- and its weights with the small entries set to exactly 0 (``<tuned>_zerout.caffemodel``).

For every Convolution and InnerProduct layer (in net order; Deconvolution is not analysed, as in the fork):

* the fraction of weights (param 0) with ``|w| < threshold`` in the tuned model and, when given, the original
  model (the fork's ``r_width = 0.0001``, which is caffessl's schema default zero threshold);
* the tuned weights after the fork's ``zero_out`` (``|w| < threshold`` -> 0), and per conv group gi the
  (R/g) x C matrix of rows ``[gi*R/g, (gi+1)*R/g)`` of the fork's 2-D view (InnerProduct: the whole matrix):
  its column, row and element sparsity, the estimated speedup ``1 / ((1 - col) (1 - row))``, the per-column
  nonzero ratios (the fork's plot), and for each ``block_group_lasso`` spec of the layer's *first* ParamSpec
  the fraction of all-zero ``ydimen x xdimen`` tiles of that per-group matrix.

All sparsities are fractions in [0, 1] (the fork prints them with ``{:.1%}``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import CaffeSSLError, LayerConfigError, WeightsError
from ..proto import caffe_pb2
from ..weights_matrix import as_matrix, check_block, conv_groups, matrix_flops, tile_nonzero, zerout_


def default_threshold() -> float:
    """The fork's zero threshold (ZEROUT_THRESHOLD = the analyzer's ``r_width`` = 1e-4), as caffessl's schema
    default ``SSLStabilizeParameter.zerout_threshold`` holds it."""
    return float(caffe_pb2.SSLStabilizeParameter().zerout_threshold)


# -- results ---------------------------------------------------------------------------------------

@dataclass
class BlockSparsity:
    """All-zero ``ydimen x xdimen`` tiles of one conv group's matrix, for one BlockGroupLassoSpec."""
    xdimen: int
    ydimen: int
    zero_blocks: int
    blocks: int

    @property
    def sparsity(self) -> float:
        return self.zero_blocks / self.blocks if self.blocks else 0.0

    def to_dict(self) -> dict:
        return {"xdimen": self.xdimen, "ydimen": self.ydimen, "zero_blocks": self.zero_blocks,
                "blocks": self.blocks, "sparsity": self.sparsity}


@dataclass
class GroupSparsity:
    """One conv group's (R/g) x C matrix of the zeroed-out tuned weights."""
    group: int
    rows: int
    cols: int
    zero_rows: int
    zero_cols: int
    zeros: int
    col_nonzero_ratio: np.ndarray     # per column, in column order: fraction of the column's |w| >= threshold
    blocks: list[BlockSparsity] = field(default_factory=list)

    @property
    def col_sparsity(self) -> float:
        return self.zero_cols / self.cols if self.cols else 0.0

    @property
    def row_sparsity(self) -> float:
        return self.zero_rows / self.rows if self.rows else 0.0

    @property
    def elem_sparsity(self) -> float:
        n = self.rows * self.cols
        return self.zeros / n if n else 0.0

    @property
    def speedup(self) -> float:
        """The fork's estimate ``1.0/(1-col_sparsity)/(1-row_sparsity)``: the lowered GEMM shrinks to the kept
        rows x kept columns. The fork's script dies with ZeroDivisionError when a whole group is zero (all rows
        or all columns); here that is ``inf``."""
        keep = (1.0 - self.col_sparsity) * (1.0 - self.row_sparsity)
        return 1.0 / (1.0 - self.col_sparsity) / (1.0 - self.row_sparsity) if keep > 0 else math.inf

    def to_dict(self, columns: bool = False) -> dict:
        d = {"group": self.group, "rows": self.rows, "cols": self.cols, "zero_rows": self.zero_rows,
             "zero_cols": self.zero_cols, "zeros": self.zeros, "col_sparsity": self.col_sparsity,
             "row_sparsity": self.row_sparsity, "elem_sparsity": self.elem_sparsity,
             "speedup": None if math.isinf(self.speedup) else self.speedup,   # JSON has no Infinity
             "blocks": [b.to_dict() for b in self.blocks]}
        if columns:
            d["col_nonzero_ratio"] = [float(x) for x in self.col_nonzero_ratio]
        return d


@dataclass
class LayerSparsity:
    name: str
    type: str
    shape: tuple
    count: int
    tuned_small: int                  # |w| < threshold in the tuned weights, before zeroing
    orig_small: int | None            # the same in the original weights (None: no original given)
    groups: list[GroupSparsity]
    flop_fraction: float = 1.0        # the lowered GEMMs' multiply-adds left after zero rows and columns

    @property
    def tuned_zero_fraction(self) -> float:
        return self.tuned_small / self.count if self.count else 0.0

    @property
    def orig_zero_fraction(self) -> float | None:
        if self.orig_small is None:
            return None
        return self.orig_small / self.count if self.count else 0.0

    def to_dict(self, columns: bool = False) -> dict:
        return {"name": self.name, "type": self.type, "shape": list(self.shape), "count": self.count,
                "num_groups": len(self.groups), "orig_zero_fraction": self.orig_zero_fraction,
                "tuned_zero_fraction": self.tuned_zero_fraction, "flop_fraction": self.flop_fraction,
                "group_stats": [g.to_dict(columns) for g in self.groups]}


@dataclass
class SparsityAnalysis:
    threshold: float
    layers: list[LayerSparsity]
    model: str | None = None
    weights: str | None = None
    orig_weights: str | None = None
    zerout_path: str | None = None    # set once the zeroed-out weights are saved

    def groups(self):
        """(layer, group) pairs in net order."""
        return [(l, g) for l in self.layers for g in l.groups]

    @property
    def speedup_info(self) -> str:
        """The fork's closing line: every group's speedup, ``{:.2f}X`` each (the fork concatenates them with no
        separator; a space is put between them here)."""
        return " ".join(_fmt_speedup(g.speedup) for _, g in self.groups())

    def to_dict(self, columns: bool = False) -> dict:
        return {"model": self.model, "weights": self.weights, "orig_weights": self.orig_weights,
                # the comparisons run in float32: its shortest repr (the schema's 1e-4 reads back as 1e-4)
                "threshold": float(str(np.float32(self.threshold))), "zerout_path": self.zerout_path,
                "layers": [l.to_dict(columns) for l in self.layers], "speedup_info": self.speedup_info}

    def table(self) -> str:
        """One row per (layer, conv group), as the fork's per-group titles, then the speedup line."""
        head = f"Sparsity of {self.weights or 'the weights'}"
        if self.orig_weights:
            head += f" (original: {self.orig_weights})"
        lines = [head + f"; zero means |w| < {self.threshold:g}; percentages"]
        if not self.layers:
            lines.append("no Convolution or InnerProduct layer with weights in the net")
            return "\n".join(lines)
        cols = [("layer", "<"), ("type", "<"), ("shape", "<"), ("group", ">"), ("matrix", ">"),
                ("orig 0%", ">"), ("tuned 0%", ">"), ("FLOP%", ">"), ("col%", ">"), ("row%", ">"), ("elem%", ">"),
                ("speedup", ">"), ("blocks (xdimen,ydimen):zero tiles%", "<")]
        rows = []
        for l in self.layers:
            for g in l.groups:
                first = g.group == 0
                orig = l.orig_zero_fraction
                rows.append([
                    l.name if first else "", l.type if first else "",
                    "x".join(str(s) for s in l.shape) if first else "",
                    f"{g.group}/{len(l.groups)}", f"{g.rows}x{g.cols}",
                    ("-" if orig is None else f"{100 * orig:.2f}") if first else "",
                    f"{100 * l.tuned_zero_fraction:.2f}" if first else "",
                    f"{100 * l.flop_fraction:.2f}" if first else "",
                    f"{100 * g.col_sparsity:.2f}", f"{100 * g.row_sparsity:.2f}", f"{100 * g.elem_sparsity:.2f}",
                    _fmt_speedup(g.speedup),
                    " ".join(f"({b.xdimen},{b.ydimen}):{100 * b.sparsity:.2f}" for b in g.blocks)])
        widths = [max(len(c[0]), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt_row = lambda r: "  ".join(f"{v:{a}{w}}" for v, (_, a), w in zip(r, cols, widths)).rstrip()  # noqa: E731
        lines.append(fmt_row([c[0] for c in cols]))
        lines.extend(fmt_row(r) for r in rows)
        lines.append(f"speedup: {self.speedup_info}")
        return "\n".join(lines)


def _fmt_speedup(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}X"


# -- the computation -------------------------------------------------------------------------------

def analyzed_layers(net):
    """The layers the fork analyses: Convolution and InnerProduct layers that have params, in net order."""
    return [l for l in net.layers if l.sparse_modes and l.params]


def _block_specs(layer):
    """The fork reads ``param[0].block_group_lasso`` of the layer as written in the prototxt (not a shared
    param's owner spec)."""
    lp = layer.param
    return list(lp.param[0].block_group_lasso) if len(lp.param) else []


def layer_sparsity(layer, threshold: float, orig_weight: torch.Tensor | None = None) -> LayerSparsity:
    """The fork's numbers for one Convolution / InnerProduct layer (its weights, param 0, are not changed)."""
    w = layer.params[0].detach()
    # |w| < threshold in the weight's dtype (float32): the fork compares a float32 numpy array with 1e-4 too
    tuned_small = int((w.abs() < threshold).sum())
    orig_small = None if orig_weight is None else int((orig_weight.detach().abs() < threshold).sum())
    wz = zerout_(w.clone(), threshold)                      # the fork's zero_out(weights_tuned, r_width)
    m = as_matrix(wz)
    r, c = m.shape
    # the fork: ``group = convolution_param.group`` -- an InnerProduct layer has none, so 1
    g = conv_groups(layer.param) if layer.type == "Convolution" else 1
    if g < 1 or r % g:
        raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): {r} rows do not split into {g} conv groups")
    rg = r // g
    sub = m.reshape(g, rg, c)                               # group gi = rows [gi*R/g, (gi+1)*R/g)
    # As in the fork: column ratio counts |w| >= threshold, rows count w != 0, elements count w == 0 (after
    # zero_out the three agree except for NaN, which the fork would count as a zero column but a nonzero row).
    col_nnz = (sub.abs() >= threshold).sum(dim=1).cpu().numpy()            # (g, C)
    row_nnz = (sub != 0).sum(dim=2).cpu().numpy()                           # (g, R/g)
    zeros = (sub == 0).sum(dim=(1, 2)).cpu().numpy()                        # (g,)
    blocks = []                                                             # per spec: (g,) zero tiles, tiles
    for k, spec in enumerate(_block_specs(layer)):
        x, y = int(spec.xdimen), int(spec.ydimen)
        # The fork asserts that the block tiles the *per-group* matrix (R/g x C) -- not the whole R x C matrix
        # the training regularizer tiles, so e.g. a whole-layer depth block (ydimen = num_output) of a group
        # conv fails here although training accepted it. We raise instead of asserting.
        why = check_block((rg, c), y, x)
        if why is not None:
            raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): block_group_lasso #{k} of param 0 "
                                   f"cannot be analysed per conv group ({g} group(s)): {why}")
        # tiles of the whole matrix that do not cross a group boundary, since ydimen divides R/g
        nz = tile_nonzero(m, y, x).reshape(g, rg // y, c // x)
        blocks.append((x, y, (~nz).sum(dim=(1, 2)).cpu().numpy(), nz[0].numel()))
    groups = []
    for gi in range(g):
        groups.append(GroupSparsity(
            group=gi, rows=rg, cols=c, zero_rows=int((row_nnz[gi] == 0).sum()),
            zero_cols=int((col_nnz[gi] == 0).sum()), zeros=int(zeros[gi]),
            col_nonzero_ratio=col_nnz[gi].astype(np.float64) / rg if rg else np.zeros(c),
            blocks=[BlockSparsity(x, y, int(zb[gi]), n) for x, y, zb, n in blocks]))
    dense, kept, _, _ = matrix_flops(wz, g)          # per output position (caffessl time scales by them)
    return LayerSparsity(layer.name, layer.type, tuple(int(s) for s in w.shape), w.numel(), tuned_small,
                         orig_small, groups, kept / dense if dense else 0.0)


def analyze_net(net, orig_net=None, threshold: float | None = None) -> SparsityAnalysis:
    """Analyse the weights loaded in ``net`` (the tuned model); ``orig_net`` (same prototxt) adds the original
    model's zero fractions. Neither net is modified."""
    thr = default_threshold() if threshold is None else float(threshold)
    out = []
    for layer in analyzed_layers(net):
        orig = None
        if orig_net is not None:
            ol = orig_net.layer_dict.get(layer.name)
            if ol is None or not ol.params:
                raise WeightsError(f"layer '{layer.name}' ({layer.type}) is not in the original net")
            orig = ol.params[0]
            if tuple(orig.shape) != tuple(layer.params[0].shape):
                raise WeightsError(f"layer '{layer.name}': original weights of shape {tuple(orig.shape)}, tuned "
                                   f"weights of shape {tuple(layer.params[0].shape)}")
        out.append(layer_sparsity(layer, thr, orig))
    return SparsityAnalysis(thr, out)


def load_net(model, weights, phase=None):
    """``Net(model, phase)`` with ``weights`` copied in; every analysed layer must get its weights from the
    file (the fork would silently analyse filler weights instead)."""
    from ..net import TEST, Net
    net = Net(model, TEST if phase is None else phase)
    report = net.copy_from(weights)
    loaded = set(report["loaded"])
    missing = [l.name for l in analyzed_layers(net) if l.name not in loaded]
    if missing:
        raise WeightsError(f"{weights}: has no weights for layer(s) {', '.join(repr(m) for m in missing)} of "
                           f"{model} (not the caffemodel of this net?)")
    return net


def zerout_net(net, threshold: float | None = None) -> int:
    """The fork's ``zero_out`` on the weights (param 0; biases are left alone) of every analysed layer of
    ``net``, in place. Returns the number of entries set to 0."""
    thr = default_threshold() if threshold is None else float(threshold)
    n = 0
    with torch.no_grad():
        for layer in analyzed_layers(net):
            w = layer.params[0]
            n += int(((w != 0) & (w.abs() < thr)).sum())
            zerout_(w.data, thr)
            if getattr(layer, "engine", None) is not None:   # a sparse conv_mode built from the old weights
                layer.engine.invalidate()
    return n


def default_zerout_path(weights) -> str:
    """``<tuned>_zerout<ext>`` as the fork names it (``os.path.splitext``); ``x.caffemodel.h5`` gives
    ``x_zerout.caffemodel.h5``."""
    weights = os.fspath(weights)
    if weights.endswith(".caffemodel.h5"):
        return weights[:-len(".caffemodel.h5")] + "_zerout.caffemodel.h5"
    root, ext = os.path.splitext(weights)
    return root + "_zerout" + ext


def save_zerout(net, path) -> str:
    """Save ``net``'s weights to ``path``, HDF5 when it ends in ``.h5``, else a binary caffemodel (the fork's
    ``tuned_net.save``). Both writers go through ``io.atomic``: the file appears whole or not at all."""
    path = os.fspath(path)
    try:
        if path.endswith(".h5"):
            net.save_hdf5(path)
        else:
            net.save(path)
    except OSError as e:
        raise CaffeSSLError(f"{path}: cannot write the zeroed-out weights ({e.strerror or e})") from None
    return path


def analyze(model, weights, orig_weights=None, *, phase=None, threshold: float | None = None,
            zerout_path=None, zerout: bool = False) -> SparsityAnalysis:
    """Everything ``sparsity_analyzer.py`` does: load the tuned (and original) weights into ``model``, analyse
    them and, with ``zerout`` or a ``zerout_path``, save the zeroed-out tuned weights (default path:
    :func:`default_zerout_path`). ``phase`` defaults to TEST (the fork loads the tuned net in TEST)."""
    thr = default_threshold() if threshold is None else float(threshold)
    net = load_net(model, weights, phase)
    orig_net = load_net(model, orig_weights, phase) if orig_weights else None
    result = analyze_net(net, orig_net, thr)
    del orig_net
    result.model = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    result.weights = os.fspath(weights)
    result.orig_weights = os.fspath(orig_weights) if orig_weights else None
    if zerout or zerout_path:
        zerout_net(net, thr)
        result.zerout_path = save_zerout(net, zerout_path or default_zerout_path(weights))
    return result
