"""PNG plots of the implicit-sparsity study: per-layer bars of a feature report, selectivity histograms, and a
sweep's sparsity against decay strength per optimizer (matplotlib via caffessl/plotting.py)."""
from __future__ import annotations

import os

import numpy as np

from ..plotting import figure, percent_bars, save_png


def plot_feature_bars(report, path) -> str:
    """Per layer: % features inactive by activation, by γ, and % zero filters."""
    labels = [l.layer for l in report.layers]
    series = [("inactive (activation)", [100.0 * len(l.inactive_act) / l.features for l in report.layers]),
              ("inactive (gamma)", [100.0 * len(l.inactive_gamma) / l.features if l.inactive_gamma is not None
                                    else 0.0 for l in report.layers]),
              ("zero filters", [100.0 * len(l.zero_filters) / l.features for l in report.layers])]
    return percent_bars(labels, series, "% of the layer's features", f"implicit sparsity over {report.samples} samples",
                        path)


def plot_selectivity(report, path) -> str:
    """One histogram of the live features' selectivity per layer."""
    n = max(len(report.layers), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = figure(3.2 * cols, 2.6 * rows)
    for i, l in enumerate(report.layers):
        ax = fig.add_subplot(rows, cols, i + 1)
        s = l.live_selectivity
        ax.hist(s, bins=20, range=(0.0, 1.0))
        ax.set_title(f"{l.layer} (mean {l.mean_selectivity:.2f})" if s.size else f"{l.layer} (all inactive)",
                     fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("selectivity", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def write_feature_plots(report, folder) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    return [plot_feature_bars(report, os.path.join(folder, "features.png")),
            plot_selectivity(report, os.path.join(folder, "selectivity.png"))]


def plot_sweep_strength(results, path) -> str:
    """% features inactive by activation (left) and by γ (right) against the decay strength, one line per
    (optimizer, decay kind, batch size, SSL λ)."""
    done = [r for r in results if r.get("status") == "done"]
    series: dict = {}
    for r in done:
        run = r["run"]
        key = f"{run['type']} {run['decay']}" + (f" bs{run['batch_size']}" if run["batch_size"] else "") + \
              (f" ssl{run['ssl']:g}" if run["ssl"] else "")
        series.setdefault(key, []).append((run["strength"] if run["decay"] != "none" else 0.0,
                                           r.get("pct_inactive_act"), r.get("pct_inactive_gamma")))
    fig = figure(11, 4.5)
    for j, (what, col) in enumerate((("inactive by activation", 1), ("inactive by gamma", 2))):
        ax = fig.add_subplot(1, 2, j + 1)
        for key, pts in sorted(series.items()):
            pts = sorted(p for p in pts if p[col] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[col] for p in pts], marker="o", label=key)
        ax.set_xscale("symlog", linthresh=1e-5)
        ax.set_xlabel("decay strength (lambda)")
        ax.set_ylabel(f"% features {what}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def plot_sweep_layers(results, path) -> str:
    """% features inactive by activation per layer, one line per finished run."""
    done = [r for r in results if r.get("status") == "done" and r.get("layers")]
    fig = figure(max(7.0, 1.0 * len(done[0]["layers"]) + 3) if done else 7.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for r in done:
        names = [l["layer"] for l in r["layers"]]
        ax.plot(range(len(names)), [100.0 * l["inactive_by_activation"] / l["features"] for l in r["layers"]],
                marker="o", label=r["run"]["name"])
    if done:
        names = [l["layer"] for l in done[0]["layers"]]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
    ax.set_ylabel("% features inactive (activation)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)
