"""Caffe's db::GetDB: a DataParameter.DB backend (or a converter's --backend name) -> reader / writer."""
from __future__ import annotations

from ..proto import caffe_pb2

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
