"""The process group: torch.distributed set up from the environment torchrun (or caffessl's own launcher)
gives every process -- RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT -- with a timeout on every
collective, so that a rank that dies or hangs stops the others with an error instead of a hang.

gloo on CPUs, NCCL on CUDA devices. Outside a process group every function answers as a world of one.
"""
from __future__ import annotations

import datetime
import logging
import os

import torch.distributed as dist

from ..errors import DistributedError

TIMEOUT_ENV = "CAFFESSL_DIST_TIMEOUT"     # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 1800                  # torch's own default; a root-only test phase must fit in it
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def in_env_world() -> bool:
    """True when this process was started as one rank of a world (torchrun or ``--procs``/``--gpu``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise DistributedError(f"${name} is not set: start every rank with torchrun (or `caffessl train "
                                   f"--procs=N`), which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"${name}={raw!r} is not an integer") from None


def local_rank() -> int:
    return env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    return env_int("LOCAL_WORLD_SIZE", env_int("WORLD_SIZE", 1))


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return float(DEFAULT_TIMEOUT_S)
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if v <= 0:
        raise DistributedError(f"${TIMEOUT_ENV}={raw!r}: give the collective timeout in seconds (> 0)")
    return v


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_root() -> bool:
    return rank() == 0


def init_from_env(backend: str) -> None:
    """``init_process_group`` from torchrun's variables (env://) with caffessl's timeout; quiet non-root logs."""
    if is_initialized():
        return
    missing = [v for v in _ENV if v not in os.environ]
    if missing:
        raise DistributedError(f"cannot join the process group: ${', $'.join(missing)} not set (torchrun and "
                               f"`caffessl train --procs=N` set them)")
    world, r = env_int("WORLD_SIZE"), env_int("RANK")
    if world < 1 or not 0 <= r < world:
        raise DistributedError(f"RANK={r} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    try:
        dist.init_process_group(backend, init_method="env://", world_size=world, rank=r,
                                timeout=datetime.timedelta(seconds=timeout_s()))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {r} of {world}: cannot join the {backend} process group at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {first_line(e)}") from None
    quiet_non_root()


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


class _RootOnly(logging.Filter):
    """Caffe 1.0 logs INFO on the root solver only (LOG_IF(INFO, Caffe::root_solver())); warnings and errors
    of every rank still print."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or is_root()


_FILTER = _RootOnly()


def quiet_non_root() -> None:
    from ..log import get_logger
    logger = get_logger()
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def first_line(e: BaseException) -> str:
    """The gist of a torch.distributed error: its first sentence, without gloo's "[source.cc:N]" prefix."""
    import re
    text = str(e).strip()
    if not text:
        return type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])
    return re.split(r"(?<=[a-z0-9\]])\. ", text, maxsplit=1)[0].rstrip(".")


def backend() -> str:
    import torch.distributed as dist
    return str(dist.get_backend()) if is_initialized() else "none"
