"""The fuzz worker: runs many inputs, one at a time, under a memory limit (RLIMIT_AS); the parent restarts it
when it dies and kills it when an input runs past its time limit.

Protocol on stdin/stdout: 4-byte big-endian length + pickle. Request: (target name, input bytes). Reply:
(outcome, detail) with outcome one of "accepted", "typed", "untyped", "memory".
"""
from __future__ import annotations

import os
import pickle
import resource
import struct
import sys
import traceback


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _read(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    n = struct.unpack(">I", head)[0]
    return pickle.loads(stream.read(n))


def _write(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def classify(exc: BaseException) -> tuple:
    from caffessl.errors import CaffeSSLError
    if isinstance(exc, CaffeSSLError):
        return "typed", f"{type(exc).__name__}: {str(exc)[:300]}"
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return "memory", f"{type(exc).__name__}: {text[:300]}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{os.path.basename(fr.filename)}:{fr.lineno}" for fr in reversed(tb[-4:]))
    return "untyped", f"{type(exc).__name__}: {text[:300]} @ {where}"


def main():
    mem_mb = int(os.environ.get("FUZZ_MEM_MB", "1536"))
    import torch
    torch.set_num_threads(1)
    from tests.fuzz import targets
    targets.prepare_worker()
    limit = _vm_bytes() + mem_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr     # anything the code under test prints stays off the protocol stream
    _write(out, ("ready", ""))
    while True:
        req = _read(inp)
        if req is None:
            return
        name, data = req
        try:
            targets.RUNNERS[name](data)
            res = ("accepted", "")
        except Exception as e:       # the classification is the point: every kind is recorded, not hidden
            res = classify(e)
        _write(out, res)


if __name__ == "__main__":
    main()
