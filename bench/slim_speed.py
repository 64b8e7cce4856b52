"""Forward speed of a slimmed net (``caffessl slim``) vs the sparse original, dense and with ``--conv-mode auto``.

Net: a VGG-16-shaped CIFAR deploy net (13 3x3 convs with pad 1, ReLU, 5 max pools, one InnerProduct) whose
conv layers carry SSL-like *filter-wise* sparsity: a fraction ``r`` of each conv's filters is all-zero, chosen
at random (the last conv keeps all of its filters so that fc's input is intact). The zero filters get a zero
bias (ReLU output 0: slim folds them exactly even in front of a padded conv; a positive bias there keeps the
filter, which this bench does not exercise). The net is slimmed by ``caffessl.sparsity.slim.slim`` and the
result checked against the original on the same batch before timing.

Columns (median ms of interleaved reps, each the last of a burst of 3 forwards; ratios in the same run):
``dense`` = the sparse original through F.conv2d (LOWERED_GEMM), ``auto`` = the original with per-layer
``auto`` conv modes (CCNMM on the zero rows/columns), ``slim`` = the slimmed net, dense; ``ideal`` = conv
FLOPs of the original / of the slimmed net.

    python bench/slim_speed.py [--rates 0.5 0.75] [--batches 1 32] [--reps 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conv_modes import interleaved, load_avg  # noqa: E402

import caffessl as caffe  # noqa: E402
from caffessl.conv_modes import set_conv_mode  # noqa: E402
from caffessl.malloc import keep_freed_memory  # noqa: E402
from caffessl.sparsity.slim import check, slim  # noqa: E402

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_deploy(n: int) -> str:
    lines = [f'name: "vgg16_cifar" input: "data" input_shape {{ dim: {n} dim: 3 dim: 32 dim: 32 }}']
    bottom, i, p = "data", 0, 0
    for v in VGG16:
        if v == "M":
            p += 1
            lines.append(f'layer {{ name: "pool{p}" type: "Pooling" bottom: "{bottom}" top: "pool{p}" '
                         f'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}')
            bottom = f"pool{p}"
            continue
        i += 1
        lines.append(f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{bottom}" top: "conv{i}" '
                     f'convolution_param {{ num_output: {v} kernel_size: 3 pad: 1 '
                     f'weight_filler {{ type: "msra" }} bias_filler {{ type: "constant" value: 0.01 }} }} }}')
        lines.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "conv{i}" top: "conv{i}" }}')
        bottom = f"conv{i}"
    lines.append(f'layer {{ name: "fc" type: "InnerProduct" bottom: "{bottom}" top: "fc" '
                 f'inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}')
    return "\n".join(lines) + "\n"


def build(n: int, rate: float, seed: int = 0):
    path = os.path.join(tempfile.mkdtemp(), "deploy.prototxt")
    with open(path, "w") as f:
        f.write(vgg_deploy(n))
    torch.manual_seed(seed)
    net = caffe.Net(path, caffe.TEST)
    gen = torch.Generator().manual_seed(seed)
    convs = [l for l in net.layers if l.type == "Convolution"]
    with torch.no_grad():
        for l in convs[:-1]:
            w, b = l.params
            o = w.shape[0]
            zero = torch.randperm(o, generator=gen)[:round(rate * o)]
            w[zero] = 0
            b[zero] = 0
    for l in net.layers:
        for p in l.params:
            p.requires_grad_(False)
    return net


def conv_flops(net) -> float:
    tot = 0.0
    for l in net.layers:
        if l.type == "Convolution":
            w = l.params[0]
            top = net.blobs[net.top_names[l.name][0]]
            tot += 2.0 * w.numel() * top.shape[2] * top.shape[3] * top.shape[0]
    return tot


def slimmed_net(net, result):
    small = caffe.Net(result.net_param, caffe.TEST)
    with torch.no_grad():
        for l in small.layers:
            for p, a in zip(l.params, result.arrays[l.name]):
                p.copy_(torch.as_tensor(a).reshape(p.shape))
            for p in l.params:
                p.requires_grad_(False)
    return small


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    print(f"torch {torch.__version__}, {a.threads} threads; VGG-16-shaped CIFAR net (32x32), zero filters in "
          f"every conv but the last; median ms of {a.reps} interleaved reps; x = dense / column")
    print("start:", load_avg(), flush=True)
    t0 = time.time()
    print(f"{'rate':>5} {'N':>3} {'filters':>13} {'weights':>17} {'max|diff|':>9} {'dense':>8} {'auto':>8} "
          f"{'slim':>8} {'x auto':>7} {'x slim':>7} {'ideal':>6} {'slim/id':>7}")
    for rate in a.rates:
        for n in a.batches:
            net = build(n, rate)
            result = slim(net)
            diff = max(check(net, result).values())
            small = slimmed_net(net, result)
            x = np.random.default_rng(1).standard_normal((n, 3, 32, 32)).astype(np.float32)
            net.blobs["data"].data[...] = x
            small.blobs["data"].data[...] = x
            state = {}
            for mode in ("gemm", "auto"):
                set_conv_mode(net, mode)
                for l in net.layers:
                    if getattr(l, "engine", None) is not None:
                        l.engine.ensure_built(l.params[0])
                state[mode] = [(l, l.conv_mode, l.engine) for l in net.layers if hasattr(l, "engine")]

            def run(mode):
                def f():
                    for l, cm, eng in state[mode]:
                        l.conv_mode, l.engine = cm, eng
                    net.forward()
                return f
            with torch.no_grad():
                t = interleaved({"dense": run("gemm"), "auto": run("auto"), "slim": small.forward}, a.reps)
            med = {k: v[0] for k, v in t.items()}
            before = sum(p.numel() for l in net.layers for p in l.params)
            after = sum(p.numel() for l in small.layers for p in l.params)
            fb = sum(r.before for r in result.producers if r.type == "Convolution")
            fa = sum(r.after for r in result.producers if r.type == "Convolution")
            ideal = conv_flops(net) / conv_flops(small)
            print(f"{rate:5.2f} {n:>3} {fb:>6}->{fa:<6} {before:>8}->{after:<8} {diff:9.1e} {med['dense']:8.2f} "
                  f"{med['auto']:8.2f} {med['slim']:8.2f} {med['dense'] / med['auto']:7.2f} "
                  f"{med['dense'] / med['slim']:7.2f} {ideal:6.2f} {med['dense'] / med['slim'] / ideal:7.2f}",
                  flush=True)
    print(f"end: {load_avg()}; wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
