"""Caffe's db::GetDB: a DataParameter.DB backend (or a converter's --backend name) -> reader / writer, and
what the LMDB and LevelDB readers and writers share."""
from __future__ import annotations

import os

from ..errors import DataSourceError
from ..proto import caffe_pb2


class CyclingReader:
    """Records in key order, wrapping to the first after the last (DataLayer's cursor). A backend gives
    ``current()``, ``next()`` and ``_release()``, and may give a faster ``read_many``."""

    path: str
    _closed = False

    def current(self) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def next(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def read(self) -> tuple[bytes, bytes]:
        kv = self.current()
        self.next()
        return kv

    def read_many(self, n: int) -> list:
        """The next ``n`` (key, value) records, wrapping to the first after the last (one call per batch)."""
        return [self.read() for _ in range(n)]

    def skip(self, n: int) -> None:
        """Advance ``n`` records (DataLayer's rand_skip). The cursor cycles, so after one full turn the rest is
        taken modulo the number of records: a skip of 2^31 costs at most two passes over the database."""
        first = self.current()[0]
        for done in range(1, n + 1):
            self.next()
            if self.current()[0] == first:      # one full turn: ``done`` records in the database
                for _ in range((n - done) % done):
                    self.next()
                return

    def close(self):
        if not self._closed:
            self._closed = True
            self._release()


class BatchWriter:
    """A new database (Caffe's converters refuse to overwrite one); puts are committed ``commit_every`` at a
    time (Caffe's transactions). A backend gives ``_write(pairs)`` and ``_finish()``."""

    commit_every = 1000

    @staticmethod
    def refuse_existing(path: str) -> None:
        if os.path.exists(path):
            raise DataSourceError(f"{path}: already exists (Caffe's converters refuse to overwrite a database)")

    def put(self, key: bytes, value: bytes):
        self.pending.append((key, value))
        if len(self.pending) >= self.commit_every:
            self.commit()

    def commit(self):
        if self.pending:
            self._write(self.pending)
        self.pending = []

    def close(self):
        self.commit()
        self._finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

_NAMES = {"lmdb": caffe_pb2.DataParameter.LMDB, "leveldb": caffe_pb2.DataParameter.LEVELDB}


def backend_of(name_or_enum) -> int:
    """'lmdb' / 'leveldb' (any case) or the DataParameter.DB value -> the DataParameter.DB value."""
    if isinstance(name_or_enum, str):
        try:
            return _NAMES[name_or_enum.lower()]
        except KeyError:
            raise ValueError(f"unknown database backend '{name_or_enum}' (lmdb or leveldb)") from None
    return int(name_or_enum)


def open_reader(backend, path: str, where: str):
    """A cycling reader of ``path`` (``current``/``next``/``read``/``read_many``/``close``)."""
    if backend_of(backend) == caffe_pb2.DataParameter.LMDB:
        from .lmdb_source import LMDBReader
        return LMDBReader(path, where)
    from .leveldb_source import LevelDBReader
    return LevelDBReader(path, where)


def open_writer(backend, path: str):
    """A new database at ``path`` (``put``/``close``, a context manager)."""
    if backend_of(backend) == caffe_pb2.DataParameter.LMDB:
        from .lmdb_source import LMDBWriter
        return LMDBWriter(path)
    from .leveldb_source import LevelDBWriter
    return LevelDBWriter(path)


def iterate(backend, path: str, where: str):
    """Every (key, value) record of ``path`` once, in key order."""
    if backend_of(backend) == caffe_pb2.DataParameter.LMDB:
        from .lmdb_source import iterate_lmdb
        return iterate_lmdb(path, where)
    from .leveldb_source import iterate_leveldb
    return iterate_leveldb(path, where)
