"""Cost of the SSL pipeline per training iteration: regularizers + stabilizer ON vs OFF, same process.

ON : forward/backward, then per param Regularizer.apply (L2 weight decay, kernel-shape, breadth and block
     group Lasso), SGD momentum rule, Stabilizer.update (masked update + Zerout);
OFF: forward/backward, SGD momentum rule, plain W -= update.
Nets: Caffe's CIFAR-10 "full" net with kernel-shape + breadth SSL (batch 100), and CaffeNet's five
AlexNet-sized conv layers (227x227 input) with breadth + kernel-shape + per-2-D-kernel block Lasso.

    python bench/ssl_overhead.py [--iters 5] [--alexnet-batch 8] [--threads N]

On an overloaded machine use --threads 1: small multi-threaded torch ops then wait on busy cores and the
ratio measures the machine, not the regularizers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import caffessl as caffe  # noqa: E402
from caffessl.io.prototxt import read_solver_prototxt  # noqa: E402
from caffessl.proto import caffe_pb2  # noqa: E402
from caffessl.solver.regularize import Regularizer  # noqa: E402
from caffessl.solver.stabilize import Stabilizer  # noqa: E402
from caffessl.solver.updates import sgd  # noqa: E402
from tests.solver.test_regularize import input_substituted  # noqa: E402


def cifar_net(batch):
    return input_substituted(REPO / "models/cifar10_full/cifar10_full_train_test_ssl.prototxt", batch), \
        read_solver_prototxt(str(REPO / "solvers/cifar10_full_ssl_solver.prototxt"))


def alexnet_conv_net(batch):
    full = input_substituted(REPO / "models/caffenet/train_val_ssl_kmode.prototxt", batch)
    out = caffe_pb2.NetParameter()
    out.name = "caffenet_conv1-5"
    for lp in full.layer:
        out.layer.add().CopyFrom(lp)
        if lp.name == "pool5":
            break
    out.layer.add().CopyFrom(next(l for l in full.layer if l.name == "fc8"))
    out.layer[-1].bottom[0] = "pool5"
    out.layer[-1].inner_product_param.num_output = 10
    out.layer.add().CopyFrom(next(l for l in full.layer if l.name == "loss"))
    for lp in out.layer:
        if lp.type == "Input":
            lp.input_param.shape[1].dim[0] = batch
    sp = read_solver_prototxt(str(REPO / "solvers/caffenet_ssl_solver.prototxt"))
    sp.block_group_decay = 0.0001
    return out, sp


def timed_iters(net, sp, iters, ssl: bool):
    reg, st = Regularizer(net, sp), Stabilizer(net, sp)
    hist = [torch.zeros_like(i.tensor) for i in net.learnable_params]
    times = []
    for k in range(iters + 1):
        t0 = time.perf_counter()
        net.clear_param_diffs()
        net.forward_backward()
        for info, h in zip(net.learnable_params, hist):
            if info.tensor.grad is None:
                continue
            if ssl:
                reg.apply(info, want_term=False)
            (upd,) = sgd([info.tensor.grad], [[h]], local_rate=1e-4 * info.lr_mult, momentum=0.9)
            if ssl:
                st.update(info, upd)
            else:
                with torch.no_grad():
                    info.tensor.sub_(upd)
        if k:  # the first iteration warms up
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--cifar-batch", type=int, default=100)
    ap.add_argument("--alexnet-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for name, (npar, sp) in (("CIFAR-10 full (batch %d)" % a.cifar_batch, cifar_net(a.cifar_batch)),
                             ("CaffeNet conv1-5 (batch %d)" % a.alexnet_batch, alexnet_conv_net(a.alexnet_batch))):
        torch.manual_seed(0)
        net = caffe.Net(npar, caffe.TRAIN)
        rng = np.random.RandomState(0)
        for b in net.inputs:
            shp = net.blobs[b].data.shape
            net.blobs[b].data[...] = rng.randint(0, 10, shp) if b == "label" else rng.randn(*shp)
        # alternate OFF/ON twice so that drifting machine load hits both
        off1 = timed_iters(net, sp, a.iters, False)
        on1 = timed_iters(net, sp, a.iters, True)
        off2 = timed_iters(net, sp, a.iters, False)
        on2 = timed_iters(net, sp, a.iters, True)
        off, on = min(off1, off2), min(on1, on2)
        rows.append((name, off, on, on / off))
    import os
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, load {os.getloadavg()[0]:.1f}")
    print(f"{'net':32s} {'SSL off (s/iter)':>17s} {'SSL on (s/iter)':>16s} {'ratio':>7s}")
    for name, off, on, r in rows:
        print(f"{name:32s} {off:17.4f} {on:16.4f} {r:7.3f}")


if __name__ == "__main__":
    main()
