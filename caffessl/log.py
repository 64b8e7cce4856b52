"""glog-format logging, so that Caffe's log tools (tools/extra/parse_log.py, plot_training_log.py) read our logs.

A line looks like Caffe's::

    I1122 10:00:00.000000 12345 solver.py:257] Iteration 100, loss = 0.3

(severity letter, month-day, wall time with microseconds, thread id, source file:line, message). The library
logs to the ``caffessl`` logger and installs no handler; the CLI calls ``setup_logging()``. A message with a
newline continues on raw lines without a prefix, as glog does (the fork's sparsity lines rely on it).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

LOGGER_NAME = "caffessl"
_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "F"}


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def fmt_num(x) -> str:
    """A number as C++'s default ostream prints a float (6 significant digits, %g style)."""
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return format(x, ".6g")


class GlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        lt = time.localtime(t)
        usec = int((t - int(t)) * 1e6)
        letter = _LETTER.get(record.levelno, "I")
        tid = getattr(record, "thread_native", None) or threading.get_native_id()
        head = (f"{letter}{lt.tm_mon:02d}{lt.tm_mday:02d} {lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d}."
                f"{usec:06d} {tid:>5d} {os.path.basename(record.pathname)}:{record.lineno}] ")
        msg = record.getMessage()
        if record.exc_info:
            msg = msg + "\n" + self.formatException(record.exc_info)
        return head + msg


class _TqdmAwareHandler(logging.StreamHandler):
    """Writes through tqdm.write while a progress bar is on the terminal, so lines do not tear the bar."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            if getattr(tqdm, "_instances", None):
                tqdm.write(self.format(record), file=self.stream)
                return
        except ImportError:
            pass
        super().emit(record)


_installed: list[logging.Handler] = []


def setup_logging(stream=None, level=logging.INFO) -> logging.Handler:
    """Send the ``caffessl`` logger to ``stream`` (stderr) in glog format; idempotent."""
    logger = get_logger()
    for h in _installed:
        logger.removeHandler(h)
    _installed.clear()
    handler = _TqdmAwareHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _installed.append(handler)
    return handler
