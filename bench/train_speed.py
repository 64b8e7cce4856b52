"""Training speed and peak memory: caffessl's solver vs a hand-written PyTorch loop, same net, batch and update.

Run from the repository root:  python bench/train_speed.py [--iters 100] [--warmup 10] [--chunk 20] [--rounds 15]

For LeNet (MNIST, batch 64) and CIFAR-10-quick (32x32x3, batch 100; random images, since no CIFAR data ships
with the repo) each side trains ``--iters`` iterations after ``--warmup``, in its own subprocess:

* caffessl: a Data layer reading raw uint8 Datums from an LMDB (scale 1/256, prefetch thread), the SGD solver
  with momentum 0.9, weight_decay 5e-4, lr_mult 1/2 -- data loading included;
* PyTorch: the same layers as torch.nn modules, the same images held in memory as one uint8 tensor (batches
  sliced and scaled in the loop), torch.optim.SGD(momentum 0.9, weight_decay 5e-4) with the biases at 2x lr.

Speed ratio (the primary one, robust to machine noise): both sides built in ONE process, ``--rounds``
alternating chunks of ``--chunk`` iterations each (which side goes first alternates), the median ms per
iteration of each side; ratio = torch ms / caffessl ms. That A/B runs in ``--procs`` fresh processes (on this
2-vCPU VM one process can read a few % off in either direction for its whole life); the table shows the median
ratio and, in brackets, the lowest and highest. Also printed: images/s and peak RSS with each side in a fresh
subprocess (resource.getrusage; "sep ratio" is that run's speed ratio, noisier).
Targets: speed ratio >= 0.95, memory ratio <= 1.2.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NETS = {
    "lenet": dict(batch=64, shape=(1, 28, 28), classes=10, body="""
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""),
    "cifar10_quick": dict(batch=100, shape=(3, 32, 32), classes=10, body="""
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.0001 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 64 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "pool3" type: "Pooling" bottom: "conv3" top: "pool3" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""),
}
N_IMAGES = 2000


def make_data(name, folder):
    """N_IMAGES images + labels: MNIST's first images for LeNet, random bytes for CIFAR; .npy + LMDB."""
    import numpy as np

    from caffessl.data.datum import array_to_datum
    from caffessl.data.lmdb_source import LMDBWriter
    cfg = NETS[name]
    if name == "lenet":
        from caffessl.data.idx import IMAGES_MAGIC, LABELS_MAGIC, find_idx, read_idx
        src = str(REPO.parent / "shared" / "data" / "mnist")
        x = read_idx(find_idx(src, "train-images-idx3-ubyte"), IMAGES_MAGIC)[:N_IMAGES][:, None]
        y = read_idx(find_idx(src, "train-labels-idx1-ubyte"), LABELS_MAGIC)[:N_IMAGES]
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (N_IMAGES, *cfg["shape"]), dtype=np.uint8)
        y = rng.integers(0, cfg["classes"], N_IMAGES)
    np.save(os.path.join(folder, "x.npy"), np.ascontiguousarray(x))
    np.save(os.path.join(folder, "y.npy"), np.asarray(y, dtype=np.int64))
    with LMDBWriter(os.path.join(folder, "lmdb")) as db:
        for i in range(N_IMAGES):
            db.put(b"%08d" % i, array_to_datum(x[i], int(y[i])).SerializeToString())


def build_caffessl(name, folder, iters):
    """A callable running ``n`` solver iterations (the LMDB Data layer feeds it)."""
    import caffessl
    from caffessl.io import parse_text
    from caffessl.proto import caffe_pb2
    cfg = NETS[name]
    data = (f'layer {{ name: "data" type: "Data" top: "data" top: "label" transform_param {{ scale: 0.00390625 }}'
            f' data_param {{ source: "{folder}/lmdb" batch_size: {cfg["batch"]} backend: LMDB }} }}\n')
    sp = parse_text(f'net_param {{ name: "{name}" {data} {cfg["body"]} }} base_lr: 0.001 momentum: 0.9 '
                    f'weight_decay: 0.0005 lr_policy: "fixed" max_iter: {iters} display: 0 '
                    f'snapshot_after_train: false', caffe_pb2.SolverParameter())
    solver = caffessl.SGDSolver(sp)
    return solver.step


def run_caffessl(name, folder, iters, warmup):
    step = build_caffessl(name, folder, iters + warmup)
    step(warmup)
    t = time.perf_counter()
    step(iters)
    return time.perf_counter() - t


def torch_model(name):
    import torch.nn as nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
                         nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))


def build_torch(name, folder):
    """A callable running ``n`` iterations of the hand-written PyTorch loop."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    cfg = NETS[name]
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(folder, "y.npy")))
    model = torch_model(name)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights}, {"params": biases, "lr": 0.002}], lr=0.001, momentum=0.9,
                          weight_decay=0.0005)
    b = cfg["batch"]
    pos = 0

    def one():
        nonlocal pos
        if pos + b > N_IMAGES:
            pos = 0
        xb = x[pos:pos + b].float().mul_(0.00390625)
        yb = y[pos:pos + b]
        pos += b
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    def steps(n):
        for _ in range(n):
            one()
    return steps


def run_torch(name, folder, iters, warmup):
    steps = build_torch(name, folder)
    steps(warmup)
    t = time.perf_counter()
    steps(iters)
    return time.perf_counter() - t


def interleaved(name, folder, iters, warmup, rounds):
    """Both sides built in this one process; ``rounds`` alternating chunks of ``iters`` iterations (the side
    going first alternates too); returns the median ms per iteration of each side."""
    import statistics

    import torch
    torch.manual_seed(0)
    sides = {"caffessl": build_caffessl(name, folder, (iters + 1) * rounds + warmup), "torch": build_torch(name, folder)}
    for run in sides.values():
        run(warmup)
    ms = {k: [] for k in sides}
    for r in range(rounds):
        order = ("caffessl", "torch") if r % 2 == 0 else ("torch", "caffessl")
        for k in order:
            t = time.perf_counter()
            sides[k](iters)
            ms[k].append((time.perf_counter() - t) * 1e3 / iters)
    return {k: statistics.median(v) for k, v in ms.items()}


def child(side, name, folder, iters, warmup, chunk=20, rounds=15):
    import torch
    torch.manual_seed(0)
    if side == "ab":
        print(json.dumps(interleaved(name, folder, chunk, warmup, rounds)))
        return
    secs = (run_caffessl if side == "caffessl" else run_torch)(name, folder, iters, warmup)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"img_s": iters * NETS[name]["batch"] / secs, "rss_mb": rss_mb}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=20, help="iterations per chunk of the same-process A/B")
    ap.add_argument("--rounds", type=int, default=15, help="chunks per side in the same-process A/B")
    ap.add_argument("--procs", type=int, default=3, help="fresh processes running the same-process A/B")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "NET", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.iters, args.warmup, args.chunk, args.rounds)
        return 0
    print(f"command: python bench/train_speed.py --iters {args.iters} --warmup {args.warmup} --chunk {args.chunk} "
          f"--rounds {args.rounds} --procs {args.procs}  (torch {__import__('torch').__version__}, {os.cpu_count()} CPUs, "
          f"{__import__('torch').get_num_threads()} threads, load {os.getloadavg()[0]:.1f})")
    print(f"{'net':<14} {'caffessl ms/it':>14} {'torch ms/it':>11} {'speed ratio (min-max)':>21} "
          f"{'caffessl img/s':>14} {'torch img/s':>11} {'sep ratio':>9} {'caffessl MB':>11} {'torch MB':>9} "
          f"{'mem ratio':>9}")

    def run_child(side, name, folder):
        out = subprocess.check_output([sys.executable, __file__, "--iters", str(args.iters), "--warmup",
                                       str(args.warmup), "--chunk", str(args.chunk), "--rounds", str(args.rounds),
                                       "--child", side, name, folder], cwd=REPO, stderr=subprocess.DEVNULL, text=True)
        return json.loads(out.strip().splitlines()[-1])

    import statistics
    for name in NETS:
        with tempfile.TemporaryDirectory() as folder:
            make_data(name, folder)
            res = {side: run_child(side, name, folder) for side in ("torch", "caffessl")}
            ab = [run_child("ab", name, folder) for _ in range(args.procs)]
        ratios = sorted(x["torch"] / x["caffessl"] for x in ab)
        med = statistics.median(ratios)
        cs_ms, t_ms = statistics.median(x["caffessl"] for x in ab), statistics.median(x["torch"] for x in ab)
        c, t = res["caffessl"], res["torch"]
        print(f"{name:<14} {cs_ms:>14.2f} {t_ms:>11.2f} {med:>8.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) "
              f"{c['img_s']:>14.0f} {t['img_s']:>11.0f} {c['img_s'] / t['img_s']:>9.2f} "
              f"{c['rss_mb']:>11.0f} {t['rss_mb']:>9.0f} {c['rss_mb'] / t['rss_mb']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
