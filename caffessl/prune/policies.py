"""The pruning policies: which filters/channels or weights each one removes (selection only; ``core`` applies).

* ``zeros t``          -- SSL's result made exact: every weight with |w| < t (default 1e-4, the fork's
                          ZEROUT_THRESHOLD) becomes 0; the zero rows/columns are then frozen.
* ``reduction-rate r`` -- per layer keep the ceil((1 - r) * C) filters with the largest L2 norm (nnabla's SSL
                          example after filter/channel decay).
* ``bn-gamma p``       -- Network Slimming (Liu et al. 2017): remove the channels whose |gamma| (the per-channel
                          Scale after BatchNorm, or a Scale alone) is under the p-quantile of all chosen layers'
                          |gamma| together (numpy's linear-interpolation quantile); a per-layer
                          amount (``--layers conv1=0.3``) uses that layer's own quantile.
* ``mask-threshold t`` -- channel masks (Yang et al. 2019): a Scale without bias right after the producer
                          (``insert_masks``); masks with |m| <= t go, the others are absorbed into the weights.
* ``magnitude q``      -- Han et al. 2015: per layer remove |w| < q * std, std over the layer's non-zero
                          weights (population std); repeated rounds prune the survivors further.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import PruneError

POLICIES = ("zeros", "reduction-rate", "bn-gamma", "mask-threshold", "magnitude")
STRUCTURED = ("reduction-rate", "bn-gamma", "mask-threshold")
DEFAULT_AMOUNT = {"zeros": 1e-4, "mask-threshold": 1e-2}
AMOUNT_MEANING = {"zeros": "threshold t", "reduction-rate": "rate r", "bn-gamma": "percentile p",
                  "mask-threshold": "threshold t", "magnitude": "quality q"}


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        import difflib
        near = difflib.get_close_matches(policy, POLICIES, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise PruneError(f"unknown pruning policy '{policy}'{hint}; policies: {', '.join(POLICIES)}")
    return policy


def check_amount(policy: str, amount, where: str = "--amount") -> float:
    """The policy's strength, validated: ratios in [0, 1), thresholds >= 0, q > 0."""
    check_policy(policy)
    if amount is None:
        if policy not in DEFAULT_AMOUNT:
            raise PruneError(f"policy '{policy}' needs {where} ({AMOUNT_MEANING[policy]})")
        return DEFAULT_AMOUNT[policy]
    try:
        x = float(amount)
    except (TypeError, ValueError):
        raise PruneError(f"{where} {amount!r} for policy '{policy}' is not a number") from None
    if not math.isfinite(x):
        raise PruneError(f"{where} {x} for policy '{policy}' must be finite")
    if policy in ("reduction-rate", "bn-gamma") and not 0 <= x < 1:
        raise PruneError(f"{where} {x:g} for policy '{policy}': the {AMOUNT_MEANING[policy]} must be in [0, 1)")
    if policy == "magnitude" and x <= 0:
        raise PruneError(f"{where} {x:g} for policy 'magnitude': the quality q must be > 0")
    if x < 0:
        raise PruneError(f"{where} {x:g} for policy '{policy}': the threshold must be >= 0")
    return x


def keep_count(channels: int, rate: float, round_to: int = 1) -> int:
    """Filters a reduction rate keeps: ceil((1 - rate) * C), rounded up to a multiple of ``round_to`` (<= C)."""
    k = math.ceil(round((1.0 - rate) * channels, 9))
    if round_to > 1:
        k = math.ceil(k / round_to) * round_to
    return min(channels, k)


def strongest(scores: torch.Tensor, k: int) -> np.ndarray:
    """Boolean keep-mask of the ``k`` largest scores (ties: the lower index stays)."""
    order = np.argsort(-scores.detach().double().cpu().numpy(), kind="stable")
    keep = np.zeros(scores.numel(), bool)
    keep[order[:k]] = True
    return keep


def round_kept(scores: torch.Tensor, keep: np.ndarray, round_to: int) -> np.ndarray:
    """Grow ``keep`` to a multiple of ``round_to`` channels by the next-largest scores."""
    if round_to <= 1:
        return keep
    k = min(keep.size, math.ceil(int(keep.sum()) / round_to) * round_to)
    return keep if k == keep.sum() else strongest(torch.where(torch.as_tensor(keep), torch.inf,
                                                              scores.double().cpu()), k)


def filter_norms(rows: torch.Tensor) -> torch.Tensor:
    """L2 norm of each filter (row of the weight matrix)."""
    return rows.detach().double().norm(dim=1)


def reduction_rate_keep(rows: torch.Tensor, rate: float, round_to: int = 1) -> np.ndarray:
    return strongest(filter_norms(rows), keep_count(rows.shape[0], rate, round_to))


def global_quantile(values: list, p: float) -> float:
    """The p-quantile of the |values| of all layers together (Network Slimming's global threshold)."""
    allv = torch.cat([v.detach().double().abs().reshape(-1).cpu() for v in values]).numpy()
    return float(np.quantile(allv, p))


def below_keep(values: torch.Tensor, threshold: float, inclusive: bool = False) -> np.ndarray:
    """Keep-mask: |v| >= threshold (``inclusive``: |v| > threshold, i.e. |v| <= t is removed)."""
    a = values.detach().double().abs().cpu().numpy()
    return a > threshold if inclusive else a >= threshold


def magnitude_threshold(w: torch.Tensor, q: float) -> float:
    """q * std of the non-zero weights (population std; 0 when the layer has none left)."""
    nz = w.detach().double()[w != 0]
    return float(q * nz.std(unbiased=False)) if nz.numel() else 0.0


def element_keep(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep-mask of the weights with |w| >= threshold (a zero weight is never kept as a survivor)."""
    return (w.abs() >= threshold) & (w != 0)
