"""Per-layer random streams derived from the global seed (caffessl.set_random_seed seeds numpy).

Caffe gives each data layer / prefetch thread its own RNG seeded from the global one when it starts; we do
the same: one draw from numpy's global generator at layer set-up, so results depend on the seed and on the
order in which layers are built, never on thread timing.
"""
from __future__ import annotations

import numpy as np


def layer_rng() -> np.random.RandomState:
    return np.random.RandomState(int(np.random.randint(0, 2 ** 31 - 1)))
