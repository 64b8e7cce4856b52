"""Data-parallel training on torch.distributed with Caffe 1.0's multi-GPU semantics.

``group`` (process group from torchrun's environment, timeouts), ``launch`` (``caffessl train --procs=N`` /
``--gpu=0,1``: one process per rank, watched), ``shard`` (rank r reads records r, r+N, ...), ``allreduce``
(averaged gradients, start-up broadcast), ``consistency`` (same solver, bit-identical weights),
``data_parallel`` (the Solver hook: rank-0 duties, agreed signals).
"""
from __future__ import annotations

from .group import is_root


def attach(solver):
    """The solver's DataParallel when it is built inside an initialized process group of more than one
    rank, else None (plain single-process training)."""
    from . import group
    if not group.is_initialized() or group.size() == 1:
        return None
    from .data_parallel import DataParallel
    return DataParallel(solver)


def rank_seed(seed: int) -> int:
    from .data_parallel import rank_seed as _rank_seed
    return _rank_seed(seed)


__all__ = ["attach", "is_root", "rank_seed"]
