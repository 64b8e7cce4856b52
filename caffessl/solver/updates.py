"""Caffe's update rules (``ComputeUpdateValue``) as plain functions over lists of tensors, in the manner of
torch/optim's ``_multi_tensor_sgd``: one ``torch._foreach_*`` call per step for all the params at once.

A rule is called with the gradients ``grads`` of a group of params that share one local rate (already
normalized by iter_size and regularized), the rule's history as one list per history slot (slot k holds
Caffe's ``history_`` blob k of each param, as stored in the solverstate), ``local_rate`` (= rate * lr_mult,
computed in float32 by the caller), ``t`` (= iter + 1; only Adam reads it) and the rule's hyper-parameters.
It updates the history in place, writes the **update value** into each gradient (as Caffe does: the caller
then applies ``W -= update``) and returns ``grads``. It touches nothing else: no loop state, no weights.

The operation order follows sgd_solver.cpp / nesterov_solver.cpp / adagrad_solver.cpp / rmsprop_solver.cpp /
adadelta_solver.cpp / adam_solver.cpp (CPU paths) so float32 rounding stays close to Caffe's; a foreach op
does per tensor what the same in-place op does, so one param in a list of one gives the same bits.

Each rule is declared in ``RULES`` with its number of history blobs and the SolverParameter fields it reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

f32 = np.float32


def sgd(grads, history, *, local_rate: float, t: int = 1, momentum: float):
    """h = momentum·h + local_rate·g ; update = h."""
    (hs,) = history
    torch._foreach_mul_(hs, momentum)
    torch._foreach_add_(hs, grads, alpha=local_rate)
    torch._foreach_copy_(grads, hs)
    return grads


def nesterov(grads, history, *, local_rate: float, t: int = 1, momentum: float):
    """h_new = momentum·h + local_rate·g ; update = (1+momentum)·h_new − momentum·h_old."""
    (hs,) = history
    old = [h.clone() for h in hs]
    torch._foreach_mul_(hs, momentum)
    torch._foreach_add_(hs, grads, alpha=local_rate)
    torch._foreach_copy_(grads, hs)
    torch._foreach_mul_(grads, float(f32(1) + f32(momentum)))
    torch._foreach_sub_(grads, old, alpha=momentum)
    return grads


def _scaled_by_rms(grads, hs, local_rate: float, delta: float):
    """update = local_rate · g / (sqrt(h) + delta) (AdaGrad's and RMSProp's last step)."""
    denom = torch._foreach_sqrt(hs)
    torch._foreach_add_(denom, delta)
    torch._foreach_div_(grads, denom)
    torch._foreach_mul_(grads, local_rate)
    return grads


def adagrad(grads, history, *, local_rate: float, t: int = 1, delta: float):
    """h += g² ; update = local_rate · g / (sqrt(h) + delta)."""
    (hs,) = history
    torch._foreach_addcmul_(hs, grads, grads)
    return _scaled_by_rms(grads, hs, local_rate, delta)


def rmsprop(grads, history, *, local_rate: float, t: int = 1, rms_decay: float, delta: float):
    """h = rms_decay·h + (1−rms_decay)·g² ; update = local_rate · g / (sqrt(h) + delta)."""
    (hs,) = history
    torch._foreach_mul_(hs, rms_decay)
    torch._foreach_add_(hs, torch._foreach_mul(grads, grads), alpha=float(f32(1) - f32(rms_decay)))
    return _scaled_by_rms(grads, hs, local_rate, delta)


def adadelta(grads, history, *, local_rate: float, t: int = 1, momentum: float, delta: float):
    """Zeiler's AdaDelta as Caffe writes it (history = [E[g²], E[Δ²]]).

    E[g²] = m·E[g²] + (1−m)·g² ; u = g·sqrt((E[Δ²]+δ)/(E[g²]+δ)) ; E[Δ²] = m·E[Δ²] + (1−m)·u² (before the lr) ;
    update = local_rate·u.
    """
    hg, hu = history
    one_m = float(f32(1) - f32(momentum))
    torch._foreach_mul_(hg, momentum)
    torch._foreach_add_(hg, torch._foreach_mul(grads, grads), alpha=one_m)
    ratio = torch._foreach_add(hu, delta)
    torch._foreach_div_(ratio, torch._foreach_add(hg, delta))
    torch._foreach_sqrt_(ratio)
    torch._foreach_mul_(grads, ratio)
    torch._foreach_mul_(hu, momentum)
    torch._foreach_add_(hu, torch._foreach_mul(grads, grads), alpha=one_m)
    torch._foreach_mul_(grads, local_rate)
    return grads


def adam_correction(beta1: float, beta2: float, t: int) -> float:
    """sqrt(1−β2^t)/(1−β1^t) in double (C++ pow(float, int)), stored as float32."""
    return float(f32(math.sqrt(1.0 - math.pow(float(f32(beta2)), t)) / (1.0 - math.pow(float(f32(beta1)), t))))


def adam(grads, history, *, local_rate: float, t: int, beta1: float, beta2: float, delta: float):
    """m = β1·m + (1−β1)·g ; v = β2·v + (1−β2)·g² ;
    update = local_rate·sqrt(1−β2^t)/(1−β1^t) · m/(sqrt(v)+δ), t = iter+1 (δ is not bias-corrected)."""
    ms, vs = history
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, grads, alpha=float(f32(1) - f32(beta1)))
    torch._foreach_mul_(vs, beta2)
    torch._foreach_add_(vs, torch._foreach_mul(grads, grads), alpha=float(f32(1) - f32(beta2)))
    scale = float(f32(local_rate) * f32(adam_correction(beta1, beta2, t)))
    denom = torch._foreach_sqrt(vs)
    torch._foreach_add_(denom, delta)
    torch._foreach_copy_(grads, ms)
    torch._foreach_div_(grads, denom)
    torch._foreach_mul_(grads, scale)
    return grads


@dataclass(frozen=True)
class Rule:
    """One solver type: its update function, how many history blobs per param it keeps (the solverstate's
    layout), and its hyper-parameters as (keyword argument, SolverParameter field)."""
    fn: Callable
    n_history: int
    hyper: tuple

    def hyper_parameters(self, solver_param) -> dict:
        return {kw: getattr(solver_param, field) for kw, field in self.hyper}


RULES = {
    "SGD": Rule(sgd, 1, (("momentum", "momentum"),)),
    "Nesterov": Rule(nesterov, 1, (("momentum", "momentum"),)),
    "AdaGrad": Rule(adagrad, 1, (("delta", "delta"),)),
    "RMSProp": Rule(rmsprop, 1, (("rms_decay", "rms_decay"), ("delta", "delta"))),
    "AdaDelta": Rule(adadelta, 2, (("momentum", "momentum"), ("delta", "delta"))),
    "Adam": Rule(adam, 2, (("beta1", "momentum"), ("beta2", "momentum2"), ("delta", "delta"))),
}
