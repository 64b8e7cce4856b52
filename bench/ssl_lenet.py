"""Reproduce the SSL paper's LeNet row (Wen et al. 2016, Table 1) with caffessl: NOT a CI test.

1. train models/lenet/lenet_train_test_ssl.prototxt (filter-wise + channel/shape-wise group Lasso on
   conv1/conv2) with solvers/lenet_ssl_solver.prototxt on MNIST;
2. measure the test error and the FLOPs conv1/conv2 keep (kept filters x kept columns per conv group);
3. fine-tune with DISCONNECTED_GRPWISE (solvers/lenet_ssl_finetune_solver.prototxt) and check that every
   all-zero row and column stays exactly zero;
4. print the table next to the paper's rows.

    python bench/ssl_lenet.py [--data ../shared/data/mnist] [--iters 10000] [--ft-iters 2000]
Run from the repository root. Targets: error <= 1.0 %, conv1 <= 30 %, conv2 <= 15 % of dense FLOPs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import caffessl as caffe  # noqa: E402
from caffessl.io.prototxt import read_solver_prototxt, write_prototxt  # noqa: E402
from caffessl.sparsity.flops import net_flops  # noqa: E402
from caffessl.sparsity.matrix import as_matrix  # noqa: E402

PAPER = [("SSL paper: LeNet baseline", 0.9, "20", "50", 100.0, 100.0),
         ("SSL paper: LeNet SSL #1", 0.8, "5", "19", 25.0, 7.6),
         ("SSL paper: LeNet SSL #3", 1.0, "3", "12", 15.0, 3.6)]


def solver_with(path, out_dir, **over):
    sp = read_solver_prototxt(path)
    for k, v in over.items():
        if k == "stepvalue":
            del sp.stepvalue[:]
            sp.stepvalue.extend(v)
        else:
            setattr(sp, k, v)
    p = Path(out_dir) / Path(path).name
    write_prototxt(str(p), sp)
    return str(p)


def test_error(solver):
    net = solver.test_nets[0]
    acc = []
    with torch.no_grad():
        for _ in range(solver.param.test_iter[0]):
            acc.append(float(net.forward()["accuracy"]))
    return 100.0 * (1.0 - float(np.mean(acc))), net


def net_flops_after_forward(solver):
    return net_flops(solver.net)   # the train net's blob shapes are set by its last forward


def zero_groups(net):
    out = {}
    for name in ("conv1", "conv2", "ip1", "ip2"):
        m = as_matrix(net.layer_dict[name].params[0].detach()) != 0
        out[name] = (~m.any(dim=1), ~m.any(dim=0))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--ft-iters", type=int, default=2000)
    ap.add_argument("--out", default="runs/lenet_ssl")
    a = ap.parse_args()
    os.chdir(REPO)
    os.makedirs(a.out, exist_ok=True)
    from caffessl.data.mnist import ensure_mnist_lmdb
    ensure_mnist_lmdb(a.data, "data/mnist")
    t0 = time.time()
    # the multistep schedule (6000/8000 of 10000) scaled to --iters
    sp_path = solver_with("solvers/lenet_ssl_solver.prototxt", a.out, max_iter=a.iters,
                          snapshot_prefix=f"{a.out}/lenet_ssl", snapshot=0,
                          stepvalue=[int(a.iters * 0.6), int(a.iters * 0.8)])
    solver = caffe.get_solver(sp_path)
    chunk = 500
    while solver.iter < a.iters:
        solver.step(min(chunk, a.iters - solver.iter))
        fl = {f.name: f for f in net_flops_after_forward(solver)}
        print(f"iter {solver.iter}: loss {solver.smoothed_loss:.4f}, conv1 {fl['conv1'].rows_kept}/20 filters "
              f"{100 * fl['conv1'].fraction:.1f}% FLOPs, conv2 {fl['conv2'].rows_kept}/50 filters "
              f"{100 * fl['conv2'].fraction:.1f}% FLOPs ({(time.time() - t0) / 60:.1f} min)", flush=True)
    ssl_model = f"{a.out}/lenet_ssl_final.caffemodel"
    solver.net.save(ssl_model)
    err, tnet = test_error(solver)
    flops = {f.name: f for f in net_flops(tnet)}
    t_ssl = time.time() - t0
    before = zero_groups(solver.net)

    ft_path = solver_with("solvers/lenet_ssl_finetune_solver.prototxt", a.out, max_iter=a.ft_iters,
                          snapshot_prefix=f"{a.out}/lenet_ssl_ft", snapshot=0)
    ft = caffe.get_solver(ft_path)
    ft.net.copy_from(ssl_model)
    ft.step(a.ft_iters)
    ft_err, ft_net = test_error(ft)
    after = zero_groups(ft.net)
    kept_zero = all(bool((after[n][0] | ~before[n][0]).all() and (after[n][1] | ~before[n][1]).all())
                    for n in before)
    ft_flops = {f.name: f for f in net_flops(ft_net)}

    print(f"LeNet SSL on MNIST: {a.iters} SSL iterations ({t_ssl / 60:.1f} min) + {a.ft_iters} fine-tune "
          f"iterations; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'run':34s} {'error %':>8s} {'conv1 filters':>14s} {'conv2 filters':>14s} {'conv1 FLOP %':>13s} "
          f"{'conv2 FLOP %':>13s}")
    for name, e, f1, f2, p1, p2 in PAPER:
        print(f"{name:34s} {e:8.2f} {f1:>14s} {f2:>14s} {p1:13.1f} {p2:13.1f}")
    for name, e, fl in (("caffessl SSL", err, flops), ("caffessl SSL + GRPWISE fine-tune", ft_err, ft_flops)):
        c1, c2 = fl["conv1"], fl["conv2"]
        print(f"{name:34s} {e:8.2f} {f'{c1.rows_kept}/{c1.rows}':>14s} {f'{c2.rows_kept}/{c2.rows}':>14s} "
              f"{100 * c1.fraction:13.1f} {100 * c2.fraction:13.1f}")
    print(f"columns kept: conv1 {ft_flops['conv1'].cols_kept:.0f}/{ft_flops['conv1'].cols}, conv2 "
          f"{ft_flops['conv2'].cols_kept:.0f}/{ft_flops['conv2'].cols}; every zero row/column stayed zero "
          f"during fine-tuning: {kept_zero}")
    ok = ft_err <= 1.0 and ft_flops["conv1"].fraction <= 0.30 and ft_flops["conv2"].fraction <= 0.15 and kept_zero
    print("targets (error <= 1.0 %, conv1 <= 30 %, conv2 <= 15 %, zero groups kept):", "MET" if ok else "NOT MET")


if __name__ == "__main__":
    main()
