"""Database handles opened once per process and shared by the readers of the same path (LMDB opens an
environment once per process; LevelDB locks its directory): a reference count per real path, the handle
closed when its last reader closes."""
from __future__ import annotations

import os
import threading


class SharedHandles:
    def __init__(self):
        self._open: dict = {}            # realpath -> [handle, number of open readers]
        self._lock = threading.Lock()

    def acquire(self, path: str, opener):
        """(handle, key): the handle already open for ``path``, or ``opener()``'s; release with ``key``."""
        key = os.path.realpath(path)
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                entry = self._open[key] = [opener(), 0]
            entry[1] += 1
            return entry[0], key

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._open[key]
                entry[0].close()
