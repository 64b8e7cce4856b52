"""The ``--gpu`` flag of the commands, as Caffe's ``get_gpus`` reads ``-gpu``: device ids separated by ',' or
``all``, read by ``caffessl.devices.gpu_ids`` (the one reader, also ``train``'s), so that a bad value is one
line naming the flag and the fix; what each command does with the ids.

Caffe's ``train`` without ``-gpu`` runs where the solver says: ``solver_mode: GPU`` means the GPU
``device_id`` (default 0), so a solver copied from Caffe's examples asks for CUDA. On a machine where torch
sees no CUDA device the error names the solver file and the two fixes (``solver_mode: CPU`` in it, or
``--cpu``, caffessl's flag that overrides ``solver_mode``).
"""
from __future__ import annotations

from ..devices import cuda_count, gpu_ids, no_cuda
from ..errors import DeviceError


def use_single_gpu(value: str | None, log=None) -> int | None:
    """``test`` / ``time`` / ``classify``: the first of the ``--gpu`` ids (Caffe: "Not using GPU #n for
    single-GPU function"), set as the device in GPU mode; None (CPU mode) without ``--gpu``."""
    from .. import mode
    ids = gpu_ids(value)
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
        return gpu_ids(gpu)
    if not sp.HasField("solver_mode") or sp.solver_mode != caffe_pb2.SolverParameter.GPU:
        return []          # unset: the CPU (Caffe's schema default would be GPU)
    dev = int(sp.device_id)
    count = cuda_count()
    if count == 0:
        raise DeviceError(f"{solver_file}: solver_mode: GPU, but {no_cuda()}; set `solver_mode: CPU` in "
                          f"{solver_file}, or pass --cpu to run this solver on the CPU")
    if dev >= count:
        raise DeviceError(f"{solver_file}: device_id: {dev}, but this machine has {count} CUDA device(s), ids "
                          f"0-{count - 1}; change device_id, or pass --gpu=N")
    return [dev]
