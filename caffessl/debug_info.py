"""Caffe's ``debug_info`` log lines (Net::ForwardDebugInfo, BackwardDebugInfo, Backward's norms).

With ``NetParameter.debug_info`` (or, during training, ``SolverParameter.debug_info`` on display iterations:
Solver::Step sets the net's flag to ``display && debug_info``) every layer's forward logs the mean absolute
value of each top and param blob, and the backward -- run one layer at a time, as Caffe's is -- that of each
bottom diff the layer computed and each learnable param's diff, then the L1/L2 norms of all learnable params:

    [Forward] Layer conv1, top blob conv1 data: 0.0523
    [Forward] Layer conv1, param blob 0 data: 0.0127
    [Backward] Layer conv1, bottom blob data diff: 1.2e-05
    [Backward] Layer conv1, param blob 0 diff: 0.00033
    [Backward] All net params (data, diff): L1 norm = (431.2, 0.91); L2 norm = (11.5, 0.02)

Param blobs are named as Caffe's param_display_names_ (the ParamSpec name, else the index) in the forward
lines and by index in the backward ones, as Caffe prints them. Means are float32 sums / counts (asum / count).
"""
from __future__ import annotations

import logging

import torch

from .log import fmt_num

log = logging.getLogger("caffessl")


def _mean_abs(t: torch.Tensor) -> float:
    t = t.detach()
    return float(t.abs().sum(dtype=torch.float32) / t.numel()) if t.numel() else float("nan")


def _display_name(layer, j: int) -> str:
    specs = layer.param.param
    return specs[j].name if j < len(specs) and specs[j].name else str(j)


def forward(layer, tops) -> None:
    """ForwardDebugInfo for one layer: ``tops`` = [(blob name, tensor)]."""
    for name, t in tops:
        log.info("    [Forward] Layer %s, top blob %s data: %s", layer.name, name, fmt_num(_mean_abs(t)))
    for j, p in enumerate(layer.params):
        log.info("    [Forward] Layer %s, param blob %s data: %s", layer.name, _display_name(layer, j),
                 fmt_num(_mean_abs(p)))


def backward(net, accumulate: bool = True) -> None:
    """Net::Backward with debug_info on the last recorded forward: layer by layer from the last, the
    per-layer lines, then the norms of all learnable params. ``accumulate``: this pass IS the backward (the
    solver's: loss tops seeded with their loss weights), each param diff accumulated as the one-call backward
    would; else (pycaffe's backward, which has already run) it only reads: bottom diffs recomputed per layer,
    param diffs as they now are (a param shared by several layers: its total, where Caffe prints the partial
    sum after each layer)."""
    for _, layer, bottoms, pgrads, _ in net.layerwise_backward(seed_outputs=not accumulate):
        for name, b, g in bottoms:
            log.info("    [Backward] Layer %s, bottom blob %s diff: %s", layer.name, name,
                     fmt_num(_mean_abs(g) if g is not None else 0.0))
        for j, (p, g) in enumerate(zip(layer.params, pgrads)):
            if not p.requires_grad:
                continue
            diff = layer.blobs[j].diff_tensor      # a PERMISSIVE share's: a view of its owner's diff
            if g is not None and accumulate:
                diff.add_(g)
            log.info("    [Backward] Layer %s, param blob %d diff: %s", layer.name, j, fmt_num(_mean_abs(diff)))
    sums = torch.zeros(4, dtype=torch.float32)
    for info in net.learnable_params:
        p = info.tensor
        d = p.detach()
        g = p.grad if p.grad is not None else torch.zeros_like(d)
        sums += torch.stack([d.abs().sum(), g.abs().sum(), (d * d).sum(), (g * g).sum()]).float()
    a_data, a_diff, s_data, s_diff = (float(v) for v in sums)
    log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
              fmt_num(a_data), fmt_num(a_diff), fmt_num(s_data ** 0.5), fmt_num(s_diff ** 0.5))
