"""Batch loaders run by the prefetch thread: each call returns one batch as a list of CPU tensors.

They hold the source, the transformer and its random stream, never the layer (so the layer can be collected
and its finalizer can stop the thread). Per-record work (parsing, decoding) is a loop over the batch's
records; everything per pixel is vectorized over the batch in DataTransformer.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataSourceError
from .datum import datum_to_array, parse_datum


def _stack(items, where, what):
    s0 = items[0].shape
    for i, a in enumerate(items):
        if a.shape != s0:
            raise DataSourceError(f"{where}: {what} {i} of a batch has shape {a.shape}, the first {s0} "
                                  f"(items of one batch must have the same shape)")
    if all(a.dtype == np.uint8 for a in items):
        return np.stack(items)
    return np.stack([a.astype(np.float32, copy=False) for a in items])


class DatumBatchLoader:
    """Data layer: ``batch_size`` consecutive Datum records of an LMDB, transformed; labels as float."""

    def __init__(self, reader, transformer, batch_size: int, color, output_labels: bool, where: str):
        self.reader, self.transformer = reader, transformer
        self.batch_size, self.color, self.output_labels = batch_size, color, output_labels
        self.where = where

    def close(self):
        self.reader.close()

    def __call__(self):
        items, labels = [], []
        for _ in range(self.batch_size):
            key, val = self.reader.read()
            at = f"{self.where}: record {key.decode('utf-8', 'replace')!r} of '{self.reader.path}'"
            d = parse_datum(val, at)
            items.append(datum_to_array(d, self.color, at))
            labels.append(d.label)
        out = [torch.from_numpy(self.transformer.transform(_stack(items, self.where, "record")))]
        if self.output_labels:
            out.append(torch.from_numpy(np.asarray(labels, dtype=np.float32)))
        return out


class ImageListBatchLoader:
    """ImageData: images of a "path label" list read in order (reshuffled at every wrap when shuffling)."""

    def __init__(self, lines, root: str, height: int, width: int, is_color: bool, shuffle: bool, rng,
                 transformer, batch_size: int, start: int, where: str):
        self.lines, self.root = lines, root
        self.height, self.width, self.is_color = height, width, is_color
        self.shuffle, self.rng = shuffle, rng
        self.transformer, self.batch_size = transformer, batch_size
        self.pos, self.where = start, where

    def __call__(self):
        from .image import read_image
        items, labels = [], []
        for _ in range(self.batch_size):
            path, label = self.lines[self.pos]
            items.append(read_image(self.root + path, self.height, self.width, self.is_color, self.where))
            labels.append(label)
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if self.shuffle:
                    self.rng.shuffle(self.lines)
        data = self.transformer.transform(_stack(items, self.where, "image"))
        return [torch.from_numpy(data), torch.from_numpy(np.asarray(labels, dtype=np.float32))]


def read_image_list(source: str, where: str) -> list[tuple[str, int]]:
    """ImageDataLayer's list: per line, the path, the last space, an integer label."""
    import os
    if not source or not os.path.isfile(source):
        raise DataSourceError(f"{where}: cannot open image list '{source}' (cwd {os.getcwd()})")
    lines = []
    with open(source, "r") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            path, sep, lab = line.rpartition(" ")
            try:
                if not sep or not path:
                    raise ValueError
                lines.append((path, int(lab)))
            except ValueError:
                raise DataSourceError(f"{where}: {source}:{n}: expected 'path label', got {line!r}") from None
    if not lines:
        raise DataSourceError(f"{where}: image list '{source}' is empty")
    return lines
