"""Decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019).

Caffe's ``weight_decay`` is L2 *in the gradient*: ``g += λ·W`` before the update rule, so adaptive rules (AdaGrad,
RMSProp, AdaDelta, Adam) rescale the decay with their moments. Decoupled decay shrinks the weights directly, after
the update rule, and never enters the gradient or the rule's history::

    W <- W - η_t · λ · m · W          η_t = lr_t / base_lr   (the learning-rate schedule's factor)

with λ = ``SolverParameter.decoupled_weight_decay`` and m = ``ParamSpec.decay_mult`` ×
``ParamSpec.decoupled_decay_mult`` (default 1): the params Caffe's weight_decay skips (``decay_mult: 0``, e.g.
biases and BatchNorm statistics in the usual prototxts) are skipped here too, so an L2 run and a decoupled run of
the same λ decay the same params. Params with ``lr_mult = 0`` are frozen and are not decayed. With λ = 0
nothing is touched (bit-identical to Caffe).

Where it sits in ApplyUpdate, per iteration::

    lr_t -> ClipGradients -> per param {Normalize, Regularize (L2/L1 + SSL group Lasso, into the gradient),
    ComputeUpdateValue} -> per param {W -= mask·update, Zerout} -> DECOUPLED DECAY (this module)

Being a pure multiplication by ``1 - η_t·λ·m``, it keeps exact zeros (Zerout, connectivity masks) at zero.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SolverConfigError

f32 = np.float32


def decay_factor(rate: float, base_lr: float, lam: float, mult: float = 1.0) -> float:
    """η_t·λ·m with η_t = rate / base_lr (0 when base_lr is 0: nothing moves then)."""
    if lam == 0 or mult == 0 or base_lr == 0:
        return 0.0
    return float(rate) / float(base_lr) * float(lam) * float(mult)


def decoupled_decay_(weights, factors) -> None:
    """In place, W <- W - f·W for each (W, f) with f != 0 (the pure step; tests call it directly)."""
    with torch.no_grad():
        for w, f in zip(weights, factors):
            if f != 0:
                w.mul_(float(f32(1) - f32(f)))


class DecoupledDecay:
    """Built once per solver from its SolverParameter and params; ``apply(rate)`` after the update step."""

    def __init__(self, params, solver_param, source: str = "solver"):
        lam = float(solver_param.decoupled_weight_decay)
        if not lam >= 0:
            raise SolverConfigError(f"{source}: decoupled_weight_decay must be >= 0, got {lam}")
        self.lam = lam
        self.base_lr = float(solver_param.base_lr)
        self.params = []
        self.mults = []
        for info in params:
            local = float(info.spec.decoupled_decay_mult)
            if not local >= 0:
                raise SolverConfigError(f"layer '{info.layer_name}' param {info.index}: decoupled_decay_mult must "
                                        f"be >= 0, got {local}")
            m = float(info.decay_mult) * local
            if lam != 0 and m != 0 and info.lr_mult != 0:
                self.params.append(info)
                self.mults.append(m)

    @property
    def active(self) -> bool:
        return bool(self.params)

    def apply(self, rate: float) -> None:
        if self.params:
            decoupled_decay_([info.tensor for info in self.params],
                             [decay_factor(rate, self.base_lr, self.lam, m) for m in self.mults])
