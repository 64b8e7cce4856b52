"""Reproduce the SSL paper's LeNet rows (Wen et al. 2016, Table 1) with caffessl: NOT a CI test.

1. start from a trained dense LeNet (``--weights``; default: the real-Caffe baseline
   ../shared/models/lenet/lenet_iter_10000.caffemodel -- the paper also regularizes a baseline model) and
   measure its test error;
2. train models/lenet/lenet_train_test_ssl.prototxt (filter-wise + channel/shape-wise group Lasso on
   conv1/conv2) with solvers/lenet_ssl_solver.prototxt on MNIST;
3. measure the test error and the FLOPs conv1/conv2 keep;
4. fine-tune with DISCONNECTED_GRPWISE (solvers/lenet_ssl_finetune_solver.prototxt) and check that every
   all-zero row and column of conv1/conv2/ip1/ip2 stays exactly zero;
5. print the table next to the paper's rows.

    python bench/ssl_lenet.py --threads 1     # the bench/RESULTS.md run: solvers' 5000 SSL + 8000 fine-tune iters
    python bench/ssl_lenet.py --iters 3000 --steps 2000,2600 --breadth-decay 0.005 --kernel-shape-decay 0.005
Run from the repository root (runs/lenet_ssl/ gets the SSL and fine-tuned caffemodels). Targets: error <= 1.0 %, conv1 <= 30 %, conv2 <= 15 % of dense FLOPs.

FLOP counting (the paper's): a conv layer's remaining multiply-accumulates are kept filters (rows of its
lowered weight matrix) x kept columns (input channel, ky, kx) x output positions. A conv1 filter whose
weights are all zero outputs a constant (its bias; LeNet has no padding and no nonlinearity before
pool1/conv2), so conv2's columns reading that channel fold into conv2's bias: they count as removed even
where conv2's own weights there are nonzero ("conv2 FLOP %", the paper's Table 1 count: 19/50 filters x
4/20 channels = 7.6 %). "conv2 own %" counts only conv2's own zero rows/columns (caffessl.weights_matrix.matrix_flops).
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
from caffessl.weights_matrix import as_matrix, matrix_flops  # noqa: E402

# (run, error %, conv1 filters, conv1 FLOP %, conv2 filters, conv2 channels, conv2 FLOP %)
# Table 1 of the paper (filter-wise + channel-wise); conv2 FLOP % = filters/50 x channels/20 (19/50 x 4/20 = 7.6 %)
PAPER = [("paper: LeNet #1 (baseline)", 0.9, "20", 100.0, "50", "20", 100.0),
         ("paper: LeNet #2 (SSL)", 0.8, "5", 25.0, "19", "4", 7.6),
         ("paper: LeNet #3 (SSL)", 1.0, "3", 15.0, "12", "3", 3.6)]


def solver_with(path, out_dir, **over):
    sp = read_solver_prototxt(path)
    for k, v in over.items():
        if v is None:
            continue
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
    return 100.0 * (1.0 - float(np.mean(acc)))


def lenet_flops(net):
    """The paper's counting (module docstring) for conv1/conv2 of ``net`` (LeNet: 20x1x5x5, 50x20x5x5)."""
    w1 = as_matrix(net.layer_dict["conv1"].params[0].detach()) != 0           # 20 x 25
    w2 = net.layer_dict["conv2"].params[0].detach() != 0                      # 50 x 20 x 5 x 5
    pos1, pos2 = 24 * 24, 8 * 8
    r1 = w1.any(dim=1)
    c1 = w1.any(dim=0)
    m2 = w2.reshape(w2.shape[0], -1)
    r2 = m2.any(dim=1)
    c2_own = m2.any(dim=0)                                                    # 500 columns
    live_in = r1.repeat_interleave(25)                                        # channel c -> its 25 columns
    c2 = c2_own & live_in
    ch2 = c2.reshape(20, 25).any(dim=1)
    n = lambda t: int(t.sum())
    pct = lambda name: (lambda f: 100.0 * f[1] / f[0])(matrix_flops(net.layer_dict[name].params[0]))
    out = {
        "conv1_rows": n(r1), "conv1_cols": n(c1),
        "conv1_pct": pct("conv1"),
        "conv2_rows": n(r2), "conv2_cols": n(c2), "conv2_cols_own": n(c2_own), "conv2_ch": n(ch2),
        "conv2_pct": 100.0 * n(r2) * n(c2) / (50 * 500),          # with conv1's dead channels folded away
        "conv2_own_pct": pct("conv2"),                            # conv2's own zero rows/columns only
    }
    out["conv12_pct"] = (out["conv1_pct"] * 20 * 25 * pos1 + out["conv2_pct"] * 50 * 500 * pos2) / (
        20 * 25 * pos1 + 50 * 500 * pos2)
    return out


def zero_groups(net):
    out = {}
    for name in ("conv1", "conv2", "ip1", "ip2"):
        m = as_matrix(net.layer_dict[name].params[0].detach()) != 0
        out[name] = (~m.any(dim=1), ~m.any(dim=0))
    return out


def row(name, err, f):
    return (f"| {name} | {err:.2f} | {f['conv1_rows']}/20 | {f['conv1_cols']}/25 | {f['conv1_pct']:.1f} | "
            f"{f['conv2_rows']}/50 | {f['conv2_ch']}/20 | {f['conv2_cols']}/500 | {f['conv2_pct']:.1f} | "
            f"{f['conv2_own_pct']:.1f} |")


def progress(solver, t0, tag):
    f = lenet_flops(solver.net)
    print(f"{tag} iter {solver.iter}: lr-loss {solver.smoothed_loss:.4f}, conv1 {f['conv1_rows']}/20 filters "
          f"{f['conv1_pct']:.1f}% FLOPs, conv2 {f['conv2_rows']}/50 filters {f['conv2_ch']}/20 channels "
          f"{f['conv2_cols']}/500 columns {f['conv2_pct']:.1f}% FLOPs ({(time.time() - t0) / 60:.1f} min)",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--weights", help="dense baseline to start SSL from ('' = from scratch; default: "
                    "../shared/models/lenet/lenet_iter_10000.caffemodel, trained by real Caffe)",
                    default=str(REPO.parent / "shared" / "models" / "lenet" / "lenet_iter_10000.caffemodel"))
    ap.add_argument("--iters", type=int, default=None, help="SSL iterations (default: the solver's max_iter)")
    ap.add_argument("--steps", default=None,
                    help="comma-separated multistep stepvalues (default: the solver's, scaled to --iters)")
    ap.add_argument("--base-lr", type=float, default=None)
    ap.add_argument("--breadth-decay", type=float, default=None)
    ap.add_argument("--kernel-shape-decay", type=float, default=None)
    ap.add_argument("--ft-iters", type=int, default=None, help="fine-tune iterations (default: the solver's)")
    ap.add_argument("--ft-base-lr", type=float, default=None)
    ap.add_argument("--ft-steps", default=None, help="comma-separated multistep stepvalues for the fine-tune "
                    "(default: the solver's, scaled to --ft-iters)")
    ap.add_argument("--net", default=None, help="SSL train/test net (default: the SSL solver's)")
    ap.add_argument("--from-ssl", default=None,
                    help="skip SSL training: take this SSL caffemodel (for re-running the fine-tune only)")
    ap.add_argument("--every", type=int, default=250, help="progress line every N iterations")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/lenet_ssl")
    a = ap.parse_args()
    if a.weights and not os.path.isfile(a.weights):
        sys.exit(f"--weights {a.weights} does not exist (pass --weights '' to run SSL from scratch)")
    if a.threads:
        torch.set_num_threads(a.threads)
    os.chdir(REPO)
    os.makedirs(a.out, exist_ok=True)
    from caffessl.data.mnist import ensure_mnist_lmdb
    ensure_mnist_lmdb(a.data, "data/mnist")
    t0 = time.time()
    base = read_solver_prototxt("solvers/lenet_ssl_solver.prototxt")
    iters = a.iters or int(base.max_iter)
    if a.steps:
        steps = [int(s) for s in a.steps.split(",")]
    elif a.iters:
        steps = [int(round(s * iters / base.max_iter)) for s in base.stepvalue]
    else:
        steps = None
    sp_path = solver_with("solvers/lenet_ssl_solver.prototxt", a.out, max_iter=iters,
                          snapshot_prefix=f"{a.out}/lenet_ssl", snapshot=0, stepvalue=steps, base_lr=a.base_lr,
                          breadth_decay=a.breadth_decay, kernel_shape_decay=a.kernel_shape_decay, net=a.net)
    sp = read_solver_prototxt(sp_path)
    solver = caffe.get_solver(sp_path)
    results = []
    if a.weights:
        solver.net.copy_from(a.weights)
        results.append(("caffessl: baseline (" + Path(a.weights).name + ")", test_error(solver),
                        lenet_flops(solver.net)))
        print(f"baseline: error {results[-1][1]:.2f} %", flush=True)
    print(f"SSL: {iters} iterations, base_lr {sp.base_lr:g}, steps {list(sp.stepvalue)}, breadth_decay "
          f"{sp.breadth_decay:g}, kernel_shape_decay {sp.kernel_shape_decay:g}", flush=True)
    if a.from_ssl:
        solver.net.copy_from(a.from_ssl)
        iters = 0
        print(f"SSL: skipped, weights from {a.from_ssl}", flush=True)
    while solver.iter < iters:
        solver.step(min(a.every, iters - solver.iter))
        progress(solver, t0, "SSL")
    ssl_model = f"{a.out}/lenet_ssl_final.caffemodel"
    solver.net.save(ssl_model)
    results.append(("caffessl: SSL", test_error(solver), lenet_flops(solver.net)))
    print(f"SSL: error {results[-1][1]:.2f} %", flush=True)
    t_ssl = time.time() - t0
    before = zero_groups(solver.net)

    ftp = read_solver_prototxt("solvers/lenet_ssl_finetune_solver.prototxt")
    ft_iters = a.ft_iters or int(ftp.max_iter)
    if a.ft_steps:
        ft_steps = [int(x) for x in a.ft_steps.split(",")]
    elif a.ft_iters and ftp.stepvalue:   # the solver's multistep schedule scaled to --ft-iters
        ft_steps = [int(round(x * ft_iters / ftp.max_iter)) for x in ftp.stepvalue]
    else:
        ft_steps = None
    ft_path = solver_with("solvers/lenet_ssl_finetune_solver.prototxt", a.out, max_iter=ft_iters,
                          snapshot_prefix=f"{a.out}/lenet_ssl_ft", snapshot=0, base_lr=a.ft_base_lr,
                          lr_policy="multistep" if ft_steps else None, stepvalue=ft_steps)
    ftp = read_solver_prototxt(ft_path)
    ft = caffe.get_solver(ft_path)
    ft.net.copy_from(ssl_model)
    while ft.iter < ft_iters:
        ft.step(min(a.every, ft_iters - ft.iter))
        progress(ft, t0, "fine-tune")
    results.append(("caffessl: SSL + GRPWISE fine-tune", test_error(ft), lenet_flops(ft.net)))
    after = zero_groups(ft.net)
    kept_zero = all(bool((after[n][0] | ~before[n][0]).all() and (after[n][1] | ~before[n][1]).all())
                    for n in before)
    ft_model = f"{a.out}/lenet_ssl_ft_final.caffemodel"
    ft.net.save(ft_model)

    what = (f"SSL weights {a.from_ssl}" if a.from_ssl else
            f"{iters} SSL iterations from {Path(a.weights).name if a.weights else 'scratch'}")
    print(f"\nLeNet SSL on MNIST (10,000 test images): {what} (base_lr {sp.base_lr:g}, multistep "
          f"{list(sp.stepvalue)} gamma {sp.gamma:g}, breadth_decay {sp.breadth_decay:g}, kernel_shape_decay "
          f"{sp.kernel_shape_decay:g}) + {ft_iters} DISCONNECTED_GRPWISE fine-tune iterations "
          f"(base_lr {ftp.base_lr:g}, {ftp.lr_policy} {list(ftp.stepvalue)}); {(time.time() - t0) / 60:.1f} min "
          f"(SSL part {t_ssl / 60:.1f}), torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| run | error % | conv1 filters | conv1 columns | conv1 FLOP % | conv2 filters | conv2 channels | "
          "conv2 columns | conv2 FLOP % (paper) | conv2 FLOP % (own zeros only) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, e, f1, p1, f2, ch2, p2 in PAPER:
        print(f"| {name} | {e:.2f} | {f1}/20 | - | {p1:.1f} | {f2}/50 | {ch2}/20 | - | {p2:.1f} | - |")
    for name, e, f in results:
        print(row(name, e, f))
    print(f"\nevery all-zero row/column of conv1, conv2, ip1, ip2 stayed exactly zero during fine-tuning: "
          f"{kept_zero}")
    e, f = results[-1][1], results[-1][2]
    ok = e <= 1.0 and f["conv1_pct"] <= 30 and f["conv2_pct"] <= 15 and kept_zero
    print("targets (fine-tuned error <= 1.0 %, conv1 <= 30 %, conv2 <= 15 %, zero groups kept):",
          "MET" if ok else "NOT MET")


if __name__ == "__main__":
    main()
