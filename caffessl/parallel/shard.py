"""Data sharding: Caffe 1.0's DataLayer skip rule. In a world of N ranks the training records form one
stream (the source's order, wrapping around); rank r keeps the records at positions r, r+N, r+2N, ... and
skips the others (``offset_ % solver_count == solver_rank``), so one round of N batches covers N x batch_size
consecutive records, exactly what one process with an N times larger batch reads. TEST-phase nets run on
rank 0 only and are never sharded (Caffe: "In test mode, only rank 0 runs, so avoid skipping").

The wrappers work on the stream's units without decoding the skipped ones: database records (LMDB, LevelDB),
HDF5 rows; image lists step their position (caffessl/data/loaders.py takes ``offset``/``stride``).
"""
from __future__ import annotations

import numpy as np

from . import group


def shard_of(phase) -> tuple[int, int]:
    """(rank, number of ranks) whose share a data layer of ``phase`` reads: (0, 1) outside a process group
    and for TEST nets."""
    from ..proto import caffe_pb2
    if phase != caffe_pb2.TRAIN or not group.is_initialized():
        return 0, 1
    return group.rank(), group.size()


class ShardedReader:
    """A cycling database reader (caffessl/data/db.py's interface) that yields every ``size``-th record,
    starting at the ``rank``-th one after the reader's current position."""

    def __init__(self, reader, rank: int, size: int):
        self.reader, self.size = reader, int(size)
        for _ in range(int(rank)):
            reader.next()

    @property
    def path(self):
        return self.reader.path

    def current(self):
        return self.reader.current()

    def next(self):
        for _ in range(self.size):
            self.reader.next()

    def read(self):
        kv = self.current()
        self.next()
        return kv

    def read_many(self, n: int) -> list:
        # one bulk read of the n strides; the cursor ends on this rank's next record
        return self.reader.read_many(n * self.size)[::self.size]

    def close(self):
        self.reader.close()


class ShardedRows:
    """HDF5Data's row source (caffessl/data/hdf5_source.py) reduced to every ``size``-th row from ``rank``."""

    def __init__(self, source, rank: int, size: int):
        self.source, self.size = source, int(size)
        if rank:
            source.next_batch(int(rank))

    @property
    def row_shapes(self):
        return self.source.row_shapes

    def next_batch(self, batch_size: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(a[::self.size]) for a in self.source.next_batch(batch_size * self.size)]


def shard_reader(reader, phase):
    rank, size = shard_of(phase)
    return reader if size == 1 else ShardedReader(reader, rank, size)


def shard_rows(source, phase):
    rank, size = shard_of(phase)
    return source if size == 1 else ShardedRows(source, rank, size)
