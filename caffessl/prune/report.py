"""A recipe's report: ``report.md`` (one row per step), ``report.csv`` (every measurement) and plots
(test error vs non-zero weights, remaining MACs per step, forward latency dense / masked / slim)."""
from __future__ import annotations

import csv
import io
import os

from ..io.atomic import atomic_write

COLUMNS = ["step", "kind", "label", "error", "params", "nonzero", "flops", "dense_ms", "masked_ms", "current_ms",
           "speedup", "layers_speedup", "seconds"]


def _fmt(key, v):
    if v is None or v == "":
        return ""
    if key == "error":
        return f"{100 * v:.2f} %"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def markdown(recipe, rows) -> str:
    lines = [f"# Recipe {recipe.name}", "", recipe.description.strip(), "",
             f"`caffessl recipe run {recipe.path}` -- net {recipe.net}, start {recipe.weights or 'fillers'}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows) -> str:
    keys = list(COLUMNS)
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], (dict, list))]
    out = io.StringIO()
    w = csv.DictWriter(out, keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return out.getvalue()


def plots(recipe, rows, folder) -> list:
    from ..plotting import figure, save_png
    paths = []
    fig = figure(10, 3.6)
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    tested = [r for r in rows if "error" in r]
    for r in tested:
        ax1.scatter(r["nonzero"], 100 * r["error"])
        ax1.annotate(f"{r['step']}:{r['label']}", (r["nonzero"], 100 * r["error"]), fontsize=7)
    ax1.set_xscale("log")
    ax1.set_xlabel("non-zero weights")
    ax1.set_ylabel("test error (%)")
    ax2.bar([f"{r['step']}:{r['label']}" for r in rows], [r["flops"] / 1e6 for r in rows])
    ax2.set_ylabel("remaining MMACs")
    ax2.tick_params(axis="x", labelrotation=70, labelsize=7)
    timed = [r for r in rows if "dense_ms" in r]
    if timed:
        r = timed[-1]
        names = [k for k in ("dense_ms", "masked_ms", "current_ms") if k in r]
        ax3.bar([n[:-3] for n in names], [r[n] for n in names])
        ax3.set_ylabel("forward ms (median)")
    ax3.set_title("latency", fontsize=9)
    fig.suptitle(f"recipe {recipe.name}")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.3, top=0.85, wspace=0.35)
    paths.append(save_png(fig, os.path.join(folder, "report.png")))
    return paths


def write_report(recipe, rows, folder, with_plots: bool = True) -> None:
    atomic_write(os.path.join(folder, "report.md"), markdown(recipe, rows).encode())
    atomic_write(os.path.join(folder, "report.csv"), csv_text(rows).encode())
    if with_plots:
        plots(recipe, rows, folder)
