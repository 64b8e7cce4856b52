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
