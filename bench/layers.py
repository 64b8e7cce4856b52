"""Forward+backward time of caffessl layers vs the plain PyTorch op on the same tensors, in the same run.

    python bench/layers.py [--repeat 3] [--threads 2] [--inference]

``--inference``: forward only without autograd (deploy/test nets), where Pooling and LRN run the chunked
kernels of caffessl/layers/kernels.py; the rows are the CASES below plus more pooling/LRN shapes.

Each row: our Layer (built from a LayerParameter, forward through its torch ops, backward by autograd) and
the baseline torch call (F.conv2d, F.max_pool2d(ceil_mode=True), F.avg_pool2d, F.local_response_norm,
F.linear, F.batch_norm) on identical inputs and parameters; minimum of ``--repeat`` interleaved timed runs
after one warm-up. The ratio is ours / torch. caffessl.malloc's glibc settings are applied first, as in any
process that builds a caffessl.Net (before session 5 this script ran without them: tensors over glibc's mmap
threshold were page-faulted on every call, which inflated both columns alike -- AlexNet conv2 at batch 32
51 -> 33 ms -- and left the ratios within noise).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffessl.io.prototxt import parse_text  # noqa: E402
from caffessl.layers.base import get_layer_class  # noqa: E402
from caffessl.malloc import keep_freed_memory  # noqa: E402
from caffessl.proto import caffe_pb2  # noqa: E402


def make_layer(text, shape, phase=caffe_pb2.TEST):
    lp = parse_text(text, caffe_pb2.LayerParameter(), "<bench>")
    layer = get_layer_class(lp.type, lp.name)(lp, phase)
    layer.setup([shape])
    layer.reshape([shape])
    return layer


def timed_pair(fa, fb, repeat):
    """Interleave the two candidates (so machine-load drift hits both alike); min over the repeats."""
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeat):
        for f, ts in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return min(ta) * 1e3, min(tb) * 1e3


def fwd_bwd(forward, x, params):
    def run():
        for p in [x, *params]:
            p.grad = None
        y = forward(x)
        y.backward(torch.ones_like(y))
    return run


CASES = [
    # name, shape, layer text, torch baseline (x, layer) -> y
    ("Convolution", "AlexNet conv2 32x96x27x27 k5 p2 g2 ->256", (32, 96, 27, 27),
     'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 256 kernel_size: 5 '
     'pad: 2 group: 2 weight_filler { type: "gaussian" std: 0.01 } }',
     lambda x, l: F.conv2d(x, l.params[0], l.params[1], 1, 2, 1, 2)),
    ("Pooling MAX", "AlexNet pool1 32x96x55x55 k3 s2", (32, 96, 55, 55),
     'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    ("Pooling AVE", "32x96x55x55 k3 s2 p1", (32, 96, 55, 55),
     'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
     lambda x, l: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("LRN", "AlexNet norm1 32x96x55x55 ls5", (32, 96, 55, 55),
     'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     lambda x, l: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)),
    ("InnerProduct", "AlexNet fc6 32x9216 ->4096", (32, 256, 6, 6),
     'name: "f" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4096 '
     'weight_filler { type: "gaussian" std: 0.005 } }',
     lambda x, l: F.linear(x.reshape(x.shape[0], -1), l.params[0], l.params[1])),
    ("BatchNorm", "TRAIN 32x96x55x55", (32, 96, 55, 55),
     'name: "b" type: "BatchNorm" bottom: "x" top: "y"',
     lambda x, l: F.batch_norm(x, l._rm, l._rv, None, None, True, 0.1, 1e-5)),
    ("Convolution", "CIFAR 100x32x32x32 k5 p2 ->32", (100, 32, 32, 32),
     'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 32 kernel_size: 5 '
     'pad: 2 weight_filler { type: "gaussian" std: 0.01 } }',
     lambda x, l: F.conv2d(x, l.params[0], l.params[1], 1, 2)),
    ("Pooling MAX", "CIFAR 100x32x32x32 k3 s2", (100, 32, 32, 32),
     'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    ("Pooling AVE", "CIFAR 100x32x32x32 k3 s2", (100, 32, 32, 32),
     'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_size: 3 stride: 2 }',
     lambda x, l: F.avg_pool2d(x, 3, 2, 0, ceil_mode=True)),
    ("LRN", "CIFAR 100x32x32x32 ls3", (100, 32, 32, 32),
     'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 }',
     lambda x, l: F.local_response_norm(x, 3, 5e-5, 0.75, 1.0)),
    ("InnerProduct", "CIFAR 100x1024 ->64", (100, 64, 4, 4),
     'name: "f" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 64 '
     'weight_filler { type: "gaussian" std: 0.1 } }',
     lambda x, l: F.linear(x.reshape(x.shape[0], -1), l.params[0], l.params[1])),
    ("BatchNorm", "TRAIN CIFAR 100x32x32x32", (100, 32, 32, 32),
     'name: "b" type: "BatchNorm" bottom: "x" top: "y"',
     lambda x, l: F.batch_norm(x, l._rm, l._rv, None, None, True, 0.1, 1e-5)),
]


def _pool(desc, shape, spec, baseline):
    return ("Pooling " + spec.split()[1], desc, shape,
            f'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {spec} }}', baseline)


INFERENCE_CASES = [c for c in CASES if c[0] != "BatchNorm"] + [
    _pool("AlexNet pool1 1x96x55x55 k3 s2", (1, 96, 55, 55), "pool: MAX kernel_size: 3 stride: 2",
          lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    _pool("AlexNet pool2 32x256x27x27 k3 s2", (32, 256, 27, 27), "pool: MAX kernel_size: 3 stride: 2",
          lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    _pool("AlexNet pool5 32x256x13x13 k3 s2", (32, 256, 13, 13), "pool: MAX kernel_size: 3 stride: 2",
          lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    _pool("VGG pool1 8x64x224x224 k2 s2", (8, 64, 224, 224), "pool: MAX kernel_size: 2 stride: 2",
          lambda x, l: F.max_pool2d(x, 2, 2, 0, ceil_mode=True)),
    _pool("GoogLeNet 3a pool 16x192x28x28 k3 s1 p1", (16, 192, 28, 28),
          "pool: MAX kernel_size: 3 stride: 1 pad: 1", lambda x, l: F.max_pool2d(x, 3, 1, 1, ceil_mode=True)),
    _pool("GoogLeNet pool1 16x64x112x112 k3 s2 (ceil)", (16, 64, 112, 112), "pool: MAX kernel_size: 3 stride: 2",
          lambda x, l: F.max_pool2d(x, 3, 2, 0, ceil_mode=True)),
    _pool("GoogLeNet pool5 16x1024x7x7 global", (16, 1024, 7, 7), "pool: AVE kernel_size: 7 stride: 1",
          lambda x, l: F.avg_pool2d(x, 7, 1, 0, ceil_mode=True)),
    ("LRN", "AlexNet norm1 1x96x55x55 ls5", (1, 96, 55, 55),
     'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     lambda x, l: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)),
    ("LRN", "AlexNet norm2 32x256x27x27 ls5", (32, 256, 27, 27),
     'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     lambda x, l: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)),
    ("LRN", "GoogLeNet norm1 16x64x56x56 ls5", (16, 64, 56, 56),
     'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     lambda x, l: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)),
]


def inference(args):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, min of {args.repeat} interleaved runs "
          f"(x5 for small cases) (forward only, no autograd, float32, CPU); max |ours - torch| checked")
    print("| layer | shape | ours ms | torch ms | ratio | max abs diff |\n|---|---|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, desc, shape, text, baseline in INFERENCE_CASES:
            layer = make_layer(text, shape)
            x = torch.randn(shape)
            if name == "LRN":
                x.mul_(10)   # AlexNet's activations: the scale term matters
            diff = (layer.forward([x])[0] - baseline(x, layer)).abs().max().item()
            small = x.numel() < 5e6
            ours, theirs = timed_pair(lambda: layer.forward([x]), lambda: baseline(x, layer),
                                      args.repeat * (5 if small else 1))
            print(f"| {name} | {desc} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | {diff:.1e} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inference", action="store_true", help="forward only, without autograd")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()      # the allocator settings every process with a caffessl.Net runs under
    torch.manual_seed(0)
    if args.inference:
        return inference(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, min of {args.repeat} interleaved runs (x5 for small cases) "
          f"(forward + backward, float32, CPU)")
    print("| layer | shape | ours ms | torch ms | ratio |\n|---|---|---:|---:|---:|")
    for name, desc, shape, text, baseline in CASES:
        phase = caffe_pb2.TRAIN if name == "BatchNorm" else caffe_pb2.TEST
        layer = make_layer(text, shape, phase)
        learn = [p for p in layer.params] if name != "BatchNorm" else []
        for p in learn:
            p.requires_grad_(True)
        if name == "BatchNorm":
            layer._rm = torch.zeros(shape[1])
            layer._rv = torch.ones(shape[1])
        x = torch.randn(shape).requires_grad_(True)
        small = x.numel() * max(1, len(learn)) < 5e6
        ours, theirs = timed_pair(fwd_bwd(lambda t: layer.forward([t])[0], x, learn),
                                  fwd_bwd(lambda t: baseline(t, layer), x, learn),
                                  args.repeat * (5 if small else 1))
        print(f"| {name} | {desc} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
