"""Checks that keep a data-parallel run honest, each one collective:

* ``same_solver``: every rank runs the same solver and nets (a SHA-256 of their prototxt text, gathered);
* ``check_weights``: the ranks' weights are bit-identical (per param, two integer checksums of the float
  bit patterns, gathered), run at every display iteration; a difference is a DistributedError naming the
  iteration, the first param that differs and the ranks.
"""
from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from ..errors import DistributedError
from .allreduce import collective

_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
             torch.bfloat16: torch.int16}
_MOD = 65521   # the position weights of the second checksum cycle through 1..65521


def solver_digest(solver) -> str:
    """SHA-256 of the solver's text and of its train net's text (as read, upgraded and filtered)."""
    from ..io.prototxt import to_text
    h = hashlib.sha256()
    h.update(to_text(solver.param).encode())
    h.update(to_text(solver.net.net_param).encode())
    return h.hexdigest()


def same_solver(solver) -> None:
    """All ranks gather (digest, solver source); any difference: one error line naming both ranks' files."""
    mine = (solver_digest(solver), str(solver.source))
    everyone = [None] * dist.get_world_size()
    collective("comparing the ranks' solvers", dist.all_gather_object, everyone, mine)
    for r, (digest, source) in enumerate(everyone):
        if digest != everyone[0][0]:
            raise DistributedError(
                f"the ranks disagree on the solver: rank 0 runs '{everyone[0][1]}' (solver+net sha256 "
                f"{everyone[0][0][:12]}), rank {r} runs '{source}' (sha256 {digest[:12]}); start every rank with "
                f"the same solver and net files")


def checksums(tensors) -> torch.Tensor:
    """Per tensor, [sum of bit patterns, position-weighted sum of bit patterns] as int64 (wrapping)."""
    out = []
    for t in tensors:
        flat = t.detach().reshape(-1)
        bits = flat.view(_INT_VIEW.get(flat.dtype, torch.int32)).to(torch.int64)
        w = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % _MOD + 1
        out.append(torch.stack([bits.sum(), (bits * w).sum()]))
    return torch.stack(out) if out else torch.zeros((0, 2), dtype=torch.int64)


def check_weights(names, tensors, iteration: int) -> None:
    """Raise DistributedError on every rank unless all ranks hold bit-identical ``tensors``."""
    mine = checksums(tensors)
    world = dist.get_world_size()
    everyone = [torch.empty_like(mine) for _ in range(world)]
    collective("the weight consistency check", dist.all_gather, everyone, mine)
    for r in range(1, world):
        diff = (everyone[r] != everyone[0]).any(dim=1).nonzero()
        if diff.numel():
            i = int(diff[0, 0])
            raise DistributedError(
                f"iteration {iteration}: the weights of rank {r} differ from rank 0's (first: param '{names[i]}'; "
                f"{int(diff.numel())} params differ): the ranks are no longer training one model -- a layer or "
                f"regularizer that is not deterministic, or a rank that changed its weights outside the solver")
