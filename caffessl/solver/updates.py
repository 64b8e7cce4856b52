"""Caffe's update rules (``ComputeUpdateValue``) as plain functions, in the style of torch/optim's functional API.

Each rule takes the gradient ``diff`` (already normalized by iter_size and regularized), the rule's history
tensors (Caffe's ``history_`` blobs for this param, as stored in the solverstate) and the hyper-parameters.
It updates the history in place, writes the **update value** into ``diff`` (as Caffe does: the caller then
applies ``W -= update``) and returns ``diff``. It touches nothing else: no loop state, no weights.

``local_rate`` is ``rate * lr_mult`` computed in float32 by the caller. The operation order follows
sgd_solver.cpp / nesterov_solver.cpp / adagrad_solver.cpp / rmsprop_solver.cpp / adadelta_solver.cpp /
adam_solver.cpp (CPU paths) so float32 rounding stays close to Caffe's.
"""
from __future__ import annotations

import math

import numpy as np
import torch

f32 = np.float32


def sgd(diff: torch.Tensor, history, *, local_rate: float, momentum: float) -> torch.Tensor:
    """h = momentum·h + local_rate·g ; update = h."""
    (h,) = history
    h.mul_(momentum).add_(diff, alpha=local_rate)
    return diff.copy_(h)


def nesterov(diff, history, *, local_rate: float, momentum: float):
    """h_new = momentum·h + local_rate·g ; update = (1+momentum)·h_new − momentum·h_old."""
    (h,) = history
    h_old = h.clone()
    h.mul_(momentum).add_(diff, alpha=local_rate)
    return torch.mul(h, float(f32(1) + f32(momentum)), out=diff).sub_(h_old, alpha=momentum)


def adagrad(diff, history, *, local_rate: float, delta: float):
    """h += g² ; update = local_rate · g / (sqrt(h) + delta)."""
    (h,) = history
    h.addcmul_(diff, diff)
    denom = h.sqrt().add_(delta)
    return diff.div_(denom).mul_(local_rate)


def rmsprop(diff, history, *, local_rate: float, rms_decay: float, delta: float):
    """h = rms_decay·h + (1−rms_decay)·g² ; update = local_rate · g / (sqrt(h) + delta)."""
    (h,) = history
    h.mul_(rms_decay).add_(diff * diff, alpha=float(f32(1) - f32(rms_decay)))
    denom = h.sqrt().add_(delta)
    return diff.div_(denom).mul_(local_rate)


def adadelta(diff, history, *, local_rate: float, momentum: float, delta: float):
    """Zeiler's AdaDelta as Caffe writes it (history = [E[g²], E[Δ²]]).

    E[g²] = m·E[g²] + (1−m)·g² ; u = g·sqrt((E[Δ²]+δ)/(E[g²]+δ)) ; E[Δ²] = m·E[Δ²] + (1−m)·u² (before the lr) ;
    update = local_rate·u.
    """
    hg, hu = history
    one_m = float(f32(1) - f32(momentum))
    hg.mul_(momentum).add_(diff * diff, alpha=one_m)
    ratio = (hu + delta).div_(hg + delta).sqrt_()
    diff.mul_(ratio)
    hu.mul_(momentum).add_(diff * diff, alpha=one_m)
    return diff.mul_(local_rate)


def adam_correction(beta1: float, beta2: float, t: int) -> float:
    """sqrt(1−β2^t)/(1−β1^t) in double (C++ pow(float, int)), stored as float32."""
    return float(f32(math.sqrt(1.0 - math.pow(float(f32(beta2)), t)) / (1.0 - math.pow(float(f32(beta1)), t))))


def adam(diff, history, *, local_rate: float, beta1: float, beta2: float, delta: float, t: int):
    """m = β1·m + (1−β1)·g ; v = β2·v + (1−β2)·g² ;
    update = local_rate·sqrt(1−β2^t)/(1−β1^t) · m/(sqrt(v)+δ), t = iter+1 (δ is not bias-corrected)."""
    m, v = history
    m.mul_(beta1).add_(diff, alpha=float(f32(1) - f32(beta1)))
    v.mul_(beta2).add_(diff * diff, alpha=float(f32(1) - f32(beta2)))
    scale = float(f32(local_rate) * f32(adam_correction(beta1, beta2, t)))
    denom = v.sqrt().add_(delta)
    return torch.div(m, denom, out=diff).mul_(scale)


# solver type -> (rule, number of history blobs per param, the SolverParameter fields it reads)
RULES = {
    "SGD": (sgd, 1),
    "Nesterov": (nesterov, 1),
    "AdaGrad": (adagrad, 1),
    "RMSProp": (rmsprop, 1),
    "AdaDelta": (adadelta, 2),
    "Adam": (adam, 2),
}


def hyper_parameters(solver_type: str, sp) -> dict:
    """The keyword arguments of ``solver_type``'s rule that come from the SolverParameter."""
    if solver_type in ("SGD", "Nesterov"):
        return {"momentum": sp.momentum}
    if solver_type == "AdaGrad":
        return {"delta": sp.delta}
    if solver_type == "RMSProp":
        return {"rms_decay": sp.rms_decay, "delta": sp.delta}
    if solver_type == "AdaDelta":
        return {"momentum": sp.momentum, "delta": sp.delta}
    if solver_type == "Adam":
        return {"beta1": sp.momentum, "beta2": sp.momentum2, "delta": sp.delta}
    raise KeyError(solver_type)
