"""The matplotlib glue every plot shares: an off-screen figure (the Agg canvas; pyplot's global state is never
touched, and matplotlib is imported only when a plot is drawn) and an atomic PNG write."""
from __future__ import annotations

import os

from .errors import PlotError, PlotUnavailableError
from .io.atomic import atomic_path


def figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotUnavailableError(f"plotting needs matplotlib, which is not importable ({e}); "
                                   f"install it with `pip install matplotlib`") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path) -> str:
    """Write ``fig`` to ``path`` as PNG (a temporary file, then renamed)."""
    path = os.fspath(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as e:
        raise PlotError(f"{path}: cannot write the plot ({e.strerror or e})") from None
    return path


def percent_bars(labels, series, ylabel: str, title: str, path) -> str:
    """Grouped bars in percent (0-100): ``series`` = [(legend name, [value per label])]; writes a PNG."""
    import numpy as np
    fig = figure(max(6.0, 0.9 * len(labels) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, vals) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return save_png(fig, path)
