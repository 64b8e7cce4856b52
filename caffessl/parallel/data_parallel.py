"""A solver inside a process group runs data-parallel with Caffe 1.0's multi-GPU semantics.

What every rank does, and what only rank 0 does:

* every rank runs the prototxt's batch_size on its own share of the records (shard.py), so the effective
  batch is N x batch_size and the learning rate is unchanged;
* at Caffe's point (Solver callbacks' ``on_gradients_ready``: after the backward passes, before ApplyUpdate)
  the diffs are summed over the ranks and scaled by 1/N; clipping, iter_size normalization, weight decay, the
  SSL regularizers, the update rule, zero-thresholds and masks then run on identical inputs on every rank,
  so the weights stay bit-identical (checked at every display iteration, consistency.py);
* rank 0's weights (and solver history) are broadcast before the first iteration;
* SIGINT/SIGHUP requests are agreed with the gradients, so all ranks stop, or rank 0 snapshots, at the same
  iteration: a stop asked on any rank stops every rank; a snapshot is taken once, when rank 0 asks for it;
* only rank 0 builds the test nets, tests, logs INFO lines and writes snapshots;
* ``random_seed`` s gives rank r the stream s + r (Caffe 1.0's ``random_seed + solver_offset``).
"""
from __future__ import annotations

from ..log import get_logger
from . import group
from .allreduce import GradientAllReduce, broadcast_from_root
from .consistency import check_weights, same_solver

log = get_logger()
NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"     # caffessl.solver.solver's action names
# layers whose params each rank updates in its forward pass from its own batch (not by the solver): like
# Caffe 1.0, each rank keeps its own; rank 0's are tested and snapshotted
LOCAL_STATE_LAYERS = ("BatchNorm",)


def rank_seed(seed: int) -> int:
    """The random seed of this rank: Caffe 1.0 seeds worker r with random_seed + r."""
    return int(seed) + group.rank()


class DataParallel:
    """Attached to a Solver built inside an initialized process group (``Solver.parallel``)."""

    def __init__(self, solver):
        self.solver = solver
        self.rank, self.world = group.rank(), group.size()
        self.is_root = self.rank == 0
        group.quiet_non_root()
        same_solver(solver)
        self._reduce = GradientAllReduce([info.tensor.grad for info in solver.params], n_extra=2)
        self._synced = False
        self._agreed = NONE
        self._deferred = NONE
        self.check_interval = int(solver.param.display)     # 0: no periodic check (check_weights() still works)
        checked = [info for info in solver.params if info.layer.type not in LOCAL_STATE_LAYERS]
        self._checked_names = [info.display_name for info in checked]
        self._checked = [info.tensor for info in checked]
        solver.add_callback(self._on_start, self._on_gradients_ready)
        log.info("Data-parallel training on %d ranks (torch.distributed, %s): each rank runs batch_size, the "
                 "gradients are averaged over the ranks; rank r reads records r, r+%d, ...", self.world,
                 group.backend(), self.world)

    # -- the two callbacks ------------------------------------------------------------------------
    def _on_start(self):
        s = self.solver
        if not self._synced:
            broadcast_from_root([info.tensor for info in s.params] + list(s.history))
            self._synced = True
        if self.check_interval and s.iter % self.check_interval == 0:
            self.check_weights()

    def _on_gradients_ready(self):
        s = self.solver
        local = self._deferred if self._deferred != NONE else (s.action_fn() if s.action_fn is not None
                                                               else NONE)
        self._deferred = NONE
        grads = [info.tensor.grad for info in s.params]
        self._reduce.grads = grads
        # a stop asked on any rank stops all; a snapshot counts as rank 0 asks it (the launcher forwards a
        # signal to every rank, and the ranks may see it in different iterations: one snapshot, not N)
        stops, snaps = self._reduce([float(local == STOP), float(local == SNAPSHOT and self.is_root)],
                                    what=f"all-reduce of the gradients at iteration {s.iter}")
        if snaps > 0:
            self._agreed = SNAPSHOT
            if local == STOP:          # both asked for in one iteration: snapshot now, stop at the next one
                self._deferred = STOP
        elif stops > 0:
            self._agreed = STOP
        else:
            self._agreed = NONE

    # -- what the solver asks ---------------------------------------------------------------------
    def requested_action(self, during_test: bool = False) -> str:
        """The action all ranks agreed on at this iteration's all-reduce. Requests that arrive while rank 0
        tests wait for the next iteration (the other ranks are not in the test phase to agree)."""
        if during_test:
            return NONE
        a, self._agreed = self._agreed, NONE
        return a

    def check_weights(self):
        """Fail loudly (DistributedError on every rank) unless all ranks' weights are bit-identical."""
        check_weights(self._checked_names, self._checked, self.solver.iter)
