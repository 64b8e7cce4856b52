"""Size and memory limits: what a reader may read and what a net may allocate, configured in one place.

* ``max_file_bytes()``: the largest prototxt / caffemodel / binaryproto / solverstate / .npy a reader reads
  (default 2 GB, Caffe's protobuf limit; ``$CAFFESSL_MAX_FILE_BYTES`` or ``set_limits(file_bytes=...)``).
  HDF5 files are read dataset by dataset: each declared dataset is checked against it before it is read.
* ``max_net_bytes()``: the memory a net's blobs and params may need (default half of the machine's memory;
  ``$CAFFESSL_MAX_NET_BYTES`` or ``set_limits(net_bytes=...)``), checked at set-up by ``MemoryBudget``
  before anything is allocated.

Values accept a plain byte count or a suffix: ``512M``, ``2G``, ``1.5T``.
"""
from __future__ import annotations

import math
import os

from ..errors import CaffemodelFormatError, CaffeSSLError, FileMissingError, FileTooLargeError, MemoryLimitError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_overrides: dict = {}


def parse_bytes(text: str, what: str) -> int:
    s = str(text).strip().upper().rstrip("B")
    unit = s[-1:] if s[-1:] in _SUFFIX and s[-1:] else ""
    try:
        value = float(s[:-1] if unit else s) * _SUFFIX[unit]
    except ValueError:
        raise ValueError(f"{what}: '{text}' is not a byte count (e.g. 2147483648, 512M, 2G)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what}: '{text}' must be a positive byte count")
    return int(value)


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _limit(key: str, env: str, default) -> int:
    if key in _overrides:
        return _overrides[key]
    if os.environ.get(env):
        return parse_bytes(os.environ[env], env)
    return default()


def max_file_bytes() -> int:
    return _limit("file", "CAFFESSL_MAX_FILE_BYTES", lambda: 2 << 30)


def max_net_bytes() -> int:
    return _limit("net", "CAFFESSL_MAX_NET_BYTES", lambda: _machine_memory() // 2)


def set_limits(file_bytes=None, net_bytes=None) -> None:
    """Override the limits for this process (None leaves one as it is; 0 restores the default)."""
    for key, v in (("file", file_bytes), ("net", net_bytes)):
        if v is None:
            continue
        if v == 0:
            _overrides.pop(key, None)
        else:
            _overrides[key] = parse_bytes(v, f"{key} limit") if isinstance(v, str) else int(v)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_file_size(path, what: str) -> int:
    """The size of ``path``; FileMissingError when absent, FileTooLargeError when over the limit."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such file (the {what})")
    size = os.path.getsize(path)
    limit = max_file_bytes()
    if size > limit:
        raise FileTooLargeError(f"{path}: the {what} is {fmt_bytes(size)}, over the {fmt_bytes(limit)} limit "
                                f"for files read whole (raise it with CAFFESSL_MAX_FILE_BYTES)")
    return size


def read_file(path, what: str) -> bytes:
    """The bytes of a file that is read whole, after the size check."""
    check_file_size(path, what)
    with open(os.fspath(path), "rb") as f:
        return f.read(max_file_bytes() + 1)


def check_declared(shape, itemsize: int, where: str) -> int:
    """The byte size of an array a file declares (HDF5 dataset, BlobProto shape) before it is read."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise CaffemodelFormatError(f"{where}: negative dimension in shape {tuple(dims)}")
    if math.prod(max(d, 1) for d in dims) > 1 << 48:
        raise CaffemodelFormatError(f"{where}: shape {tuple(dims)} has dimensions too large to index")
    nbytes = math.prod(dims) * int(itemsize)
    limit = max_file_bytes()
    if nbytes > limit:
        raise FileTooLargeError(f"{where}: declares shape {tuple(dims)} ({fmt_bytes(nbytes)}), over the "
                                f"{fmt_bytes(limit)} limit (CAFFESSL_MAX_FILE_BYTES)")
    return nbytes


class MemoryBudget:
    """What a net will hold, summed at set-up before allocation; refuses past ``max_net_bytes()``.

    Each top blob counts twice (data and diff), each param three times (data, diff, solver history)."""

    def __init__(self, source: str, limit: int | None = None):
        self.source = source
        self.limit = max_net_bytes() if limit is None else int(limit)
        self.total = 0
        self.items: list = []          # (bytes, "layer 'x' top 'y' (shape)")

    def charge(self, layer: str, what: str, shape, itemsize: int = 4, copies: int = 2) -> None:
        dims = tuple(int(d) for d in shape)
        nbytes = math.prod(dims) * itemsize * copies
        self.total += nbytes
        self.items.append((nbytes, f"layer '{layer}' {what} {dims}"))
        if self.total > self.limit:
            big = sorted(self.items, key=lambda t: -t[0])[:3]
            named = "; ".join(f"{d} = {fmt_bytes(n)}" for n, d in big)
            raise MemoryLimitError(
                f"{self.source}: the net would need {fmt_bytes(self.total)} for its blobs and params, over the "
                f"{fmt_bytes(self.limit)} limit (largest: {named}); reduce the shapes or raise "
                f"CAFFESSL_MAX_NET_BYTES")


def load_npy(path, what: str):
    """A plain (no pickles) .npy array: the header's shape and dtype are checked before the data is read."""
    import numpy as np
    check_file_size(path, what)
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise CaffemodelFormatError(f"{path}: .npy format version {version} is not one numpy writes")
            if version == (1, 0):
                shape, _order, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _order, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype.hasobject or dtype.kind not in "fiub":
                raise CaffemodelFormatError(f"{path}: the {what} holds {dtype} values, expected numbers")
            check_declared(shape, dtype.itemsize, f"{path}")
            return np.load(path, allow_pickle=False)
    except CaffeSSLError:
        raise
    except Exception as e:  # the header is a Python literal: numpy's parser raises whatever tokenize/ast raise
        raise CaffemodelFormatError(f"{path}: not a plain .npy array ({type(e).__name__}: {e})") from None
