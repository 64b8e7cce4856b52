"""HDF5Data's source: a text file listing .h5 files, read row by row as Caffe's HDF5DataLayer does.

Caffe (hdf5_data_layer.cpp): the list is read with ``source_file >> line`` (whitespace-separated names,
relative to the CWD); every dataset named by a top is loaded whole as float; with ``shuffle`` the file order
is permuted at set-up and at every wrap, and the row order of a file each time it is loaded / wrapped.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataSourceError


def read_file_list(source: str, where: str) -> list[str]:
    if not source:
        raise DataSourceError(f"{where}: hdf5_data_param.source is empty")
    if not os.path.isfile(source):
        raise DataSourceError(f"{where}: failed to open source file '{source}' (cwd {os.getcwd()})")
    with open(source, "r") as f:
        names = f.read().split()
    if not names:
        raise DataSourceError(f"{where}: must have at least 1 HDF5 filename listed in '{source}'")
    return names


def load_h5_datasets(path: str, names: list[str], where: str) -> list[np.ndarray]:
    import h5py
    if not os.path.isfile(path):
        raise DataSourceError(f"{where}: failed opening HDF5 file '{path}'")
    try:
        with h5py.File(path, "r") as f:
            arrays = []
            for n in names:
                if n not in f:
                    raise DataSourceError(f"{where}: HDF5 file '{path}' has no dataset '{n}' "
                                          f"(has: {', '.join(sorted(f.keys()))})")
                ds = f[n]
                if not isinstance(ds, h5py.Dataset):
                    raise DataSourceError(f"{where}: '{n}' in HDF5 file '{path}' is not a dataset")
                a = np.asarray(ds[()], dtype=np.float32)
                if a.ndim < 1:
                    raise DataSourceError(f"{where}: dataset '{n}' in '{path}' must have at least 1 axis")
                arrays.append(np.ascontiguousarray(a))
    except OSError as e:
        raise DataSourceError(f"{where}: cannot read HDF5 file '{path}': {e}") from None
    num = arrays[0].shape[0]
    for n, a in zip(names, arrays):
        if a.shape[0] != num:
            raise DataSourceError(f"{where}: datasets of '{path}' differ in row count: '{names[0]}' has {num}, "
                                  f"'{n}' has {a.shape[0]}")
    if num == 0:
        raise DataSourceError(f"{where}: HDF5 file '{path}' holds 0 rows")
    return arrays


class HDF5Source:
    """Consecutive rows across the listed files, wrapping around; ``next_batch(n)`` -> one array per top."""

    def __init__(self, source: str, tops: list[str], shuffle: bool, rng: np.random.RandomState, where: str):
        self.where = where
        self.tops = list(tops)
        self.shuffle = bool(shuffle)
        self.rng = rng
        self.files = read_file_list(source, where)
        self.file_perm = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_perm)
        self.current_file = 0
        self._load(self.files[self.file_perm[0]])
        self.current_row = 0

    def _load(self, path):
        self.arrays = load_h5_datasets(path, self.tops, self.where)
        self.row_perm = np.arange(self.arrays[0].shape[0])
        if self.shuffle:
            self.rng.shuffle(self.row_perm)

    @property
    def row_shapes(self) -> list[tuple]:
        return [tuple(a.shape[1:]) for a in self.arrays]

    def _advance_file(self):
        """Caffe's Next() at the end of a file: next file (reshuffle at wrap), reshuffle the rows."""
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_perm)
            self._load(self.files[self.file_perm[self.current_file]])
            shapes = self.row_shapes
            if shapes != self._first_shapes:
                raise DataSourceError(f"{self.where}: file '{self.files[self.file_perm[self.current_file]]}' "
                                      f"has row shapes {shapes}, the first file {self._first_shapes}")
        self.current_row = 0
        if self.shuffle:
            self.rng.shuffle(self.row_perm)

    def next_batch(self, batch_size: int) -> list[np.ndarray]:
        if not hasattr(self, "_first_shapes"):
            self._first_shapes = self.row_shapes
        out = [np.empty((batch_size,) + s, dtype=np.float32) for s in self._first_shapes]
        i = 0
        while i < batch_size:
            num = self.arrays[0].shape[0]
            take = min(batch_size - i, num - self.current_row)
            rows = self.row_perm[self.current_row:self.current_row + take]
            for o, a in zip(out, self.arrays):
                if self.shuffle:
                    o[i:i + take] = a[rows]
                else:  # identity permutation: a contiguous slice
                    o[i:i + take] = a[self.current_row:self.current_row + take]
            i += take
            self.current_row += take
            if self.current_row == num:
                self._advance_file()
        return out
