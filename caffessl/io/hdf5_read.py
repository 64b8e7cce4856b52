"""Reading HDF5 files that may be hostile: what the caffemodel.h5 and solverstate.h5 readers accept, in one place.

Only hard links are followed (soft and external links -- and so link loops -- are refused); a dataset's
storage must be inside the file (external-storage and virtual datasets are refused); each dataset's declared
shape is checked against the size limit (``caffessl.io.limits``) before it is read, and so is the running
total of everything read from one file. Whatever the HDF5 library itself raises on a corrupt file (checksum
failure, truncated B-tree, undecodable name) becomes one CaffemodelFormatError naming the file and the object.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from ..errors import CaffemodelFormatError, CaffeSSLError, FileTooLargeError
from .limits import check_declared, fmt_bytes, max_file_bytes

# what h5py raises for a corrupt or hostile file (HDF5 error stack -> OSError/RuntimeError/KeyError/ValueError...)
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError,
              AttributeError, RecursionError, OverflowError)


class HDF5Reader:
    def __init__(self, f, path: str, what: str):
        self.file, self.path, self.what = f, path, what
        self.read_bytes = 0
        self.where = "file"

    def fail(self, msg: str):
        raise CaffemodelFormatError(f"{self.path}: {msg} (not a valid {self.what})")

    def _get(self, parent, name: str, where: str):
        import h5py
        self.where = where
        link = parent.get(name, getlink=True)
        if link is None:
            self.fail(f"{where} is missing")
        if not isinstance(link, h5py.HardLink):
            self.fail(f"{where} is a {type(link).__name__}; only objects stored in the file are read")
        return parent[name]

    def has(self, parent, name: str) -> bool:
        return parent.get(name, getlink=True) is not None

    def keys(self, group, where: str) -> list:
        self.where = where
        return list(group.keys())

    def group(self, parent, name: str, where: str):
        import h5py
        g = self._get(parent, name, where)
        if not isinstance(g, h5py.Group):
            self.fail(f"{where} is a {type(g).__name__}, expected a group")
        return g

    def dataset(self, parent, name: str, where: str):
        import h5py
        ds = self._get(parent, name, where)
        if not isinstance(ds, h5py.Dataset):
            self.fail(f"{where} is a {type(ds).__name__}, expected a dataset")
        if ds.external or ds.is_virtual:
            self.fail(f"{where} keeps its values outside the file (external or virtual storage)")
        return ds

    def array(self, parent, name: str, where: str) -> np.ndarray:
        """A numeric dataset as float32, after the shape checks."""
        ds = self.dataset(parent, name, where)
        if ds.dtype.kind not in "fiub" or ds.shape is None:
            self.fail(f"{where} holds {ds.dtype} values, expected numbers")
        nbytes = check_declared(ds.shape, 4, f"{self.path}: {where}")
        self.read_bytes += nbytes
        if self.read_bytes > max_file_bytes():
            raise FileTooLargeError(f"{self.path}: the datasets read so far need {fmt_bytes(self.read_bytes)}, "
                                    f"over the {fmt_bytes(max_file_bytes())} limit (CAFFESSL_MAX_FILE_BYTES)")
        return np.asarray(ds[()], dtype=np.float32)

    def integer(self, parent, name: str, where: str, lo: int = 0, hi: int = 2 ** 31 - 1) -> int:
        """A one-value numeric dataset holding an integer in [lo, hi] (Caffe's hdf5_load_int)."""
        ds = self.dataset(parent, name, where)
        if ds.dtype.kind not in "fiub" or ds.shape is None or math.prod(ds.shape) != 1:
            self.fail(f"{where} must hold one number, it has shape {ds.shape} of {ds.dtype}")
        v = np.asarray(ds[()]).reshape(-1)[0]
        if not np.isfinite(v) or float(v) != int(v) or not lo <= int(v) <= hi:
            self.fail(f"{where} is {v}; it must be an integer in [{lo}, {hi}]")
        return int(v)

    def string(self, parent, name: str, where: str) -> str:
        """A string dataset (Caffe's hdf5_save_string: a NUL-terminated fixed-length string)."""
        ds = self.dataset(parent, name, where)
        if ds.dtype.kind not in "SUO" or (ds.shape is not None and math.prod(ds.shape) > 1):
            self.fail(f"{where} must hold one string, it has shape {ds.shape} of {ds.dtype}")
        check_declared((ds.dtype.itemsize,), 1, f"{self.path}: {where}")
        v = ds[()]
        if isinstance(v, np.ndarray):
            v = v.reshape(-1)[0] if v.size else b""
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(f"{where} is not UTF-8 text")
        if not isinstance(v, str):
            self.fail(f"{where} must hold a string")
        return v.rstrip("\0")


@contextmanager
def open_hdf5(path: str, what: str):
    """``with open_hdf5(path, "caffemodel") as h:`` -- an HDF5Reader; every library error becomes a
    CaffemodelFormatError naming the file and the object being read."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except _H5_ERRORS as e:
        raise CaffemodelFormatError(f"{path}: unreadable HDF5 {what} ({e})") from None
    reader = HDF5Reader(f, path, what)
    try:
        yield reader
    except CaffeSSLError:
        raise
    except _H5_ERRORS as e:
        raise CaffemodelFormatError(f"{path}: corrupt HDF5 {what} at {reader.where} "
                                    f"({type(e).__name__}: {e})") from None
    finally:
        try:
            f.close()
        except _H5_ERRORS:
            pass
