"""Background batch loading, like Caffe's BasePrefetchingDataLayer: a daemon thread fills a bounded queue
of ``prefetch`` batches so that reading, decoding and transforming are off the forward's critical path.

The thread holds the loader, never the layer, so the layer can be collected; ``stop()`` (also called by a
finalizer when the layer goes away) ends the thread, and the loader's ``close()`` runs as it ends. An exception in the loader is
re-raised by ``get()``.
"""
from __future__ import annotations

import queue
import threading
import weakref


class _Failure:
    def __init__(self, exc):
        self.exc = exc


# When batches are still queued, the next load waits: the consumer's forward pass (many short torch calls, each
# re-taking the GIL) then runs without this thread's Python competing for the GIL, and the load falls into the
# backward pass, which runs without the GIL. A training net cues the start of its backward (``cue()``); while
# it does (a cue came between the last two hand-outs) a load that is ahead waits for that cue -- one wake-up of
# this thread per iteration -- otherwise it waits DEFER_S after the hand-out that made room. A load waits only
# when it is ahead, i.e. AHEAD batches are queued: with fewer, loading is the bottleneck and any wait would add
# to every iteration (data_loading bench, loader-bound, forward only: 0.90x -> 1.27x raw, 1.15x -> 1.55x PNG).
DEFER_S = 0.002
AHEAD = 2
CUE_TIMEOUT_S = 0.25  # a load waiting for a cue that does not come starts anyway after this
FULL_POLL_S = 0.1     # a full queue is looked at again this often (and at every hand-out or cue)


class _Pace:
    """What the consumer tells the loading thread: that it made room, whether it cues, and the cue."""
    __slots__ = ("cued", "seen", "go")

    def __init__(self):
        self.cued = False     # a cue came between the last two hand-outs: a load that is ahead waits for one
        self.seen = False     # a cue came since the last hand-out
        self.go = threading.Event()

    def handed_out(self):
        self.cued, self.seen = self.seen, False
        if not self.cued:
            self.go.set()     # room; and a load waiting for a cue must not wait for one that stopped coming

    def cue(self):
        self.seen = True
        self.go.set()


def _run(load_batch, q: queue.Queue, stop: threading.Event, pace: _Pace):
    try:
        _loop(load_batch, q, stop, pace)
    finally:
        close = getattr(load_batch, "close", None)
        if close is not None:
            close()


def _loop(load_batch, q: queue.Queue, stop: threading.Event, pace: _Pace):
    while not stop.is_set():
        n = q.qsize()
        if n >= q.maxsize or (n >= AHEAD and pace.cued):
            pace.go.wait(FULL_POLL_S if n >= q.maxsize else CUE_TIMEOUT_S)
            pace.go.clear()
            if q.full() or stop.is_set():
                continue
            if not pace.cued and DEFER_S:  # the room came from a hand-out at the start of a forward
                stop.wait(DEFER_S)
        elif n >= AHEAD and DEFER_S:
            stop.wait(DEFER_S)
        try:
            item = load_batch()
        except BaseException as e:  # handed to the consumer, which raises it in the forward
            item = _Failure(e)
        q.put(item)  # never blocks: this thread is the only producer and saw room
        if isinstance(item, _Failure):
            return


class Prefetcher:
    def __init__(self, load_batch, depth: int, name: str = "prefetch", owner=None):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._failure = None
        self._pace = _Pace()
        self.thread = threading.Thread(target=_run, args=(load_batch, self.queue, self._stop, self._pace),
                                       name=f"caffessl-{name}", daemon=True)
        self.thread.start()
        if owner is not None:
            self._finalizer = weakref.finalize(owner, Prefetcher._shutdown, self._stop, self.queue, self.thread,
                                              self._pace)

    def get(self):
        if self._failure is not None:  # the loader failed before: the same error at every forward
            raise self._failure.exc
        if self._stop.is_set():
            raise RuntimeError("the prefetch thread was stopped")
        item = self.queue.get()
        self._pace.handed_out()
        if isinstance(item, _Failure):
            self._failure = item
            self._stop.set()
            raise item.exc
        return item

    def cue(self):
        """The consumer starts its backward pass: a good time to load the next batch."""
        self._pace.cue()

    @staticmethod
    def _shutdown(stop, q, thread, pace=None):
        stop.set()
        if pace is not None:
            pace.go.set()
        while True:  # drop the queued batches
            try:
                q.get_nowait()
            except queue.Empty:
                break
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)

    def stop(self):
        Prefetcher._shutdown(self._stop, self.queue, self.thread, self._pace)
