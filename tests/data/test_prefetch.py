"""The prefetch thread's pacing: batches come in order and never stall, whether or not the consumer cues the
start of its backward pass (caffessl/data/prefetch.py)."""
from __future__ import annotations

import itertools
import time

from caffessl.data import prefetch
from caffessl.data.prefetch import Prefetcher, _Pace


class _Counter:
    def __init__(self):
        self.it = itertools.count()

    def __call__(self):
        return next(self.it)


def test_pace_follows_the_consumer():
    p = _Pace()
    p.handed_out()                     # no cue yet: loads follow hand-outs
    assert not p.cued and p.go.is_set()
    p.go.clear()
    p.cue()                            # a backward started
    assert p.seen and p.go.is_set()
    p.go.clear()
    p.handed_out()                     # a cue came since the last hand-out: loads wait for cues
    assert p.cued and not p.go.is_set()
    p.handed_out()                     # the cues stopped: back to hand-outs, and a waiting load is released
    assert not p.cued and p.go.is_set()


def test_batches_in_order_with_and_without_cues():
    pf = Prefetcher(_Counter(), depth=2)
    try:
        got = []
        for _ in range(6):             # a training loop: forward takes a batch, backward cues
            got.append(pf.get())
            pf.cue()
        t = time.perf_counter()
        for _ in range(20):            # forward-only use afterwards: no cues
            got.append(pf.get())
        elapsed = time.perf_counter() - t
        assert got == list(range(26))
        # without cues the thread must not wait CUE_TIMEOUT_S per batch
        assert elapsed < 20 * prefetch.CUE_TIMEOUT_S / 4, elapsed
    finally:
        pf.stop()
    assert not pf.thread.is_alive()


def test_a_loader_error_reaches_the_consumer_after_cues():
    calls = itertools.count()

    def load():
        if next(calls) == 3:
            raise ValueError("record 3 is bad")
        return 0

    pf = Prefetcher(load, depth=1)
    try:
        seen = 0
        try:
            for _ in range(10):
                pf.get()
                pf.cue()
                seen += 1
        except ValueError as e:
            assert "record 3" in str(e)
        assert seen == 3
    finally:
        pf.stop()


def test_a_loader_bound_consumer_never_waits_for_the_deferral(monkeypatch):
    """When loading is the bottleneck (fewer than AHEAD batches queued) the thread loads back to back: a
    deferral there would add to every iteration (seen in session 1's code: +2 ms per batch)."""
    monkeypatch.setattr(prefetch, "DEFER_S", 0.2)

    def slow_load():
        time.sleep(0.01)
        return 0

    pf = Prefetcher(slow_load, depth=4)
    try:
        pf.get()
        t = time.perf_counter()
        for _ in range(20):
            pf.get()
            time.sleep(0.005)  # the consumer's compute, shorter than a load
        elapsed = time.perf_counter() - t
        assert elapsed < 20 * 0.2 / 2, elapsed  # 20 deferrals alone would take 4 s; back to back ~0.2 s
    finally:
        pf.stop()
