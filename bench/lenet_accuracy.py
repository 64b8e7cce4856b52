"""LeNet accuracy: Caffe's lenet_solver (10,000 iterations, inv lr, momentum 0.9, wd 5e-4) through `caffessl train`.

Run from the repository root:  python bench/lenet_accuracy.py [--data ../shared/data/mnist] [--log runs/lenet.log]

Prints one table: the test accuracy / loss at each test phase, with real Caffe's numbers from its own log of the
same solver (../shared/models/lenet/caffe_train_gpu.log, BVLC Caffe on a GPU) as the baseline, and the wall
time. The target is >= 0.990 final test accuracy (Caffe's reference run: 0.9908).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.solver.parse_log import parse_log  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--solver", default="solvers/lenet_solver.prototxt")
    ap.add_argument("--log", default="runs/lenet_accuracy.log")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(REPO / args.log), exist_ok=True)
    t0 = time.time()
    with open(REPO / args.log, "w") as logf:
        rc = subprocess.call([sys.executable, "-m", "caffessl.cli", "train", f"--solver={args.solver}",
                              f"--data={args.data}", "--no-progress"], cwd=REPO, stderr=logf)
    wall = time.time() - t0
    if rc != 0:
        print(f"caffessl train failed (exit {rc}); see {args.log}")
        return rc
    _, ours = parse_log((REPO / args.log).read_text().splitlines())
    caffe_log = REPO.parent / "shared" / "models" / "lenet" / "caffe_train_gpu.log"
    ref = {}
    if caffe_log.is_file():
        _, theirs = parse_log(caffe_log.read_text().splitlines())
        ref = {int(r["NumIters"]): r for r in theirs}
    print(f"command: python bench/lenet_accuracy.py  (solver {args.solver}, wall {wall:.0f} s)")
    print(f"{'iter':>6} {'accuracy':>9} {'loss':>8} {'caffe acc':>9} {'caffe loss':>10}")
    for r in ours:
        it = int(r["NumIters"])
        c = ref.get(it, {})
        print(f"{it:>6} {r['accuracy']:>9.4f} {r['loss']:>8.4f} {c.get('accuracy', float('nan')):>9.4f} "
              f"{c.get('loss', float('nan')):>10.4f}")
    final = ours[-1]["accuracy"]
    print(f"final test accuracy {final:.4f} (target >= 0.990): {'PASS' if final >= 0.990 else 'FAIL'}")
    return 0 if final >= 0.990 else 1


if __name__ == "__main__":
    sys.exit(main())
