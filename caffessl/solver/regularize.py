"""Weight decay and Structured Sparsity Learning group Lasso (SGDSolver::Regularize + GroupLassoRegularize).

For one learnable param, from the pre-update weights W, in the fork's order (sgd_solver.cpp 196-586):

1. weight decay, lambda_wd = weight_decay * decay_mult, type = ParamSpec.regularization_type or the solver's:
   L2: grad += lambda_wd * W (.* D)        term = lambda_wd/2 * sum(D W^2)
   L1: grad += lambda_wd * sign(W) (.* D)  term = lambda_wd * sum|W D|          (sign(0) = 0)
   D = the element-wise multipliers read from ``decay_proto`` (all ones without one);
2. kernel-shape (column) group Lasso per conv group, lambda = kernel_shape_decay * kernel_shape_decay_mult;
3. breadth (row) group Lasso, lambda = breadth_decay * breadth_decay_mult;
4. each ``block_group_lasso`` spec in order, tiles over the stacked R x C matrix (conv groups ignored),
   lambda = block_group_decay * block_decay_mult.

Group terms: grad += lambda * W / ||group|| (0 for a group whose norm is exactly 0), term = lambda * sum ||group||.
Columns per conv group are the (R/g) x 1 tiling and rows the 1 x C tiling, so 2-4 are all one vectorized
"block" step (caffessl.weights_matrix.group_lasso_step). The fork runs 2 and 3 only on GPU and aborts on
CPU; caffessl runs them on every device.

Everything is validated once, at set-up (``Regularizer(net, solver_param)``), and each param gets a plan so
that ``apply`` does only tensor work.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FileMissingError, ShapeMismatchError, SolverConfigError
from ..weights_matrix import add_group_lasso_, check_block, group_lasso_step, matrix_shape

log = logging.getLogger("caffessl")

_TYPES = ("L1", "L2")


@dataclass
class _Plan:
    shape: tuple
    wd: float = 0.0                 # lambda_wd (0: no weight decay step)
    wd_type: str = "L2"
    decay: torch.Tensor | None = None   # decay_proto multipliers, same shape as the param
    blocks: list = field(default_factory=list)   # [(lambda, ydimen, xdimen, what)] in application order

    @property
    def active(self) -> bool:
        return self.wd != 0 or bool(self.blocks)


def _where(info) -> str:
    return f"layer '{info.layer_name}' param {info.index} (shape {tuple(info.tensor.shape)})"


def param_key(info) -> tuple:
    return (info.layer_name, info.index)


class Regularizer:
    """Built once per solver: ``apply(info)`` adds the regularization gradient of one param into its grad."""

    def __init__(self, net, solver_param):
        self.net = net
        self.solver_param = solver_param
        self.params = list(net.learnable_params)
        self.plans: dict[tuple, _Plan] = {}
        for info in self.params:
            self.plans[param_key(info)] = self._plan(info, solver_param)
        # params whose only term is plain L2 weight decay (no decay_proto, no group Lasso), by lambda: one
        # torch._foreach_add_ per distinct lambda in apply_all; the other active params go through apply
        self._l2_groups: dict[float, list] = {}
        self._by_param: list = []
        for info in self.params:
            p = self.plans[param_key(info)]
            if p.wd != 0 and p.wd_type == "L2" and p.decay is None and not p.blocks:
                self._l2_groups.setdefault(p.wd, []).append(info)
            elif p.active:
                self._by_param.append(info)

    # -- set-up -------------------------------------------------------------------------------------
    def _plan(self, info, sp) -> _Plan:
        spec = info.spec
        shape = tuple(int(s) for s in info.tensor.shape)
        r, c = matrix_shape(shape)
        plan = _Plan(shape=shape)
        # 1. weight decay
        plan.wd = float(sp.weight_decay) * float(info.decay_mult)
        plan.wd_type = spec.regularization_type or sp.regularization_type
        if plan.wd != 0 and plan.wd_type not in _TYPES:
            raise SolverConfigError(
                f"{_where(info)}: unknown regularization_type '{plan.wd_type}' (only \"L1\" and \"L2\" are "
                f"accepted, case-sensitive){' from its ParamSpec' if spec.regularization_type else ''}")
        if spec.decay_proto:
            plan.decay = self._load_decay(info, spec.decay_proto)
        # 2. kernel shape: one column group per (conv group, column) = the (R/g) x 1 tiling
        g = max(int(info.groups), 1)
        lam = float(sp.kernel_shape_decay) * float(spec.kernel_shape_decay_mult)
        if lam != 0:
            if r % g:
                raise SolverConfigError(f"{_where(info)}: kernel_shape_decay needs the {r} rows to split "
                                        f"into {g} conv groups")
            plan.blocks.append((lam, r // g, 1, "kernel_shape"))
        # 3. breadth: one group per row = the 1 x C tiling
        lam = float(sp.breadth_decay) * float(spec.breadth_decay_mult)
        if lam != 0:
            plan.blocks.append((lam, 1, c, "breadth"))
        # 4. block specs, in order; a spec must tile the matrix where the fork CHECKs it -- its regularizer
        #    when lambda != 0, its sparsity display (from iteration 0) whenever display > 0 -- so caffessl
        #    refuses it at set-up then; with lambda 0 and no display the fork never looks at it
        for k, b in enumerate(spec.block_group_lasso):
            lam = float(sp.block_group_decay) * float(b.block_decay_mult)
            problem = check_block(shape, int(b.ydimen), int(b.xdimen))
            if problem and (lam != 0 or sp.display > 0):
                raise SolverConfigError(f"{_where(info)}: block_group_lasso #{k}: {problem}")
            if lam != 0:
                plan.blocks.append((lam, int(b.ydimen), int(b.xdimen), f"block({b.xdimen},{b.ydimen})"))
        return plan

    def _load_decay(self, info, path) -> torch.Tensor:
        from ..io.blobproto import read_binaryproto
        if not os.path.isfile(path):
            raise FileMissingError(f"{_where(info)}: decay_proto file '{path}' does not exist (the path is "
                                   f"relative to the current directory, as in Caffe)")
        arr = read_binaryproto(path)
        if tuple(arr.shape) != tuple(info.tensor.shape):
            raise ShapeMismatchError(f"{_where(info)}: decay_proto '{path}' has shape {tuple(arr.shape)}, the "
                                     f"param has shape {tuple(info.tensor.shape)}")
        log.info("Copying weight decay blob %s from %s", " ".join(str(s) for s in arr.shape)
                 + f" ({arr.size})", path)
        return torch.as_tensor(arr).to(device=info.tensor.device, dtype=info.tensor.dtype)

    # -- per iteration ------------------------------------------------------------------------------
    def apply(self, info, want_term: bool = True) -> float:
        """Add weight decay and group Lasso for ``info`` into ``info.tensor.grad``; return the term.

        With ``want_term=False`` (non-display iterations) the term is not reduced and 0.0 is returned."""
        plan = self.plans.get(param_key(info))
        if plan is None:
            raise SolverConfigError(f"{_where(info)}: not a learnable param of the net this Regularizer "
                                    f"was built for")
        if not plan.active:
            return 0.0
        p = info.tensor
        w = p.detach()
        grad = p.grad
        if grad is None:
            if not want_term:
                return 0.0   # lr_mult 0 / no gradient: the update is 0 anyway; only the term would remain
            grad = torch.zeros_like(w)  # scratch: the fork still adds (and logs) the decay of frozen params
        term = w.new_zeros(()) if want_term else None
        with torch.no_grad():
            if plan.wd != 0:
                if plan.wd_type == "L2":
                    dw = w if plan.decay is None else w * plan.decay
                    grad.add_(dw, alpha=plan.wd)
                    if want_term:
                        term += (w * dw).sum() * (plan.wd / 2)
                else:
                    s = torch.sign(w)
                    if plan.decay is not None:
                        s = s * plan.decay
                    grad.add_(s, alpha=plan.wd)
                    if want_term:
                        a = w.abs() if plan.decay is None else (w * plan.decay).abs()
                        term += a.sum() * plan.wd
            if plan.blocks:
                r, c = matrix_shape(plan.shape)
                m = w.reshape(r, c)
                gm = grad.view(r, c) if grad.is_contiguous() else None
                sq = m * m if len(plan.blocks) > 1 else None     # shared by the tilings of this param
                for lam, yd, xd, _what in plan.blocks:
                    if gm is not None:
                        norms = add_group_lasso_(gm, m, yd, xd, lam, sq)
                    else:
                        q, norms = group_lasso_step(m, yd, xd)
                        grad.add_(q.reshape(grad.shape), alpha=lam)
                    if want_term:
                        term += norms.sum() * lam
        return float(term) if want_term else 0.0

    def apply_all(self, want_term: bool = True) -> float:
        """``apply`` for every learnable param: the plain-L2 params with one ``torch._foreach_add_`` per
        lambda (the same in-place op, so the same bits), the others one by one. Returns the term summed in
        float32 in net order (0.0 with ``want_term=False``)."""
        terms = {}
        with torch.no_grad():
            for lam, infos in self._l2_groups.items():
                have = [i for i in infos if i.tensor.grad is not None]
                if have:
                    torch._foreach_add_([i.tensor.grad for i in have], [i.tensor.detach() for i in have],
                                        alpha=lam)
                for info in infos if want_term else ():   # params without a gradient too, as the fork logs
                    w = info.tensor.detach()
                    terms[param_key(info)] = float((w * w).sum() * (lam / 2))
        for info in self._by_param:
            terms[param_key(info)] = self.apply(info, want_term)
        if not want_term:
            return 0.0
        total = np.float32(0)
        for info in self.params:
            total += np.float32(terms.get(param_key(info), 0.0))
        return float(total)

    # -- display ------------------------------------------------------------------------------------
    def sparsity_lines(self) -> list[str]:
        """The fork's four two-line sparsity messages on the current weights (see solver/sparsity_log.py)."""
        from .sparsity_log import sparsity_messages
        from .stabilize import solver_zerout_threshold
        return sparsity_messages(self.params, solver_zerout_threshold(self.solver_param))
