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


# after the consumer took a batch while others were still queued, wait this long before loading the next:
# its forward pass (many short torch calls, each re-taking the GIL) then runs without this thread's Python
# competing for the GIL, and the load falls into the backward pass, which runs without the GIL
DEFER_S = 0.002


def _run(load_batch, q: queue.Queue, stop: threading.Event):
    try:
        _loop(load_batch, q, stop)
    finally:
        close = getattr(load_batch, "close", None)
        if close is not None:
            close()


def _loop(load_batch, q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        if DEFER_S and q.qsize():
            stop.wait(DEFER_S)
        try:
            item = load_batch()
        except BaseException as e:  # handed to the consumer, which raises it in the forward
            item = _Failure(e)
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failure):
            return


class Prefetcher:
    def __init__(self, load_batch, depth: int, name: str = "prefetch", owner=None):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._failure = None
        self.thread = threading.Thread(target=_run, args=(load_batch, self.queue, self._stop),
                                       name=f"caffessl-{name}", daemon=True)
        self.thread.start()
        if owner is not None:
            self._finalizer = weakref.finalize(owner, Prefetcher._shutdown, self._stop, self.queue, self.thread)

    def get(self):
        if self._failure is not None:  # the loader failed before: the same error at every forward
            raise self._failure.exc
        if self._stop.is_set():
            raise RuntimeError("the prefetch thread was stopped")
        item = self.queue.get()
        if isinstance(item, _Failure):
            self._failure = item
            self._stop.set()
            raise item.exc
        return item

    @staticmethod
    def _shutdown(stop, q, thread):
        stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)

    def stop(self):
        Prefetcher._shutdown(self._stop, self.queue, self.thread)
