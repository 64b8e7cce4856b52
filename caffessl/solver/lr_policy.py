"""Learning-rate policies (SGDSolver::GetLearningRate), in Caffe's float32/double arithmetic.

The rate for update k+1 is computed at iteration k (0-based) before that update. ``multistep`` keeps a
position (``current_step``, saved in the solverstate) and moves at most one step per call, as Caffe does.
Where Caffe's C++ computes ``pow(float, int)`` the arithmetic is double; where it is ``pow(float, float)`` or
``exp(float)`` it is float -- reproduced with numpy scalars so the logged rates match to the last digit.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SolverConfigError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

f32 = np.float32


def check_policy(sp, source: str = "<solver>") -> None:
    """Reject at set-up what Caffe would abort on during the first iteration."""
    policy = sp.lr_policy
    if policy not in POLICIES:
        raise SolverConfigError(f"{source}: unknown lr_policy '{policy}' (Caffe knows: {', '.join(POLICIES)})")
    if policy == "step" and sp.stepsize <= 0:
        raise SolverConfigError(f"{source}: lr_policy 'step' needs stepsize > 0 (got {sp.stepsize})")
    if policy == "poly" and sp.max_iter <= 0:
        raise SolverConfigError(f"{source}: lr_policy 'poly' needs max_iter > 0")
    if policy == "multistep":
        sv = list(sp.stepvalue)
        if any(b <= a for a, b in zip(sv, sv[1:])):
            raise SolverConfigError(f"{source}: multistep stepvalue must increase, got {sv}")


def learning_rate(sp, it: int, current_step: int):
    """Return ``(rate, current_step, moved)`` for iteration ``it`` (rate as a Python float of a float32)."""
    policy = sp.lr_policy
    base = f32(sp.base_lr)
    gamma = f32(sp.gamma)
    moved = False
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = it // sp.stepsize
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "exp":
        rate = float(base) * math.pow(float(gamma), it)
    elif policy == "inv":
        rate = base * np.power(f32(1) + gamma * f32(it), -f32(sp.power), dtype=f32)
    elif policy == "multistep":
        if current_step < len(sp.stepvalue) and it >= sp.stepvalue[current_step]:
            current_step += 1
            moved = True
        rate = float(base) * math.pow(float(gamma), current_step)
    elif policy == "poly":
        frac = f32(1) - f32(it) / f32(sp.max_iter)
        rate = base * np.power(frac, f32(sp.power), dtype=f32)
    elif policy == "sigmoid":
        with np.errstate(over="ignore"):
            rate = base * (f32(1) / (f32(1) + np.exp(-gamma * (f32(it) - f32(sp.stepsize)), dtype=f32)))
    else:
        raise SolverConfigError(f"unknown lr_policy '{policy}' (Caffe knows: {', '.join(POLICIES)})")
    return float(f32(rate)), current_step, moved
