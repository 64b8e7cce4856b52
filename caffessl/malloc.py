"""Keep freed activation memory in the process instead of handing it back to the OS (glibc only).

A Caffe net keeps every blob's data between iterations (pycaffe users read ``net.blobs[...]`` after a step),
so each forward allocates a blob's new tensor while the previous iteration's is still alive, and frees the old
one right after. Under glibc's default, adaptive malloc settings that pattern makes the top of the heap shrink
and grow every iteration: the freed pages go back to the kernel and the next forward faults them in again
(measured on LeNet, batch 64: 200-1,500 minor page faults and up to 1.5 ms per 11 ms iteration). Caffe itself
never sees this, since its blobs are allocated once.

``keep_freed_memory()`` (called once per process by Net) fixes glibc's thresholds with ``mallopt``: blocks up
to 32 MiB come from the heap (not a fresh mmap each time) and up to 256 MiB of free heap is kept for reuse.
Blocks above 32 MiB (glibc's largest mmap threshold) would still get a fresh mmap, and with it one page
fault per 4 KiB on first touch, every time: AlexNet at batch 32 has a dozen such tensors per iteration
(a 37 MiB ReLU: 13 ms fresh, 1.9 ms from reused heap), so ``M_MMAP_MAX`` is set to 0 and they come from
the heap as well (bench/malloc.py, AlexNet batch-32 training step: 0.84x the time with glibc's defaults,
0.90x with the 32 MiB threshold alone; page faults 64k -> 11k per step; peak RSS +8 %). Set the environment
variable ``CAFFESSL_KEEP_FREED_MEMORY=0`` to leave the allocator as it is. Nothing happens outside glibc.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1     # <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = 256 << 20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once; returns whether they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("CAFFESSL_KEEP_FREED_MEMORY", "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing useful)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) \
        and bool(mallopt(M_MMAP_MAX, 0))
    return _done
