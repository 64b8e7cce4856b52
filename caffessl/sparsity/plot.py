"""PNG plots of a :class:`~caffessl.sparsity.analyze.SparsityAnalysis`.

* ``sparsity.png``: per layer (per conv group when a layer has several), bars of element, row and column
  sparsity in percent;
* ``column_nonzero.png``: the fork's ``figure(1000)``: one panel per (layer, group) with the nonzero ratio of
  every column of the group's matrix, sorted in decreasing order, on axes ``[0, C] x [0, 1]``.

matplotlib is imported only when a plot is drawn (the package works without it), and only through its
object-oriented API with the Agg canvas: pyplot's global backend and figure state are left alone.
"""
from __future__ import annotations

import os

from ..errors import PlotError
from ..plotting import figure, save_png


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` now if plots cannot be drawn (before a long analysis)."""
    figure(1, 1)


def _label(layer, g) -> str:
    return layer.name if len(layer.groups) == 1 else f"{layer.name}_{g.group}"


def plot_sparsity_bars(analysis, path) -> str:
    """Bars of element / row / column sparsity (%) per layer, or per conv group; writes a PNG at ``path``."""
    import numpy as np
    pairs = analysis.groups()
    labels = [_label(l, g) for l, g in pairs]
    series = [("element", [g.elem_sparsity for _, g in pairs]), ("row", [g.row_sparsity for _, g in pairs]),
              ("column", [g.col_sparsity for _, g in pairs])]
    fig = figure(max(6.0, 0.9 * len(labels) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels))
    width = 0.27
    for i, (name, vals) in enumerate(series):
        ax.bar(x + (i - 1) * width, [100 * v for v in vals], width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel("sparsity (%)")
    ax.set_title(f"weight sparsity (zero: |w| < {analysis.threshold:g})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return save_png(fig, path)


def plot_column_nonzero(analysis, path) -> str:
    """The fork's plot: per (layer, group), each column's nonzero ratio sorted in decreasing order."""
    import numpy as np
    pairs = analysis.groups()
    n = max(1, len(pairs))
    fig = figure(8.0, 1.0 + 1.4 * n)
    for i, (l, g) in enumerate(pairs):
        ax = fig.add_subplot(n, 1, i + 1)
        ratio = np.sort(g.col_nonzero_ratio)[::-1]
        ax.plot(np.arange(g.cols), ratio, "-r", label=f"{l.name}_{g.group}", linewidth=2.0)
        ax.axis([0, max(g.cols, 1), 0, 1])
        ax.legend(loc="upper right")
        if i == 0:
            ax.set_title("nonzero ratio of each column (sorted)")
    fig.tight_layout()
    return save_png(fig, path)


def write_plots(analysis, folder) -> list[str]:
    """Both plots into ``folder`` (created if needed): ``sparsity.png`` and ``column_nonzero.png``."""
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise PlotError(f"{folder}: cannot create the plot folder ({e.strerror or e})") from None
    return [plot_sparsity_bars(analysis, os.path.join(folder, "sparsity.png")),
            plot_column_nonzero(analysis, os.path.join(folder, "column_nonzero.png"))]
