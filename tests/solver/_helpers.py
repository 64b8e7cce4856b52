"""Helpers for solver tests: capture the caffessl log, compare a net's params with a golden npz."""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager


from tests.golden import close


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def floats(self, pattern: str) -> dict[int, float]:
        """{iteration: value} for messages matching ``pattern`` with groups (iter, value)."""
        out = {}
        for m in self.messages:
            r = re.search(pattern, m)
            if r:
                out[int(r.group(1))] = float(r.group(2))
        return out


@contextmanager
def capture_log():
    logger = logging.getLogger("caffessl")
    h = LogCapture()
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        yield h
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)


def params_of(net) -> dict:
    return {f"{name}/{i}": b.data.copy() for name, blobs in net.params.items() for i, b in enumerate(blobs)}


def compare_params(net, golden: dict, abs_tol, rel_tol, what=""):
    failures = []
    mine = params_of(net)
    for k in golden:
        ok, err = close(mine[k], golden[k], abs_tol, rel_tol)
        if not ok:
            failures.append(f"{what}{k}: max abs err {err:.3g}")
    return failures
