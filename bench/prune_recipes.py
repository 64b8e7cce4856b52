"""The comparison of the pruning methods on MNIST (issue 18): runs the shipped recipes (recipes/*.yaml, full size,
resumable: steps already done in runs/recipes/<name>/ are skipped) and prints ONE table -- test error, non-zero
weights, parameters and MACs after slimming, measured forward latency of the slim net vs the dense one (same
run, same process: the recipe's `time` step) -- with the recipe that produced each row.

    python bench/prune_recipes.py                        # every MNIST recipe, full size (hours on a busy CPU)
    python bench/prune_recipes.py --only han_lenet5,ssl_lenet --reps 50
    python bench/prune_recipes.py --collect              # only tabulate what runs/recipes/ already holds
    python bench/prune_recipes.py --max-iter 20 --test-iters 2 --workroot /tmp/quick   # a quick smoke run

Targets (issue 18): Han LeNet-300-100 and LeNet-5 >= 10x fewer non-zero weights at <= +0.1 % absolute test
error; Network Slimming >= 50 % of BN channels removed at <= +0.2 %; SSL LeNet <= 1.0 % error with conv1 <= 30 %
and conv2 <= 15 % of dense MACs after slimming and slim conv1+conv2 forward >= 2x faster than dense.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caffessl.prune.recipe import load  # noqa: E402
from caffessl.prune.runner import Options, Runner  # noqa: E402

METHODS = {      # in run order: slimming_lenet_bn_085 starts from slimming_lenet_bn's trained weights
    "ssl_lenet": "SSL (filter + channel group Lasso 0.004)",
    "ssl_lenet_strong": "SSL (group Lasso 0.006)",
    "han_lenet5": "Han: magnitude, 3 rounds",
    "han_lenet5_strong": "Han: magnitude, 3 rounds, larger q",
    "han_lenet_300_100": "Han: magnitude, 3 rounds",
    "slimming_lenet_bn": "Network Slimming (BN gamma, 50th percentile)",
    "slimming_lenet_bn_085": "Network Slimming (BN gamma, 85th percentile)",
    "reduction_rate_lenet_025": "reduction rate 0.25",
    "reduction_rate_lenet_05": "reduction rate 0.5",
    "masks_lenet": "channel masks (L1 0.005, t = 0.05)",
    "masks_lenet_strong": "channel masks (L1 0.01, t = 0.05)",
}


def summarize(name, rows) -> dict:
    tests = [r for r in rows if r["kind"] == "test"]
    first = rows[0]
    dense = next((r for r in tests if r["label"] == "dense"), tests[0] if tests else None)
    last = rows[-1]
    final_test = tests[-1] if tests else None
    timed = [r for r in rows if r["kind"] == "time"]
    base = dense or first
    out = {"recipe": f"recipes/{name}.yaml", "method": METHODS.get(name, name),
           "dense_error": dense["error"] if dense else None, "error": final_test["error"] if final_test else None,
           "dense_nonzero": base["nonzero"], "nonzero": last["nonzero"], "params": last["params"],
           "dense_params": base["params"], "flops": last["flops"], "dense_flops": base["flops"]}
    for layer in ("conv1", "conv2"):
        d = base["layer_flops"].get(layer)
        if d:
            out[f"{layer}_flops"] = last["layer_flops"].get(layer, 0) / d
    if timed:
        t = timed[-1]
        out.update(speedup=t["speedup"], layers_speedup=t.get("layers_speedup"), dense_ms=t["dense_ms"],
                   slim_ms=t["current_ms"])
    return out


def fmt_table(summaries) -> str:
    head = ("| method | recipe | test error % (dense) | non-zero weights (x fewer) | params after slim | "
            "MACs % of dense | conv1 / conv2 MACs % | slim vs dense forward (whole net; conv1+conv2 or ip1+ip2) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        err = "-" if s["error"] is None else f"{100 * s['error']:.2f} ({100 * s['dense_error']:.2f})" \
            if s["dense_error"] is not None else f"{100 * s['error']:.2f}"
        nz = f"{s['nonzero']} ({s['dense_nonzero'] / max(s['nonzero'], 1):.1f}x)"
        conv = " / ".join(f"{100 * s[k]:.1f}" for k in ("conv1_flops", "conv2_flops") if k in s) or "-"
        sp = "-" if "speedup" not in s else f"{s['speedup']:.2f}x; {s['layers_speedup']:.2f}x" \
            if s.get("layers_speedup") else f"{s['speedup']:.2f}x"
        lines.append(f"| {s['method']} | {s['recipe']} | {err} | {nz} | {s['params']} | "
                     f"{100 * s['flops'] / max(s['dense_flops'], 1):.1f} | {conv} | {sp} |")
    return "\n".join(lines)


def family(name) -> str:
    """The method a recipe belongs to (its strengths are one line in the plot)."""
    for stem in ("ssl_lenet", "han_lenet5", "han_lenet_300_100", "slimming_lenet_bn", "reduction_rate_lenet",
                 "masks_lenet"):
        if name.startswith(stem):
            return stem
    return name


def plot(summaries, names, path) -> str:
    """Test error against MACs (% of dense) and against non-zero weights, one line per method through its
    strengths; the dense nets as open markers."""
    from caffessl.plotting import figure, save_png
    fig = figure(11, 4.5)
    axes = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    groups = {}
    for name, s in zip(names, summaries):
        if s["error"] is not None:
            groups.setdefault(family(name), []).append(s)
    for fam, rows in groups.items():
        pts = sorted(rows, key=lambda r: r["flops"])
        mac = [100 * r["flops"] / max(r["dense_flops"], 1) for r in pts]
        fewer = [r["dense_nonzero"] / max(r["nonzero"], 1) for r in pts]
        err = [100 * r["error"] for r in pts]
        line = axes[0].plot(mac, err, "o-", label=fam)[0]
        axes[1].plot(fewer, err, "o-", color=line.get_color(), label=fam)
        if pts[0]["dense_error"] is not None:
            for ax, x in ((axes[0], 100.0), (axes[1], 1.0)):
                ax.plot([x], [100 * pts[0]["dense_error"]], "o", mfc="none", color=line.get_color())
    axes[0].set_xlabel("MACs after slimming, % of dense")
    axes[1].set_xlabel("non-zero weights: x fewer than dense")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("MNIST test error %")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Pruning methods on LeNet / MNIST (open markers: the dense nets)")
    fig.tight_layout()
    return save_png(fig, path)


def collected_rows(workdir, recipe):
    """The rows of the steps a finished (or partial) run left in ``workdir``."""
    rows = []
    for step in recipe.steps:
        p = Path(workdir) / f"{step.stem}.json"
        if not p.exists():
            break
        rows.append(json.loads(p.read_text())["row"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated recipe names (default: every MNIST recipe)")
    ap.add_argument("--collect", action="store_true", help="do not run: tabulate the finished steps only")
    ap.add_argument("--max-iter", type=int, help="cap every training run (a smoke run, not the comparison)")
    ap.add_argument("--test-iters", type=int)
    ap.add_argument("--reps", type=int, help="timing repetitions (default: each recipe's, 20)")
    ap.add_argument("--workroot", default="runs/recipes", help="work folders go in WORKROOT/<name>")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    os.chdir(REPO)
    names = args.only.split(",") if args.only else list(METHODS)
    summaries = []
    for name in names:
        recipe = load(f"recipes/{name}.yaml")
        work = os.path.join(args.workroot, name)
        if args.collect:
            rows = collected_rows(work, recipe)
            if not rows:
                print(f"{name}: nothing run yet", file=sys.stderr)
                continue
        else:
            rows = Runner(f"recipes/{name}.yaml", Options(args.max_iter, args.test_iters, args.reps, work)).run()
        s = summarize(name, rows)
        s["complete"] = len(rows) == len(recipe.steps)
        summaries.append(s)
    table = fmt_table(summaries)
    print(table)
    incomplete = [s["recipe"] for s in summaries if not s["complete"]]
    if incomplete:
        print(f"\n(unfinished runs, partial rows: {', '.join(incomplete)})")
    os.makedirs(args.workroot, exist_ok=True)
    Path(args.workroot, "comparison.md").write_text(table + "\n")
    Path(args.workroot, "comparison.json").write_text(json.dumps(summaries, indent=1))
    if summaries:
        print("plot:", plot(summaries, [Path(s["recipe"]).stem for s in summaries],
                            Path(args.workroot, "comparison.png")))


if __name__ == "__main__":
    main()
