"""The ``--gpu`` flag of every command, as Caffe's ``get_gpus`` reads ``-gpu``: device ids separated by ','
or ``all``; validated here so that a bad value is one line naming the flag and the fix.

Caffe's ``train`` without ``-gpu`` runs where the solver says: ``solver_mode: GPU`` means the GPU
``device_id`` (default 0), so a solver copied from Caffe's examples asks for CUDA. On a machine where torch
sees no CUDA device the error names the solver file and the two fixes (``solver_mode: CPU`` in it, or
``--cpu``, caffessl's flag that overrides ``solver_mode``).
"""
from __future__ import annotations

from ..errors import DeviceError

RUN_ON_CPU = "leave out --gpu to run on the CPU"


def _cuda_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _no_cuda() -> str:
    import torch
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"torch {torch.__version__} ({build}) sees no CUDA device on this machine"


def parse_gpus(value: str | None, flag: str = "--gpu") -> list[int]:
    """Device ids of a ``--gpu`` value ('' or None: none; 'all': every device torch sees); checked against the
    devices of this machine. Raises DeviceError (one line: the flag, the value and the fix)."""
    if value is None or value == "":
        return []
    value = str(value).strip()
    count = _cuda_count()
    if value == "all":
        if count == 0:
            raise DeviceError(f"{flag}=all: {_no_cuda()}; {RUN_ON_CPU}")
        return list(range(count))
    parts = value.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise DeviceError(f"{flag}={value}: not a list of device ids; give GPU ids separated by ',' "
                          f"(e.g. {flag}=0 or {flag}=0,1) or {flag}=all, or {RUN_ON_CPU}")
    ids = [int(p) for p in parts]
    if len(set(ids)) != len(ids):
        raise DeviceError(f"{flag}={value}: a device id is given twice; give each GPU once")
    if count == 0:
        raise DeviceError(f"{flag}={value}: {_no_cuda()}; {RUN_ON_CPU}")
    bad = [i for i in ids if i >= count]
    if bad:
        raise DeviceError(f"{flag}={value}: no GPU {bad[0]}: this machine has {count} CUDA device(s), ids 0-"
                          f"{count - 1}; give one of them or {flag}=all")
    return ids


def use_single_gpu(value: str | None, log=None) -> int | None:
    """``test`` / ``time`` / ``classify``: the first of the ``--gpu`` ids (Caffe: "Not using GPU #n for
    single-GPU function"), set as the device in GPU mode; None (CPU mode) without ``--gpu``."""
    from .. import mode
    ids = parse_gpus(value)
    if not ids:
        mode.set_mode_cpu()
        return None
    for extra in reversed(ids[1:]):
        if log is not None:
            log.info("Not using GPU #%d for single-GPU function", extra)
    mode.set_device(ids[0])
    mode.set_mode_gpu()
    return ids[0]


def solver_gpus(gpu: str | None, cpu: bool, sp, solver_file: str) -> list[int]:
    """``train``'s devices, as Caffe's train(): ``--gpu`` if given, else ``device_id`` when the solver says
    ``solver_mode: GPU``, else none (CPU). ``--cpu`` overrides the solver's mode."""
    from ..proto import caffe_pb2
    if cpu:
        if gpu:
            raise DeviceError(f"--cpu and --gpu={gpu} contradict each other; give one of them")
        return []
    if gpu:
        return parse_gpus(gpu)
    if not sp.HasField("solver_mode") or sp.solver_mode != caffe_pb2.SolverParameter.GPU:
        return []          # unset: the CPU (Caffe's schema default would be GPU)
    dev = int(sp.device_id)
    count = _cuda_count()
    if count == 0:
        raise DeviceError(f"{solver_file}: solver_mode: GPU, but {_no_cuda()}; set `solver_mode: CPU` in "
                          f"{solver_file}, or pass --cpu to run this solver on the CPU")
    if dev >= count:
        raise DeviceError(f"{solver_file}: device_id: {dev}, but this machine has {count} CUDA device(s), ids "
                          f"0-{count - 1}; change device_id, or pass --gpu=N")
    return [dev]
