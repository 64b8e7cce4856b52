"""LevelDB databases of Datum records (Caffe's db_leveldb.cpp), through plyvel -- the LevelDB library itself.

Caffe's DataParameter.backend defaults to LEVELDB, so a Caffe-era prototxt without ``backend: LMDB`` reads one.
The reader cycles through the records in key order (LevelDB's bytewise comparator, as Caffe opens it) and
wraps to the first after the last, like DataLayer's cursor. A LevelDB can be opened by one process at a time
(its LOCK file), and once per process: readers of the same database share one handle, each with its own
iterator. The writer opens with Caffe's options (64 KiB blocks, a 256 MiB write buffer) and commits batches.
"""
from __future__ import annotations

import os

from ..errors import DataSourceError
from .db import BatchWriter, CyclingReader
from .shared_handles import SharedHandles

# Caffe's LevelDB::Open: block_size 65536, write_buffer_size 268435456, max_open_files 100
BLOCK_SIZE = 65536
WRITE_BUFFER_SIZE = 268435456
MAX_OPEN_FILES = 100

_DBS = SharedHandles()


def _plyvel(where: str):
    try:
        import plyvel
    except ImportError:
        raise DataSourceError(f"{where}: reading or writing a LevelDB needs the 'plyvel' package "
                              f"(pip install plyvel), or convert the data to LMDB and set 'backend: LMDB'") from None
    return plyvel


def _open_db(path: str, where: str):
    plyvel = _plyvel(where)
    if not path:
        raise DataSourceError(f"{where}: data_param.source is empty")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "CURRENT")):
        raise DataSourceError(f"{where}: '{path}' is not a LevelDB database (no {os.path.join(path, 'CURRENT')})")

    def opener():
        try:
            return plyvel.DB(path, create_if_missing=False, max_open_files=MAX_OPEN_FILES)
        except (plyvel.Error, OSError) as e:   # IOError: the LOCK is held by another process
            raise DataSourceError(f"{where}: cannot open LevelDB '{path}': {e}") from None
    return _DBS.acquire(path, opener)


class LevelDBReader(CyclingReader):
    """Records in key order, wrapping to the first after the last (DataLayer's cursor)."""

    def __init__(self, path: str, where: str):
        self.path = path
        self.where = where
        self.db, self._key = _open_db(path, where)
        self.it = self.db.raw_iterator()
        self.it.seek_to_first()
        if not self.it.valid():
            self.close()
            raise DataSourceError(f"{where}: LevelDB '{path}' holds no records")

    def current(self) -> tuple[bytes, bytes]:
        return self.it.key(), self.it.value()

    def next(self):
        self.it.next()
        if not self.it.valid():
            self.it.seek_to_first()

    def _release(self):
        self.it = None
        _DBS.release(self._key)


def iterate_leveldb(path: str, where: str):
    """Every (key, value) of the LevelDB once, in key order (Caffe's tools' cursor loop)."""
    db, key = _open_db(path, where)
    try:
        yield from db.iterator()
    finally:
        _DBS.release(key)


class LevelDBWriter(BatchWriter):
    """Puts go out in write batches of ``commit_every`` (Caffe's LevelDBTransaction)."""

    def __init__(self, path: str, commit_every: int = 1000):
        plyvel = _plyvel(f"{path}")
        self.refuse_existing(path)
        try:
            self.db = plyvel.DB(path, create_if_missing=True, error_if_exists=True, block_size=BLOCK_SIZE,
                                write_buffer_size=WRITE_BUFFER_SIZE, max_open_files=MAX_OPEN_FILES)
        except (plyvel.Error, OSError) as e:
            raise DataSourceError(f"{path}: cannot create the LevelDB: {e}") from None
        self.pending: list[tuple[bytes, bytes]] = []
        self.commit_every = commit_every

    def _write(self, pairs):
        with self.db.write_batch() as wb:
            for k, v in pairs:
                wb.put(k, v)

    def _finish(self):
        self.db.close()
