"""glibc allocator settings vs an AlexNet (batch 32) training step: time, page faults and peak RSS.

    python bench/malloc.py [--rounds 3] [--steps 10]

Each variant runs in its own fresh process (the settings are process-wide), alternating over ``--rounds``;
the child sets the allocator itself and runs with ``CAFFESSL_KEEP_FREED_MEMORY=0`` so that Net leaves it:
  * ``glibc``: glibc's defaults (adaptive mmap threshold, blocks >= 32 MiB always mmapped);
  * ``thresholds``: what caffessl.malloc set before session 4 (mmap threshold 32 MiB, trim threshold 256 MiB);
  * ``heap-only``: thresholds + ``M_MMAP_MAX = 0`` (caffessl.malloc now): large tensors reuse heap memory.
Per process: median ms of ``Net.forward_backward`` over the steps after 2 warm-up steps, minor page faults per
step over those steps, peak RSS. The table: medians over the rounds; ratio = variant ms / glibc ms.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VARIANTS = ("glibc", "thresholds", "heap-only")


def child(variant, steps):
    import resource
    import time
    libc = ctypes.CDLL(None)
    if variant in ("thresholds", "heap-only"):
        libc.mallopt(-3, 32 << 20)     # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)    # M_TRIM_THRESHOLD
    if variant == "heap-only":
        libc.mallopt(-4, 0)            # M_MMAP_MAX
    import numpy as np

    import caffessl as caffe
    from conv_modes import ALEXNET_DEPLOY
    text = (ALEXNET_DEPLOY % 32).replace(
        'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }',
        'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 32 } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }')
    path = os.path.join(tempfile.mkdtemp(), "alexnet_train.prototxt")
    with open(path, "w") as f:
        f.write(text)
    net = caffe.Net(path, caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.random(net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = rng.integers(0, 1000, 32)
    for _ in range(2):
        net.forward_backward()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        net.forward_backward()
        ts.append((time.perf_counter() - t0) * 1e3)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"ms": statistics.median(ts), "faults": (ru.ru_minflt - f0) / steps,
                      "rss_mib": ru.ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.steps)
    env = dict(os.environ, CAFFESSL_KEEP_FREED_MEMORY="0")
    res = {v: [] for v in VARIANTS}
    for r in range(a.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for v in order:
            cp = subprocess.run([sys.executable, __file__, "--child", v, "--steps", str(a.steps)], env=env,
                                capture_output=True, text=True, check=True)
            res[v].append(json.loads(cp.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {v:10} {res[v][-1]}", flush=True)
    base = statistics.median(x["ms"] for x in res["glibc"])
    print(f"\nAlexNet batch 32, Net.forward_backward, {a.rounds} processes per variant, {a.steps} steps each")
    print(f"{'variant':12} {'ms/step':>9} {'ratio':>6} {'faults/step':>12} {'peak RSS MiB':>13}")
    for v in VARIANTS:
        ms = statistics.median(x["ms"] for x in res[v])
        print(f"{v:12} {ms:9.1f} {ms / base:6.2f} {statistics.median(x['faults'] for x in res[v]):12.0f} "
              f"{statistics.median(x['rss_mib'] for x in res[v]):13.0f}")


if __name__ == "__main__":
    main()
