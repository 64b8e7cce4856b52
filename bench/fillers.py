"""Fillers on Caffe's own random stream (caffessl.caffe_rng) vs torch's generator, on AlexNet's 61M weights.

    python bench/fillers.py [--reps 3]

Rows: drawing every AlexNet weight blob (conv1-5, fc6-8; std 0.01 gaussian, as bvlc_alexnet's train_val) from
caffessl's Caffe stream (mt19937 + Boost's float32 ziggurat normal: the values real Caffe would fill) and with
``torch.Tensor.normal_`` (what the fillers used before session 5), and ``caffessl.Net`` construction of that
train_val-style net (the fillers plus the rest of set-up). Median of --reps, seconds; ratio = / torch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import caffessl as caffe  # noqa: E402
from caffessl import caffe_rng  # noqa: E402

SHAPES = [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3), (256, 192, 3, 3),
          (4096, 9216), (4096, 4096), (1000, 4096)]


def net_text():
    from bench.conv_modes import ALEXNET_DEPLOY   # noqa: E402  (the same layers, with fillers added below)
    text = ALEXNET_DEPLOY % 1
    return text.replace("kernel_size: 11 stride: 4 }", 'kernel_size: 11 stride: 4 weight_filler { type: "gaussian" '
                        'std: 0.01 } }').replace("group: 2 }", 'group: 2 weight_filler { type: "gaussian" std: 0.01 } }') \
        .replace("kernel_size: 3 }", 'kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } }')


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    caffe.set_random_seed(1)
    path = os.path.join(tempfile.mkdtemp(), "alexnet_fillers.prototxt")
    with open(path, "w") as f:
        f.write(net_text())
    caffe.Net(path, caffe.TEST)        # warm-up (allocator settings, imports)
    n = sum(int(torch.tensor(s).prod()) for s in SHAPES)
    t_torch = timed(lambda: [torch.empty(s).normal_(0, 0.01) for s in SHAPES], a.reps)
    t_caffe = timed(lambda: [caffe_rng.get().gaussian(int(torch.tensor(s).prod()), 0, 0.01) for s in SHAPES], a.reps)
    t_net = timed(lambda: caffe.Net(path, caffe.TEST), a.reps)
    print(f"torch {torch.__version__}, 2 threads, {n / 1e6:.1f}M AlexNet weights, median of {a.reps} (s)")
    print(f"{'what':44} {'seconds':>8} {'x torch':>8}")
    print(f"{'torch normal_ (baseline)':44} {t_torch:8.2f} {1.0:8.2f}")
    print(f"{'Caffe stream gaussian (caffessl.caffe_rng)':44} {t_caffe:8.2f} {t_caffe / t_torch:8.2f}")
    print(f"{'caffessl.Net(train_val-style AlexNet)':44} {t_net:8.2f} {t_net / t_torch:8.2f}")


if __name__ == "__main__":
    main()
