"""The implicit-sparsity study (Mehta, Kim, Theobalt, CVPR 2019) on MNIST with BasicNet: NOT a CI test.

Runs ``caffessl sweep models/implicit_sparsity/study_mnist.yaml`` (resumable: finished runs are kept), then prints
the sweep's table and checks the study's four directions on the features inactive by activation ("reproduced":
the order holds everywhere and is strict somewhere; "not shown": equal everywhere):

1. Adam >= SGD at the same L2 strength (ratio Adam / SGD, the baseline measured in the same sweep);
2. for Adam, L2 in the gradient >= decoupled weight decay of the same strength;
3. inactive features grow with the strength lambda (per optimizer and decay kind);
4. smaller batch >= larger batch (Adam, L2 runs of the same strength).

    python bench/implicit_sparsity.py --jobs 2            # the bench/RESULTS.md run (12 runs x 1000 iterations)
    python bench/implicit_sparsity.py --study models/implicit_sparsity/study_mnist_long.yaml --jobs 3
Run from the repository root (runs/implicit_sparsity_mnist/ gets each run's log, snapshot and result.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caffessl.study.config import load_study  # noqa: E402
from caffessl.study.sweep import markdown_table, rows, sweep, write_outputs  # noqa: E402


def _pct(r):
    return r.get("pct_inactive_act") if r.get("status") == "done" else None


def directions(results) -> list[tuple[str, str, str]]:
    """(direction, verdict, evidence) for the study's four claims."""
    by = {}
    for r in results:
        run = r["run"]
        by[(run["type"], run["decay"] if run["strength"] else "none", run["strength"], run["batch_size"],
            run["ssl"])] = r
    sizes = [k[3] for k in by]
    base_bs = max(set(sizes), key=sizes.count) if sizes else None     # directions 1-3: the usual batch size
    out = []
    # 1. Adam >= SGD at the same L2
    ev, ok, any_pos = [], True, False
    for (t, d, s, bs, ssl), r in sorted(by.items(), key=lambda kv: str(kv[0])):
        if t != "Adam" or d not in ("L2", "none") or ssl or bs != base_bs:
            continue
        sgd = by.get(("SGD", d, s, bs, ssl))
        a, b = _pct(r), _pct(sgd) if sgd else None
        if a is None or b is None:
            continue
        ok &= a >= b
        any_pos |= a > b
        ev.append(f"L2 {s:g}: Adam {a:.1f}% vs SGD {b:.1f}%" + (f" (x{a / b:.2g})" if b else ""))
    out.append(("Adam >= SGD in inactive features at the same L2", _verdict(ev, ok, any_pos), "; ".join(ev)))
    # 2. Adam: L2 >= decoupled
    ev, ok, any_pos = [], True, False
    for (t, d, s, bs, ssl), r in sorted(by.items(), key=lambda kv: str(kv[0])):
        if t != "Adam" or d != "decoupled" or ssl or bs != base_bs:
            continue
        l2 = by.get(("Adam", "L2", s, bs, ssl))
        a, b = (_pct(l2) if l2 else None), _pct(r)
        if a is None or b is None:
            continue
        ok &= a >= b
        any_pos |= a > b
        ev.append(f"{s:g}: L2 {a:.1f}% vs decoupled {b:.1f}%")
    out.append(("for Adam, L2 >= decoupled weight decay", _verdict(ev, ok, any_pos), "; ".join(ev)))
    # 3. grows with lambda
    ev, ok, any_pos = [], True, False
    for t in ("SGD", "Adam"):
        for d in ("L2", "decoupled"):
            pts = sorted((s, _pct(r)) for (tt, dd, s, bs, ssl), r in by.items()
                         if tt == t and dd in (d, "none") and bs == base_bs and not ssl and _pct(r) is not None)
            if len(pts) < 2 or not any(s > 0 for s, _ in pts):
                continue
            vals = [v for _, v in pts]
            ok &= all(b >= a for a, b in zip(vals, vals[1:]))
            any_pos |= vals[-1] > vals[0]
            ev.append(f"{t} {d}: " + " -> ".join(f"{v:.1f}%" for v in vals) + f" at lambda {[s for s, _ in pts]}")
    out.append(("inactive features grow with lambda", _verdict(ev, ok, any_pos), "; ".join(ev)))
    # 4. smaller batch >= larger: Adam L2 runs of one strength that differ only in batch size
    ev, ok, any_pos = [], True, False
    for strength in sorted({k[2] for k in by if k[0] == "Adam" and k[1] == "L2"}):
        pts = sorted((bs, _pct(r)) for (t, d, s, bs, ssl), r in by.items()
                     if t == "Adam" and d == "L2" and s == strength and not ssl and bs and _pct(r) is not None)
        if len(pts) < 2:
            continue
        vals = [v for _, v in pts]
        ok &= all(a >= b for a, b in zip(vals, vals[1:]))
        any_pos |= vals[0] > vals[-1]
        ev.append(f"Adam L2 {strength:g}: " + ", ".join(f"batch {bs}: {v:.1f}%" for bs, v in pts))
    out.append(("smaller batch >= larger batch", _verdict(ev, ok, any_pos), "; ".join(ev)))
    return out


def _verdict(ev, ok, any_pos) -> str:
    if not ev:
        return "NOT MEASURED"
    if ok and any_pos:
        return "reproduced"
    if ok:
        return "not shown (equal on both sides)"
    return "NOT reproduced"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "models" / "implicit_sparsity" / "study_mnist.yaml"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    study = load_study(args.study)
    t0 = time.time()
    results = sweep(study, jobs=args.jobs, threads=args.threads, log=lambda m: print(m, file=sys.stderr))
    wall = time.time() - t0
    print(f"command: python bench/{os.path.basename(__file__)} --study {args.study} --jobs {args.jobs}")
    print(markdown_table(rows(results)))
    for p in write_outputs(study, results):
        print(f"wrote {p}")
    print()
    print("| direction (inactive features by activation) | verdict | evidence |")
    print("|---|---|---|")
    for name, verdict, ev in directions(results):
        print(f"| {name} | {verdict} | {ev} |")
    print(f"\nsweep wall time this invocation: {wall:.0f} s ({len(study.runs)} runs, jobs {args.jobs})")


if __name__ == "__main__":
    main()
