"""Caffe's global mode: CPU or GPU (and which device), and the random seed."""
from __future__ import annotations

import torch

_state = {"gpu": False, "device_id": 0}


def set_mode_cpu():
    _state["gpu"] = False


def set_mode_gpu():
    if not torch.cuda.is_available():
        from .errors import CaffeSSLError
        raise CaffeSSLError("set_mode_gpu: no CUDA device is available to torch on this machine")
    _state["gpu"] = True


def set_device(device_id: int):
    _state["device_id"] = int(device_id)


def device() -> torch.device:
    return torch.device(f"cuda:{_state['device_id']}") if _state["gpu"] else torch.device("cpu")


def set_random_seed(seed: int):
    """Seed every generator caffessl draws from: Caffe's own stream for the fillers and Dropout
    (caffessl.caffe_rng, as Caffe::set_random_seed), torch's, numpy's and Python's (data shuffling, crops)."""
    import random

    import numpy as np

    from . import caffe_rng
    caffe_rng.seed(int(seed))
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2 ** 32))
    random.seed(int(seed))
