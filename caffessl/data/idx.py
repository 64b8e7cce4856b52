"""The IDX format of the MNIST files (big-endian magic, dims, then uint8 data), plain or gzipped."""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import DataSourceError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataSourceError(f"{path}: no such IDX file")
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataSourceError(f"{path}: cannot read ({e})") from None


def read_idx(path: str, magic: int) -> np.ndarray:
    """Images (magic 2051) as (N, rows, cols) uint8, labels (2049) as (N,) uint8."""
    raw = _read_bytes(path)
    ndim = 3 if magic == IMAGES_MAGIC else 1
    head = 4 * (1 + ndim)
    if len(raw) < head:
        raise DataSourceError(f"{path}: too short for an IDX header")
    vals = np.frombuffer(raw[:head], dtype=">u4")
    if int(vals[0]) != magic:
        raise DataSourceError(f"{path}: incorrect IDX magic number {int(vals[0])}, expected {magic}")
    dims = tuple(int(v) for v in vals[1:])
    n = int(np.prod(dims))
    if len(raw) - head != n:
        raise DataSourceError(f"{path}: holds {len(raw) - head} data bytes, its header {dims} needs {n}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def find_idx(directory: str, stem: str) -> str:
    """``stem`` (e.g. 'train-images-idx3-ubyte') in ``directory``, plain or .gz (also the 'train-images.idx3-ubyte'
    spelling some mirrors use)."""
    cands = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for c in cands:
        p = os.path.join(directory, c)
        if os.path.isfile(p):
            return p
    raise DataSourceError(f"{directory}: no MNIST file {stem}[.gz]")
