"""Starting the ranks on one machine, and what a rank does when it starts.

``caffessl train --procs=N`` (N CPU processes, gloo) and ``--gpu=0,1`` / ``--gpu=all`` (one process per device,
NCCL) start the ranks as ``python -m caffessl.cli train ...`` with torchrun's variables (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT=a free port), each in its own session so that
a terminal's Ctrl-C reaches the launcher once and the launcher forwards SIGINT/SIGHUP/SIGTERM to every rank
exactly once. The launcher watches its children: when one fails or is killed, the others get a few seconds
to stop on their own (their collectives fail at once), then SIGTERM, then SIGKILL; the error names the rank.
Under torchrun the same rank set-up runs from the environment torchrun provides.
"""
from __future__ import annotations

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from ..devices import gpu_ids
from ..errors import DeviceError, DistributedError
from . import group

LAUNCHER_PID_ENV = "CAFFESSL_LAUNCHER_PID"
GRACE_ENV = "CAFFESSL_STOP_GRACE"        # seconds the other ranks get to stop on their own after a failure
DEFAULT_GRACE_S = 10.0


# -- what the train command does ---------------------------------------------------------------------

def plan(procs, gpu) -> tuple[str, int]:
    """('single', 1), ('launch', N) or ('rank', WORLD_SIZE) for ``--procs`` / ``--gpu`` and the environment."""
    if procs is not None and gpu is not None:
        raise DistributedError(f"--gpu={gpu} and --procs={procs} cannot be used together: --gpu starts one "
                               f"process per GPU, --procs=N starts N CPU processes")
    if group.in_env_world():
        world = group.env_int("WORLD_SIZE")
        if procs is not None:
            raise DistributedError(f"--procs={procs}: this process is already rank {os.environ['RANK']} of a world "
                                   f"of {world} (RANK/WORLD_SIZE are set, e.g. by torchrun): leave --procs out")
        return "rank", world
    if procs is not None:
        if procs < 1:
            raise DistributedError(f"--procs={procs}: give the number of CPU processes (>= 1)")
        return ("launch", procs) if procs > 1 else ("single", 1)
    if gpu is not None:
        n = len(gpu_ids(gpu))
        return ("launch", n) if n > 1 else ("single", 1)
    return "single", 1


def rank_device(gpu, sp) -> int | None:
    """This rank's CUDA device (None: CPU): ``--gpu`` ids (or every device for 'all') indexed by LOCAL_RANK;
    without --gpu, solver_mode: GPU uses device LOCAL_RANK."""
    from ..proto import caffe_pb2
    lr, lws = group.local_rank(), group.local_world_size()
    if not gpu:
        if not (sp.HasField("solver_mode") and sp.solver_mode == caffe_pb2.SolverParameter.GPU):
            return None
        gpu = "all"
    ids = gpu_ids(gpu)
    if len(ids) == 1 and lws > 1:
        raise DeviceError(f"--gpu={gpu} names one device for the {lws} ranks on this machine; name one device "
                          f"per local rank (--gpu=0,1,...) or use --gpu=all")
    if lr >= len(ids):
        raise DeviceError(f"--gpu={gpu}: local rank {lr} has no device ({len(ids)} named for {lws} local ranks)")
    return ids[lr]


def start_rank(gpu, sp) -> str:
    """Join the process group as this rank (NCCL on this rank's GPU, else gloo); set caffessl's mode to
    match; a watchdog ends the rank when the launcher that started it is gone. Returns the backend."""
    from .. import mode
    dev = rank_device(gpu, sp)
    if dev is None:
        mode.set_mode_cpu()
        backend = "gloo"
    else:
        import torch
        torch.cuda.set_device(dev)
        mode.set_device(dev)
        mode.set_mode_gpu()
        backend = "nccl"
    group.init_from_env(backend)
    _watch_launcher()
    return backend


def _watch_launcher():
    pid = os.environ.get(LAUNCHER_PID_ENV)
    if not pid or not pid.isdigit():
        return

    def watch():
        while True:
            if os.getppid() != int(pid):
                os._exit(1)      # orphaned: the launcher was killed; its collectives would hang otherwise
            time.sleep(1.0)
    threading.Thread(target=watch, name="caffessl-launcher-watch", daemon=True).start()


# -- the launcher --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def last_snapshot(prefix: str) -> str | None:
    """The solverstate of the highest iteration written under ``snapshot_prefix``, if any."""
    best = None
    for path in glob.glob(glob.escape(prefix) + "_iter_*.solverstate*"):
        m = re.search(r"_iter_(\d+)\.solverstate(\.h5)?$", path)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def _child_env(rank: int, n: int, port: int) -> dict:
    import caffessl
    env = dict(os.environ)
    # the ranks import the caffessl this process runs (a checkout put on sys.path by a script, too)
    root = os.path.dirname(os.path.dirname(os.path.abspath(caffessl.__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.path.basename(root) not in ("site-packages", "dist-packages") and root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root] + paths)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
               GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    return env


def caffessl_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "caffessl.cli", *args]


def launch(command: list[str], n: int, log=None, snapshot_prefix: str | None = None) -> int:
    """Run ``command`` (e.g. ``caffessl_command(["train", ...])``) as ranks 0..n-1 and watch them; 0 when all
    succeed, else a DistributedError naming the first rank that failed (and the snapshot to resume from)."""
    port = _free_port()
    grace = float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))
    procs = []
    forwarded = [s for s in (signal.SIGINT, getattr(signal, "SIGHUP", None), signal.SIGTERM) if s is not None]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, forward) for s in forwarded}
    try:
        for r in range(n):
            p = subprocess.Popen(list(command), env=_child_env(r, n, port),
                                 start_new_session=True)
            procs.append(p)
            if log is not None:
                log.info("Started rank %d of %d (pid %d)", r, n, p.pid)
        failure, failed_at, killed = None, None, False
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if failure is None:
                failure = next(((r, c) for r, c in enumerate(codes) if c not in (None, 0)), None)
                failed_at = time.monotonic() if failure else None
            elif time.monotonic() - failed_at > grace:
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGKILL if killed else signal.SIGTERM)
                killed, failed_at = True, time.monotonic() - grace + 3.0
            time.sleep(0.05)
        if failure is None:
            failure = next(((r, c) for r, c in enumerate(codes) if c != 0), None)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s, h in old.items():
            signal.signal(s, h)
    if failure is None:
        return 0
    r, code = failure
    resume = last_snapshot(snapshot_prefix) if snapshot_prefix else None
    hint = f"; resume with --snapshot={resume}" if resume else ""
    raise DistributedError(f"rank {r} of {n} (pid {procs[r].pid}) {_describe(code)}; the other ranks were "
                           f"stopped{hint}")
