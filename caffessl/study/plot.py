"""PNG plots of the implicit-sparsity study: per-layer bars of a feature report, selectivity histograms, and a
sweep's sparsity against decay strength per optimizer (matplotlib via caffessl/plotting.py)."""
from __future__ import annotations

import os

import numpy as np

from ..plotting import figure, save_png


def plot_feature_bars(report, path) -> str:
    """Per layer: % features inactive by activation, by γ, and % zero filters."""
    labels = [l.layer for l in report.layers]
    series = [("inactive (activation)", [100.0 * len(l.inactive_act) / l.features for l in report.layers]),
              ("inactive (gamma)", [100.0 * len(l.inactive_gamma) / l.features if l.inactive_gamma is not None
                                    else 0.0 for l in report.layers]),
              ("zero filters", [100.0 * len(l.zero_filters) / l.features for l in report.layers])]
    fig = figure(max(6.0, 0.9 * len(labels) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels))
    width = 0.27
    for i, (name, vals) in enumerate(series):
        ax.bar(x + (i - 1) * width, vals, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of the layer's features")
    ax.set_title(f"implicit sparsity over {report.samples} samples")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return save_png(fig, path)


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
