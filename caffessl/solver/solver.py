"""The training loop (Caffe's Solver::Solve / Step / TestAll / Snapshot / Restore + SGDSolver::ApplyUpdate)
and pycaffe's solver classes.

One iteration, exactly as Caffe orders it::

    ClearParamDiffs -> [TestAll] -> callbacks' on_start -> iter_size x ForwardBackward -> smoothed loss
    -> display -> callbacks' on_gradients_ready -> ApplyUpdate: lr, [lr + sparsity lines], ClipGradients,
       normalize, regularize, compute update value (one rule call per lr_mult group), update params
       (W -= mask*update, Zerout) -- see apply_update
    -> [Total regularization terms] -> iter += 1 -> [snapshot] -> [stop]

Everything is driven by the SolverParameter; the update rules are the functions in ``updates.py``.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .. import mode, parallel
from ..errors import CaffemodelFormatError, SolverConfigError, TrainingDivergedError
from ..log import fmt_num, get_logger
from ..proto import caffe_pb2
from . import guard, updates
from .decoupled import DecoupledDecay
from .lr_policy import check_policy, learning_rate
from ..io.solverstate import SolverStateData, read_solverstate, write_solverstate, write_solverstate_hdf5
from .snapshot import snapshot_filename

log = get_logger()
f32 = np.float32

# what a requested action (SIGINT/SIGHUP in the CLI) asks the loop to do: Caffe's SolverAction
NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"


def load_solver_param(solver, source=None) -> tuple["caffe_pb2.SolverParameter", str]:
    """A SolverParameter from a path or a message (upgraded: ``solver_type`` -> ``type``); ``source`` names a
    message in error messages (e.g. the file it was read from)."""
    from ..io.upgrade import upgrade_solver_as_needed
    if isinstance(solver, caffe_pb2.SolverParameter):
        sp = caffe_pb2.SolverParameter()
        sp.CopyFrom(solver)
        source = source or "<SolverParameter>"
        return upgrade_solver_as_needed(sp, source), source
    from ..io.prototxt import read_solver_prototxt
    return read_solver_prototxt(solver), os.fspath(solver)


def _read_net_file(path, what, source):
    from ..errors import FileMissingError
    from ..io.prototxt import read_net_prototxt
    if not os.path.isfile(path):
        raise FileMissingError(f"{source}: {what} file '{path}' does not exist (paths in a solver are relative to "
                               f"the current directory, {os.getcwd()}, as in Caffe)")
    return read_net_prototxt(path)


def train_net_param(sp, source) -> "caffe_pb2.NetParameter":
    """Solver::InitTrainNet: exactly one of train_net_param, train_net, net_param, net; state merged."""
    fields = [f for f in ("train_net_param", "train_net", "net_param", "net") if sp.HasField(f)]
    if not fields:
        raise SolverConfigError(f"{source}: no train net: set one of net, net_param, train_net, train_net_param")
    if len(fields) > 1:
        raise SolverConfigError(f"{source}: more than one train net given ({', '.join(fields)}); set exactly one")
    f = fields[0]
    if f.endswith("_param"):       # upgraded with the SolverParameter (io.upgrade.upgrade_solver_as_needed)
        net_param = caffe_pb2.NetParameter()
        net_param.CopyFrom(getattr(sp, f))
    else:
        net_param = _read_net_file(getattr(sp, f), f, source)
    state = caffe_pb2.NetState()
    state.phase = caffe_pb2.TRAIN
    state.MergeFrom(net_param.state)
    state.MergeFrom(sp.train_state)
    net_param.state.CopyFrom(state)
    return net_param


def test_net_params(sp, source) -> list:
    """Solver::InitTestNets: test_net_param, then test_net files, then instances of the generic net."""
    generic = [f for f in ("net_param", "net") if sp.HasField(f)]
    if len(generic) > 1:
        raise SolverConfigError(f"{source}: both net_param and net are given; set one")
    n_specific = len(sp.test_net_param) + len(sp.test_net)
    n_iter = len(sp.test_iter)
    if generic:
        if n_iter < n_specific:
            raise SolverConfigError(f"{source}: test_iter must be given for each test net ({n_specific} test "
                                    f"nets, {n_iter} test_iter)")
    elif n_iter != n_specific:
        raise SolverConfigError(f"{source}: test_iter must be given once per test net: {n_iter} test_iter but "
                                f"{n_specific} test nets (test_net / test_net_param; the train net is "
                                f"train_net{'' if sp.HasField('train_net') else '_param'}, which is not tested)")
    n_total = n_iter if generic else n_specific
    if len(sp.test_state) and len(sp.test_state) != n_total:
        raise SolverConfigError(f"{source}: test_state must be unspecified or given once per test net "
                                f"({n_total}), got {len(sp.test_state)}")
    if n_total and sp.test_interval <= 0:
        raise SolverConfigError(f"{source}: test nets need test_interval > 0")
    params = []
    for p in sp.test_net_param:
        q = caffe_pb2.NetParameter()
        q.CopyFrom(p)
        params.append(q)
    for path in sp.test_net:
        params.append(_read_net_file(path, "test_net", source))
    if generic and n_total > n_specific:
        if sp.HasField("net_param"):
            base = caffe_pb2.NetParameter()
            base.CopyFrom(sp.net_param)
        else:
            base = _read_net_file(sp.net, "net", source)
        for _ in range(n_total - n_specific):
            q = caffe_pb2.NetParameter()
            q.CopyFrom(base)
            params.append(q)
    for i, p in enumerate(params):
        state = caffe_pb2.NetState()
        state.phase = caffe_pb2.TEST
        state.MergeFrom(p.state)
        if len(sp.test_state):
            state.MergeFrom(sp.test_state[i])
        p.state.CopyFrom(state)
    return params


def check_solver_param(sp, solver_type, source) -> None:
    """What Caffe CHECKs in the solver constructors, refused at set-up with the field named."""
    if solver_type not in updates.RULES:
        raise SolverConfigError(f"{source}: unknown solver type '{solver_type}' (known: "
                                f"{', '.join(updates.RULES)})")
    check_policy(sp, source)
    if solver_type in ("AdaGrad", "RMSProp") and sp.momentum != 0:
        raise SolverConfigError(f"{source}: momentum cannot be used with {solver_type} (momentum: {sp.momentum}); "
                                f"set momentum: 0")
    if solver_type == "RMSProp" and not 0 <= sp.rms_decay < 1:
        raise SolverConfigError(f"{source}: rms_decay should lie in [0, 1), got {sp.rms_decay}")
    if sp.iter_size < 1:
        raise SolverConfigError(f"{source}: iter_size must be >= 1, got {sp.iter_size}")
    if sp.average_loss < 1:
        raise SolverConfigError(f"{source}: average_loss must be >= 1, got {sp.average_loss}")
    if sp.snapshot < 0 or sp.display < 0 or sp.test_interval < 0:
        raise SolverConfigError(f"{source}: snapshot, display and test_interval must be >= 0")
    if sp.snapshot and not sp.HasField("snapshot_prefix"):
        raise SolverConfigError(f"{source}: snapshot is {sp.snapshot} but snapshot_prefix is not set")


class Solver:
    """Caffe's Solver + SGDSolver. ``type_name`` (a subclass) fixes the rule; the base reads ``param.type``."""

    type_name: str | None = None

    def __init__(self, solver, *, action_fn=None, source=None, allow_python=False):
        from ..net import Net
        from .regularize import Regularizer
        from .stabilize import Stabilizer
        sp, source = load_solver_param(solver, source)
        self.param = sp
        self.source = source
        self.solver_type = self.type_name or sp.type
        check_solver_param(sp, self.solver_type, source)
        self._rule = updates.RULES[self.solver_type]
        self._hp = self._rule.hyper_parameters(sp)
        log.info("Initializing solver from parameters: \n%s", _text(sp))
        if sp.random_seed >= 0:
            mode.set_random_seed(parallel.rank_seed(sp.random_seed))     # + rank in a process group
        train_param = train_net_param(sp, source)
        log.info("Creating training net from %s", _net_origin(sp, ("train_net_param", "train_net", "net_param", "net")))
        self.net = Net(train_param, phase=train_param.state.phase, allow_python=allow_python)
        self.test_nets = []
        test_params = test_net_params(sp, source)
        for i, tp in enumerate(test_params if parallel.is_root() else ()):   # only rank 0 tests (Caffe 1.0)
            log.info("Creating test net (#%d)", i)
            self.test_nets.append(Net(tp, phase=tp.state.phase, allow_python=allow_python))
        for tn in self.test_nets:
            tn.share_with(self.net)
        self.params = list(self.net.learnable_params)
        # Caffe's diffs exist for every learnable blob (lr_mult 0 too): allocate once, autograd accumulates
        for info in self.params:
            if info.tensor.grad is None:
                info.tensor.grad = torch.zeros_like(info.tensor)
        n = len(self.params)
        self.history = [torch.zeros_like(info.tensor) for _ in range(self._rule.n_history) for info in self.params]
        # the params by lr_mult (one rule call each): (lr_mult, their indices, their history per slot)
        by_mult: dict = {}
        for i, info in enumerate(self.params):
            by_mult.setdefault(float(info.lr_mult), []).append(i)
        self._rate_groups = [(m, idx, [[self.history[k * n + i] for i in idx] for k in range(self._rule.n_history)])
                             for m, idx in by_mult.items()]
        self.regularizer = Regularizer(self.net, sp)
        self.stabilizer = Stabilizer(self.net, sp)
        self.decoupled = DecoupledDecay(self.params, sp, source)   # W -= (lr_t/base_lr)*lambda*W after the update
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._losses: list = []
        self._start_iter = 0
        self.requested_early_exit = False
        self.action_fn = action_fn          # () -> "none" | "stop" | "snapshot" (Caffe's GetRequestedAction)
        self.progress = None                # an object with .update(n) (tqdm), set by the CLI on a terminal
        self.last_snapshot: tuple | None = None
        self.last_regularization_term = 0.0
        self._callbacks: list = []          # (on_start, on_gradients_ready) pairs: Caffe's callbacks_
        if sp.snapshot_prefix:
            guard.remove_orphans(sp.snapshot_prefix)   # temporary files of a snapshot a kill interrupted
        self.parallel = parallel.attach(self)   # data-parallel in a process group (caffessl/parallel), or None
        log.info("Solver scaffolding done.")

    # -- pycaffe surface ------------------------------------------------------------------------------
    def _requested_action(self, during_test: bool = False) -> str:
        if self.parallel is not None:       # agreed by all ranks with the gradients
            return self.parallel.requested_action(during_test)
        return self.action_fn() if self.action_fn is not None else NONE

    def add_callback(self, on_start, on_gradients_ready):
        """pycaffe's Solver.add_callback: two no-argument callables, called in registration order at the
        start of every iteration (after the optional TestAll, before the forward/backward passes) and once
        the gradients are ready (after the loss display, before ApplyUpdate: the diffs are the backward's,
        without clipping, normalization or weight decay, and what a callback leaves in them is applied)."""
        if not callable(on_start) or not callable(on_gradients_ready):
            raise TypeError("add_callback(on_start, on_gradients_ready): both must be callables with no arguments")
        self._callbacks.append((on_start, on_gradients_ready))

    def _run_callbacks(self, which: int):
        for cb in self._callbacks:
            cb[which]()

    def solve(self, resume_file=None):
        sp = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", sp.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        self.step(sp.max_iter - self.iter)
        if sp.snapshot_after_train and (not sp.snapshot or self.iter % sp.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if sp.display and self.iter % sp.display == 0:
            with torch.no_grad():
                loss = f32(self.net.forward_loss())
            self._update_smoothed_loss(loss)
            log.info("Iteration %d, loss = %s", self.iter, fmt_num(self.smoothed_loss))
        if sp.test_interval and self.iter % sp.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def step(self, iters: int):
        sp = self.param
        stop_iter = self.iter + int(iters)
        self._start_iter = self.iter
        self._losses = []
        self.smoothed_loss = f32(0)
        iter_size = sp.iter_size
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if sp.test_interval and self.iter % sp.test_interval == 0 and (self.iter > 0 or sp.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            self._run_callbacks(0)                              # Caffe: callbacks_[i]->on_start()
            display = bool(sp.display) and self.iter % sp.display == 0
            self.net.debug_info = display and sp.debug_info      # Solver::Step: net_->set_debug_info(...)
            loss = f32(0)
            for _ in range(iter_size):
                loss += f32(self.net.forward_backward())
            loss /= f32(iter_size)
            guard.check_loss(self, loss)
            self._update_smoothed_loss(loss)
            if display:   # the SSL fork's line (BVLC 1.0 later added "(x iter/s, ...)")
                log.info("Iteration %d, loss = %s", self.iter, fmt_num(self.smoothed_loss))
                self._log_outputs(self.net, "Train", None)
            self._run_callbacks(1)                              # Caffe: callbacks_[i]->on_gradients_ready()
            # params / diffs written through pycaffe's host mirrors (GPU) go to the tensors, and later reads
            # of .data see the update
            self.net.sync_host_writes()
            term = self.apply_update(display)
            if display:
                log.info("    Total regularization terms: %s loss+regular. : %s", fmt_num(term),
                         fmt_num(f32(term) + f32(self.smoothed_loss)))
            self.iter += 1
            if self.progress is not None:
                self.progress.update(1)
            request = self._requested_action()
            if (sp.snapshot and self.iter % sp.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _update_smoothed_loss(self, loss):
        avg = self.param.average_loss
        if len(self._losses) < avg:
            self._losses.append(f32(loss))
            n = len(self._losses)
            self.smoothed_loss = f32((f32(self.smoothed_loss) * f32(n - 1) + f32(loss)) / f32(n))
        else:
            idx = (self.iter - self._start_iter) % avg
            self.smoothed_loss = f32(self.smoothed_loss + (f32(loss) - self._losses[idx]) / f32(avg))
            self._losses[idx] = f32(loss)

    def _log_outputs(self, net, kind, scores):
        """'Train/Test net output #k: name = v (* w = w*v loss)', one line per output element."""
        k = 0
        for name in net.outputs:
            w = net.blob_loss_weights.get(name, 0.0)
            values = scores[name] if scores is not None else net.blobs[name].data.ravel()
            for v in np.asarray(values, dtype=np.float32).ravel():
                extra = f" (* {fmt_num(w)} = {fmt_num(f32(w) * v)} loss)" if w else ""
                log.info("    %s net output #%d: %s = %s%s", kind, k, name, fmt_num(v), extra)
                k += 1

    # -- the update (SGDSolver::ApplyUpdate + Net::Update) --------------------------------------------
    def apply_update(self, display: bool = False) -> float:
        """SGDSolver::ApplyUpdate, the same named steps on every iteration; returns the regularization term
        (computed on display iterations only, else 0.0).

        The gradients are final when this starts: callbacks' ``on_gradients_ready`` ran just before (that is
        where a data-parallel all-reduce of the diffs belongs, as Caffe 1.0's P2PSync does it). A step that
        acts on the weights after the update (decoupled weight decay) goes after ``update_params``."""
        rate = self.get_learning_rate(display)
        self.clip_gradients()
        self.normalize()
        term = self.regularize(display)
        self.compute_update_value(rate)
        self.update_params()
        self.decoupled.apply(rate)                  # decoupled weight decay, after the update (decoupled.py)
        self.last_regularization_term = term
        return term

    def get_learning_rate(self, display: bool = False) -> float:
        """GetLearningRate (advancing a multistep policy's step) and, on display iterations, the lr line and
        the fork's sparsity lines."""
        rate, self.current_step, moved = learning_rate(self.param, self.iter, self.current_step)
        if moved:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, self.current_step)
        if display:
            log.info("Iteration %d, lr = %s", self.iter, fmt_num(rate))
            from .sparsity_log import columns_line
            log.info("%s", columns_line(self.regularizer.params))
            for line in self.regularizer.sparsity_lines():
                log.info("%s", line)
        return rate

    def normalize(self):
        """Normalize: diffs accumulated over iter_size forward/backward passes are scaled by 1/iter_size."""
        if self.param.iter_size > 1:
            torch._foreach_mul_(self._grads(), float(f32(1) / f32(self.param.iter_size)))

    def regularize(self, display: bool = False) -> float:
        """Regularize: weight decay and the SSL group Lasso terms added to the diffs (regularize.py)."""
        return self.regularizer.apply_all(want_term=display)

    def compute_update_value(self, rate: float):
        """ComputeUpdateValue: the rule (updates.py) for each group of params sharing a local rate
        (rate * lr_mult in float32); the update values replace the diffs, the history advances."""
        grads = self._grads()
        for lr_mult, idx, history in self._rate_groups:
            self._rule.fn([grads[i] for i in idx], history, local_rate=float(f32(rate) * f32(lr_mult)),
                          t=self.iter + 1, **self._hp)

    def _grads(self) -> list:
        return [info.tensor.grad for info in self.params]

    def update_params(self):
        """Net::Update: W -= mask .* update for every learnable param, then Zerout (stabilize.py)."""
        self.stabilizer.update_all(self.params)

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        grads = self._grads()
        sumsq = torch.stack([(g * g).sum() for g in grads]).sum() if grads else torch.zeros(())
        l2 = float(torch.sqrt(sumsq))
        if l2 > clip:
            scale = float(f32(clip) / f32(l2))
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                     fmt_num(l2), fmt_num(clip), fmt_num(scale))
            for g in grads:
                g.mul_(scale)

    # -- testing ------------------------------------------------------------------------------------
    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0):
        sp = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n_iter = sp.test_iter[test_net_id]
        sums = None
        loss = f32(0)
        with torch.no_grad():
            for _ in range(n_iter):
                request = self._requested_action(during_test=True)
                while request != NONE:
                    if request == SNAPSHOT:
                        self.snapshot()
                    elif request == STOP:
                        self.requested_early_exit = True
                    request = self._requested_action(during_test=True)
                if self.requested_early_exit:
                    break
                it_loss = net.forward_loss()
                if sp.test_compute_loss:
                    loss += f32(it_loss)
                res = {name: net.blobs[name].data.astype(np.float32).ravel() for name in net.outputs}
                if sums is None:
                    sums = {k: v.copy() for k, v in res.items()}
                else:
                    for k, v in res.items():
                        sums[k] += v
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        if sp.test_compute_loss:
            log.info("Test loss: %s", fmt_num(loss / f32(n_iter)))
        means = {k: v / f32(n_iter) for k, v in (sums or {}).items()}
        self._log_outputs(net, "Test", means)
        return means

    # -- snapshots ----------------------------------------------------------------------------------
    def _filename(self, ext):
        return snapshot_filename(self.param.snapshot_prefix, self.iter, ext)

    def snapshot(self) -> str:
        """Write the weights and the solver state at the current iteration; return the solverstate path
        (data-parallel: rank 0 writes, the other ranks return None). Only finite values are written, and a write
        error keeps the previous snapshot (solver/guard.py)."""
        if self.parallel is not None and not self.parallel.is_root:
            return None
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self._filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        path = self._filename(".solverstate.h5" if hdf5 else ".solverstate")

        def write_model():
            if hdf5:
                log.info("Snapshotting to HDF5 file %s", model)
                self.net.save_hdf5(model, write_diff=self.param.snapshot_diff)
            else:
                log.info("Snapshotting to binary proto file %s", model)
                self.net.save(model, write_diff=self.param.snapshot_diff)

        def write_state():
            st = SolverStateData(self.iter, model, self.current_step,
                                 [h.detach().cpu().numpy() for h in self.history])
            if hdf5:
                log.info("Snapshotting solver state to HDF5 file %s", path)
                write_solverstate_hdf5(path, st)
            else:
                log.info("Snapshotting solver state to binary proto file %s", path)
                write_solverstate(path, st)
        guard.write_pair(self, model, write_model, path, write_state)
        self.last_snapshot = (model, path)
        return path

    def restore(self, path):
        """Weights (from learned_net), iter, current_step and history; not the data position (as Caffe)."""
        path = os.fspath(path)
        st = read_solverstate(path)
        if len(st.history) != len(self.history):
            raise CaffemodelFormatError(
                f"{path}: holds {len(st.history)} history blobs, the {self.solver_type} solver of this net needs "
                f"{len(self.history)} (a solverstate of another solver type or net?)")
        for i, (h, arr) in enumerate(zip(self.history, st.history)):
            if arr.size != h.numel():
                raise CaffemodelFormatError(
                    f"{path}: history blob {i} has shape {tuple(arr.shape)}, the param "
                    f"'{self.params[i % len(self.params)].display_name}' has shape {tuple(h.shape)}")
        if st.learned_net:
            self.net.copy_from(st.learned_net)
        self.iter = st.iter
        self.current_step = st.current_step
        self.last_snapshot = (st.learned_net, path)   # what a later fault falls back to
        log.info("SGDSolver: restoring history")
        with torch.no_grad():
            for h, arr in zip(self.history, st.history):
                h.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(h.shape))


def _net_origin(sp, fields) -> str:
    for f in fields:
        if sp.HasField(f):
            return f"{f.replace('_', ' ')}." if f.endswith("_param") else f"net file: {getattr(sp, f)}"
    return "?"


def _text(msg) -> str:
    from ..io.prototxt import to_text
    return to_text(msg)


class SGDSolver(Solver):
    type_name = "SGD"


class NesterovSolver(Solver):
    type_name = "Nesterov"


class AdaGradSolver(Solver):
    type_name = "AdaGrad"


class RMSPropSolver(Solver):
    type_name = "RMSProp"


class AdaDeltaSolver(Solver):
    type_name = "AdaDelta"


class AdamSolver(Solver):
    type_name = "Adam"


SOLVERS = {c.type_name: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                    AdamSolver)}


def get_solver(solver, source=None, **kwargs) -> Solver:
    """pycaffe's ``caffe.get_solver(path)``: the solver class named by the file's ``type``."""
    sp, source = load_solver_param(solver, source)
    cls = SOLVERS.get(sp.type)
    if cls is None:
        raise SolverConfigError(f"{source}: unknown solver type '{sp.type}' (known: {', '.join(SOLVERS)})")
    return cls(sp, source=source, **kwargs)
