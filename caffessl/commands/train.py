"""``caffessl train``: Caffe's ``caffe train`` (solver, weights or snapshot, gpu, signal effects, level/stage).

Logs go to stderr in glog format; on an interactive terminal a progress bar shows the iterations.
``--data=DIR`` (or $CAFFESSL_MNIST): when the solver's nets read MNIST LMDBs that do not exist yet, they are
converted from the MNIST IDX files in DIR first, into the folder the net's ``source`` names.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys

from ..errors import DataSourceError, UnsupportedError

EFFECTS = ("stop", "snapshot", "none")
MNIST_HELP = ("download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from http://yann.lecun.com/exdb/mnist/ "
              "into a folder DIR and pass --data=DIR (or set CAFFESSL_MNIST=DIR)")


def add_arguments(p):
    p.add_argument("--solver", required=True, help="the solver.prototxt")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="comma-separated caffemodels to fine-tune from")
    g.add_argument("--snapshot", help="a .solverstate[.h5] to resume from")
    p.add_argument("--gpu", help="GPU ids: 0, or 0,1 / all for one process per device (data-parallel, NCCL); "
                                 "default: the solver's solver_mode")
    p.add_argument("--cpu", action="store_true", help="run on the CPU whatever the solver's solver_mode says")
    p.add_argument("--procs", type=int, help="data-parallel on N CPU processes (gloo) started here; under "
                                             "torchrun the world comes from its environment instead")
    p.add_argument("--data", help="folder with the MNIST IDX files, converted to the nets' LMDBs if missing")
    p.add_argument("--sigint_effect", choices=EFFECTS, default="stop", help="what Ctrl-C does (Caffe: stop)")
    p.add_argument("--sighup_effect", choices=EFFECTS, default="snapshot", help="what SIGHUP does")
    p.add_argument("--level", type=int, default=0, help="train net state level")
    p.add_argument("--stage", default="", help="comma-separated train net state stages")
    p.add_argument("--allow-python", action="store_true",
                   help="allow `Python` layers (they run code named in the prototxt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


class SignalActions:
    """Caffe's SignalHandler: SIGINT/SIGHUP set a flag; the solver polls it after each iteration.

    Installed before set-up: a Ctrl-C during set-up (nothing to snapshot yet), or a second Ctrl-C while the
    first one's effect is under way, interrupts at once (one line, exit 130; atomic writes leave no partial
    file) -- unless sigint_effect is none. A SIGHUP during set-up takes effect when training starts."""

    def __init__(self, sigint_effect: str, sighup_effect: str):
        self.effects = {signal.SIGINT: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
        self.pending: list[str] = []
        self._old = {}
        self.training = True       # run() clears it for the set-up
        self._sigints = 0

    def _handle(self, signum, _frame):
        effect = self.effects[signum]
        if signum == signal.SIGINT and effect != "none":
            self._sigints += 1
            if not self.training or self._sigints > 1:
                raise KeyboardInterrupt
        self.pending.append(effect)

    def __enter__(self):
        for s in self.effects:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self) -> str:
        while self.pending:
            e = self.pending.pop(0)
            if e != "none":
                return e
        return "none"


def _set_mode(gpu, sp, args=None):
    from .. import mode
    if not gpu:         # Caffe: `solver_mode: GPU` runs on its device_id; a one-line error names the fix
        from ._device import solver_gpus
        ids = solver_gpus(None, bool(getattr(args, "cpu", False)), sp, getattr(args, "solver", "the solver"))
        if ids:
            mode.set_device(ids[0])
            mode.set_mode_gpu()
        else:
            mode.set_mode_cpu()
        return
    if getattr(args, "cpu", False):
        from ..errors import DeviceError
        raise DeviceError(f"--cpu and --gpu={gpu} contradict each other; give one of them")
    from ..devices import gpu_ids
    ids = gpu_ids(gpu)          # checked: CUDA present, ids exist; several ids are launched as ranks
    mode.set_device(ids[0])
    mode.set_mode_gpu()


def _data_layers(sp, source):
    """(net label, layer) for every Data layer of the solver's train and test nets."""
    from ..solver.solver import test_net_params, train_net_param
    nets = [("train net", train_net_param(sp, source))]
    nets += [(f"test net #{i}", p) for i, p in enumerate(test_net_params(sp, source))]
    return [(label, lp) for label, p in nets for lp in p.layer if lp.type == "Data"]


def prepare_mnist(sp, source, data_dir):
    """Convert MNIST IDX -> LMDB for Data layers whose LMDB source is missing; clear error if impossible."""
    missing = [(label, lp) for label, lp in _data_layers(sp, source)
               if not os.path.exists(lp.data_param.source)]
    if not missing:
        return
    label, lp = missing[0]
    src = lp.data_param.source
    if not data_dir:
        raise DataSourceError(f"data source '{src}' (layer '{lp.name}' of the {label}) does not exist; to get "
                              f"MNIST, {MNIST_HELP}")
    if not os.path.isdir(data_dir):
        raise DataSourceError(f"--data={data_dir}: no such folder; {MNIST_HELP}")
    from ..data.mnist import db_paths, ensure_mnist_lmdb
    out_dirs = sorted({os.path.dirname(lp.data_param.source) or "." for _, lp in missing})
    for out in out_dirs:
        expected = set(os.path.normpath(p) for p in db_paths(out).values())
        wanted = {os.path.normpath(lp.data_param.source) for _, lp in missing
                  if (os.path.dirname(lp.data_param.source) or ".") == out}
        if not wanted <= expected:
            bad = sorted(wanted - expected)[0]
            raise DataSourceError(f"data source '{bad}' does not exist and is not an MNIST LMDB name that --data "
                                  f"can create (mnist_train_lmdb / mnist_test_lmdb)")
        ensure_mnist_lmdb(data_dir, out)


def child_args(args) -> list[str]:
    """The flags of this command line again, without --procs: what each launched rank runs."""
    import argparse
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    out = ["train"] + (["--debug"] if getattr(args, "debug", False) else [])
    for a in p._actions:
        v = getattr(args, a.dest, None)
        if a.dest == "procs" or v is None or v == a.default or not a.option_strings:
            continue
        opt = max(a.option_strings, key=len)
        out.append(opt if a.nargs == 0 else f"{opt}={v}")
    return out


def _launch(args):
    """`--procs=N` / `--gpu=0,1`: check the solver here once, convert MNIST once, then start the ranks."""
    from ..log import get_logger, setup_logging
    from ..parallel import launch
    from ..solver.solver import load_solver_param
    setup_logging()
    sp, source = load_solver_param(args.solver)
    prepare_mnist(sp, source, args.data or os.environ.get("CAFFESSL_MNIST"))
    kind, n = launch.plan(args.procs, args.gpu)
    return launch.launch(launch.caffessl_command(child_args(args)), n, get_logger(),
                         sp.snapshot_prefix if sp.HasField("snapshot_prefix") else None)


def run(args):
    from ..parallel import group, launch
    kind, _n = launch.plan(getattr(args, "procs", None), args.gpu)
    if kind == "launch":
        return _launch(args)
    if kind == "rank":
        try:
            return _with_signals(args, True)
        except BaseException as e:   # the rank in the error line; the world is left cleanly
            if e.args and isinstance(e.args[0], str) and not e.args[0].startswith("rank "):
                e.args = (f"rank {os.environ.get('RANK', '?')}: {e.args[0]}",) + e.args[1:]
            raise
        finally:
            group.destroy()
    return _with_signals(args, False)


def _with_signals(args, in_world):
    with SignalActions(args.sigint_effect, args.sighup_effect) as actions:   # set-up included
        actions.training = False
        return _run(args, in_world, actions)


def _run(args, in_world, actions):
    from ..log import get_logger, setup_logging
    from ..solver.solver import get_solver, load_solver_param
    handler = setup_logging()
    log = get_logger()
    # set-up logs are held back until the solver stands, so that bad input prints one error line only
    held = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 10, target=handler)
    log.removeHandler(handler)
    log.addHandler(held)
    try:
        sp, source = load_solver_param(args.solver)
        if args.level or args.stage:
            sp.train_state.level = args.level
            sp.train_state.stage.extend(s for s in args.stage.split(",") if s)
        if in_world:    # join the process group (torchrun or --procs/--gpu): the solver runs data-parallel
            from ..parallel import group, launch
            launch.start_rank(args.gpu, sp)
            if group.local_rank() == 0 and not os.environ.get(launch.LAUNCHER_PID_ENV):
                prepare_mnist(sp, source, args.data or os.environ.get("CAFFESSL_MNIST"))
            import torch.distributed as dist

            from ..parallel.allreduce import collective
            collective("waiting for the other ranks to start", dist.barrier)
        else:
            _set_mode(args.gpu, sp, args)
            prepare_mnist(sp, source, args.data or os.environ.get("CAFFESSL_MNIST"))
        solver = get_solver(sp, source, allow_python=args.allow_python)
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        elif args.weights:
            for w in args.weights.split(","):
                solver.net.copy_from(w)
                for tn in solver.test_nets:
                    tn.copy_from(w)
    except BaseException:
        held.buffer.clear()
        raise
    finally:
        log.removeHandler(held)
        log.addHandler(handler)
        held.flush()
    log.info("Starting Optimization")
    bar = None
    if sys.stderr.isatty() and not args.no_progress and (not in_world or solver.parallel is None
                                                         or solver.parallel.is_root):   # one bar: rank 0's
        from tqdm import tqdm
        bar = tqdm(total=sp.max_iter, initial=solver.iter, unit="it", dynamic_ncols=True, leave=False)
        solver.progress = bar
    try:
        solver.action_fn = actions
        actions.training = True
        solver.solve()
    finally:
        if bar is not None:
            bar.close()
    log.info("Optimization Done.")
    return 0
