"""What stands between a training fault and a lost or poisoned snapshot.

* ``check_finite(solver)``: before a snapshot, every weight and every history blob must be finite; a step
  that made them NaN/Inf while the loss was still finite stops training with ``TrainingDivergedError``
  naming the last snapshot that was written from finite values (never a poisoned one, since none is written).
* ``write_pair(solver, write_model, write_state)``: the caffemodel then the solverstate, each atomic
  (``caffessl.io.atomic``); an OSError (disk full, EFBIG under RLIMIT_FSIZE, permissions) removes the new
  caffemodel of the unfinished pair and becomes one ``SnapshotWriteError`` line; the previous pair is untouched.
* ``remove_orphans(prefix)``: temporary files that a killed writer left beside ``<prefix>_iter_*`` go at the
  next start (a temporary file names its writer's pid; only those of dead processes are removed).
"""
from __future__ import annotations

import logging
import math
import os

import torch

from ..errors import SnapshotWriteError, TrainingDivergedError

log = logging.getLogger("caffessl")


def last_snapshot_text(solver) -> str:
    return solver.last_snapshot[1] if solver.last_snapshot else "none written in this run"


def _first_non_finite(tensors):
    for name, t in tensors:
        if t.numel() and not bool(torch.isfinite(t).all()):
            return name
    return None


def check_finite(solver) -> None:
    """TrainingDivergedError when a weight or history blob holds NaN/Inf (one fused check per tensor)."""
    named = [(f"param '{info.display_name}'", info.tensor.detach()) for info in solver.params]
    n = max(len(solver.params), 1)
    named += [(f"solver history {i} (param '{solver.params[i % n].display_name}')", h)
              for i, h in enumerate(solver.history)]
    bad = _first_non_finite(named)
    if bad is not None:
        raise TrainingDivergedError(
            f"iteration {solver.iter}: {bad} holds NaN or Inf although the loss was finite: training diverged "
            f"(lower base_lr, or clip_gradients); no snapshot was written from these values; last snapshot: "
            f"{last_snapshot_text(solver)}")


def check_loss(solver, loss) -> None:
    if not math.isfinite(loss):
        from ..log import fmt_num
        raise TrainingDivergedError(
            f"iteration {solver.iter}: the training loss is {fmt_num(loss)}: training diverged (lower base_lr, or "
            f"clip_gradients); the weights were not updated or saved; last snapshot: {last_snapshot_text(solver)}")


def write_pair(solver, model_path: str, write_model, state_path: str, write_state) -> None:
    """Write the caffemodel, then the solverstate; on a write error leave the previous pair as it was."""
    check_finite(solver)
    wrote_model = False
    try:
        write_model()
        wrote_model = True
        write_state()
    except OSError as e:
        if wrote_model:
            try:
                os.unlink(model_path)       # a caffemodel without its solverstate is not a snapshot
            except OSError:
                pass
        reason = e.strerror or str(e)
        raise SnapshotWriteError(
            f"cannot write snapshot {state_path if wrote_model else model_path} at iteration {solver.iter}: "
            f"{reason}; nothing of it was kept, the previous snapshot is intact: "
            f"{last_snapshot_text(solver)}") from None


def remove_orphans(prefix: str) -> list:
    """Remove ``.tmp-<name>_iter_*`` files beside the snapshot prefix whose writer is no longer running."""
    from ..io.atomic import remove_orphan_temps
    if not prefix:
        return []
    folder = os.path.dirname(os.path.abspath(prefix + "_"))
    removed = remove_orphan_temps(folder, os.path.basename(prefix) + "_iter_")
    for p in removed:
        log.info("Removed %s, left by an interrupted snapshot", p)
    return removed
