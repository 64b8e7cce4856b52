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
from ..plotting import figure, percent_bars, save_png


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` now if plots cannot be drawn (before a long analysis)."""
    figure(1, 1)


def _label(layer, g) -> str:
    return layer.name if len(layer.groups) == 1 else f"{layer.name}_{g.group}"


def plot_sparsity_bars(analysis, path) -> str:
    """Bars of element / row / column sparsity (%) per layer, or per conv group; writes a PNG at ``path``."""
    pairs = analysis.groups()
    labels = [_label(l, g) for l, g in pairs]
    series = [("element", [100 * g.elem_sparsity for _, g in pairs]), ("row", [100 * g.row_sparsity for _, g in pairs]),
              ("column", [100 * g.col_sparsity for _, g in pairs])]
    return percent_bars(labels, series, "sparsity (%)", f"weight sparsity (zero: |w| < {analysis.threshold:g})", path)


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
