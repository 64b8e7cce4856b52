"""The one reader of a ``--gpu`` value, as Caffe's ``get_gpus`` reads ``-gpu``: CUDA device ids separated by
',' or ``all``. ``caffessl train`` (caffessl/parallel/launch.py: one process per device) and the single-device
commands (caffessl/commands/_device.py: test, time, classify, device_query) both call ``gpu_ids``, so a bad value
gives the same one-line DeviceError everywhere: the flag, the value and the fix.

Imports only ``errors`` (and torch, when called): a low-level module that ``parallel/`` and ``commands/`` may
both import.
"""
from __future__ import annotations

from .errors import DeviceError


def cuda_count() -> int:
    """How many CUDA devices torch sees here (0 without CUDA)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def no_cuda() -> str:
    """Why no device is usable, for error lines: the torch version and build."""
    import torch
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"torch {torch.__version__} ({build}) sees no CUDA device on this machine"


def _ids_here(count: int) -> str:
    return "id 0" if count == 1 else f"ids 0-{count - 1}"


def gpu_ids(value: str | None, flag: str = "--gpu") -> list[int]:
    """The CUDA device ids a ``--gpu`` value names, checked against this machine: '' or None -> [] (no GPU);
    'all' -> every device torch sees; '0' / '0,1' -> [0] / [0, 1]. Raises DeviceError (one line naming the
    flag, the value and the fix) for a malformed list, a repeated id, no CUDA, or an id this machine lacks."""
    if value is None:
        return []
    value = str(value).strip()
    if value == "":
        return []
    if value == "all":
        count = cuda_count()
        if count == 0:
            raise DeviceError(f"{flag}=all: {no_cuda()}; leave out {flag} to run on the CPU")
        return list(range(count))
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise DeviceError(f"{flag}={value}: not a list of device ids; give GPU ids separated by ',' "
                          f"(e.g. {flag}=0 or {flag}=0,1) or {flag}=all, or leave out {flag} to run on the CPU")
    ids = [int(p) for p in parts]
    twice = next((i for n, i in enumerate(ids) if i in ids[:n]), None)
    if twice is not None:
        raise DeviceError(f"{flag}={value}: device id {twice} is given twice; give each GPU once")
    count = cuda_count()
    if count == 0:
        raise DeviceError(f"{flag}={value}: {no_cuda()}; leave out {flag} to run on the CPU")
    bad = [i for i in ids if i >= count]
    if bad:
        raise DeviceError(f"{flag}={value}: no GPU {bad[0]}: this machine has {count} CUDA "
                          f"device{'s' if count != 1 else ''} ({_ids_here(count)}); give "
                          f"{'that id' if count == 1 else 'ids among them'} or {flag}=all")
    return ids
