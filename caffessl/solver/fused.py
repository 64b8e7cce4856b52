"""A multi-tensor (torch._foreach_*) form of the plain SGD iteration, for the common case.

When the solver is SGD, iter_size is 1, every param has a gradient, weight decay is L2 without a decay_proto,
no group Lasso is active and no connectivity mask exists, ``apply_update`` + ``Stabilizer.update`` reduce to,
per param and in Caffe's order::

    g += wd*decay_mult * w ;  h = momentum*h + rate*lr_mult * g ;  g = h (the update, as Caffe leaves the diff) ;
    w -= h ;  w[|w| < thr] = 0

This module does each step for all params with the same scalars at once (params grouped by (lambda_wd,
local rate)), so the element-wise arithmetic is the per-param path's (the same in-place ops, same scalars,
same order) with a few calls per iteration instead of a few per param. ``plan`` says None when the fast path
does not apply; the caller then uses the per-param path.
"""
from __future__ import annotations

import numpy as np
import torch

from ..weights_matrix import zerout_

f32 = np.float32


def plan(solver):
    """The param groups of the fused path, or None when some feature needs the per-param path."""
    sp = solver.param
    if solver.solver_type != "SGD" or sp.iter_size != 1:
        return None
    groups: dict = {}
    thresholds = []
    for i, info in enumerate(solver.params):
        p = solver.regularizer.plans.get((info.layer_name, info.index))
        if p is None or p.blocks or p.decay is not None or (p.wd != 0 and p.wd_type != "L2"):
            return None
        groups.setdefault((p.wd, float(info.lr_mult)), []).append(i)
        thresholds.append(solver.stabilizer.thresholds.get((info.layer_name, info.index), 0.0))
    return {"groups": list(groups.items()), "thresholds": thresholds, "momentum": float(sp.momentum)}


def sgd_step(solver, fplan, rate: float) -> bool:
    """The fused SGD update; False (nothing done) when it does not apply this iteration."""
    if any(info.index == 0 and info.layer.mask is not None for info in solver.params):
        return False
    params = solver.params
    ws = [info.tensor for info in params]
    gs = [w.grad for w in ws]
    if any(g is None for g in gs):
        return False
    hist = solver.history
    momentum = fplan["momentum"]
    with torch.no_grad():
        ws = [w.detach() for w in ws]
        for (wd, lr_mult), idx in fplan["groups"]:
            gw = [gs[i] for i in idx]
            hw = [hist[i] for i in idx]
            if wd != 0:
                torch._foreach_add_(gw, [ws[i] for i in idx], alpha=wd)
            torch._foreach_mul_(hw, momentum)
            torch._foreach_add_(hw, gw, alpha=float(f32(rate) * f32(lr_mult)))
        torch._foreach_copy_(gs, hist[:len(gs)])
        torch._foreach_sub_(ws, hist[:len(gs)])
        for w, thr in zip(ws, fplan["thresholds"]):
            zerout_(w, thr)
    return True
