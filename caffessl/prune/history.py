"""Zero the solver's history (momentum, squared-gradient accumulators...) of the values pruning removed, so
that resuming from a solverstate does not push them away from zero on the first update."""
from __future__ import annotations

import numpy as np

from ..errors import PruneError


def zero_history(state, train_params, zeroed: dict) -> int:
    """``state``: SolverStateData; ``train_params``: the training net's learnable params (ParamInfo, the
    solver's order; history entry ``h * n + i`` belongs to param i); ``zeroed``: {layer: [bool per blob]}.
    Returns the number of history values set to 0."""
    n = len(train_params)
    if n == 0 or len(state.history) % n:
        raise PruneError(f"the solverstate has {len(state.history)} history blobs, not a multiple of the "
                         f"{n} learnable params of the training net (another net's solverstate?)")
    count = 0
    for k, h in enumerate(state.history):
        info = train_params[k % n]
        masks = zeroed.get(info.layer_name)
        if masks is None or info.index >= len(masks):
            continue
        m = masks[info.index]
        if m.size != h.size:
            raise PruneError(f"solverstate history of '{info.layer_name}' param {info.index} has "
                             f"{h.size} values, the pruned blob {m.size}")
        h = np.array(h, np.float32).reshape(-1)
        count += int((h[m.reshape(-1)] != 0).sum())
        h[m.reshape(-1)] = 0
        state.history[k] = h.reshape(np.shape(state.history[k]))
    return count
