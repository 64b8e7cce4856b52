"""LMDB databases of Datum records: a cycling reader (Caffe's db::Cursor use in DataLayer) and a writer
whose map grows as needed (Caffe's db_lmdb.cpp doubles the map size on MDB_MAP_FULL)."""
from __future__ import annotations

import itertools
import os

from ..errors import DataSourceError
from .db import BatchWriter, CyclingReader
from .lmdb_check import check_lmdb_file, check_still_whole
from .shared_handles import SharedHandles


_ENVS = SharedHandles()


def _open_env(path: str, where: str):
    import lmdb
    if not path:
        raise DataSourceError(f"{where}: data_param.source is empty")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "data.mdb")):
        raise DataSourceError(f"{where}: '{path}' is not an LMDB database (no {os.path.join(path, 'data.mdb')})")

    check_lmdb_file(os.path.join(path, "data.mdb"), where)

    def opener():
        try:
            return lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=126, subdir=True)
        except lmdb.Error as e:
            raise DataSourceError(f"{where}: cannot open LMDB '{path}': {e}") from None
    return _ENVS.acquire(path, opener)


class LMDBReader(CyclingReader):
    """Records in key order, wrapping to the first after the last (DataLayer's cursor)."""

    def __init__(self, path: str, where: str):
        self.path = path
        self.where = where
        self.env, self._key = _open_env(path, where)
        self._file = os.path.join(path, "data.mdb")
        self._need = check_lmdb_file(self._file, where)
        self.txn = self.env.begin(buffers=False)
        self.cursor = self.txn.cursor()
        if not self.cursor.first():
            self.close()
            raise DataSourceError(f"{where}: LMDB '{path}' holds no records")

    def __len__(self):
        return self.env.stat()["entries"]

    def current(self) -> tuple[bytes, bytes]:
        return self.cursor.key(), self.cursor.value()

    def next(self):
        if not self.cursor.next():
            self.cursor.first()

    def read_many(self, n: int) -> list:
        """The next ``n`` (key, value) records, wrapping to the first after the last (one call per batch)."""
        import lmdb
        check_still_whole(self._file, self._need, self.where)
        try:
            return self._read_many(n)
        except lmdb.Error as e:
            raise DataSourceError(f"{self.where}: LMDB '{self.path}' is damaged ({e})") from None

    def _read_many(self, n: int) -> list:
        out = []
        while len(out) < n:
            kv = self.current()
            out.append(kv)
            if len(out) < n:
                out.extend(self._take(n - len(out)))
            self.next()
        return out

    def _take(self, n: int) -> list:
        # the records after the current one, up to the end of the database (the cursor stays on the last taken)
        it = self.cursor.iternext(keys=True, values=True)
        next(it)  # iternext starts at the current record, already taken
        got = list(itertools.islice(it, n))
        if got:
            self.cursor.set_key(got[-1][0])
        return got

    def _release(self):
        try:
            self.txn.abort()
        except Exception:
            pass
        _ENVS.release(self._key)


def iterate_lmdb(path: str, where: str):
    """Every (key, value) of the LMDB once, in key order (Caffe's tools' cursor loop)."""
    env, key = _open_env(path, where)
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    finally:
        _ENVS.release(key)


class LMDBWriter(BatchWriter):
    """Put key/value pairs in transactions of ``commit_every``; the map size doubles when full."""

    def __init__(self, path: str, map_size: int = 1 << 26, commit_every: int = 1000):
        import lmdb
        self.refuse_existing(path)
        os.makedirs(path)
        self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False)
        self.pending: list[tuple[bytes, bytes]] = []
        self.commit_every = commit_every

    def _write(self, pairs):
        import lmdb
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in pairs:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _finish(self):
        self.env.sync()
        self.env.close()
