"""Batch loaders run by the prefetch thread: each call returns one batch as a list of CPU tensors.

They hold the source, the transformer and its random stream, never the layer (so the layer can be collected
and its finalizer can stop the thread). Per-record work (parsing, decoding) is a loop over the batch's
records; everything per pixel is vectorized over the batch in DataTransformer.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataSourceError
from ..io.wire import decode
from ..proto import caffe_pb2
from .datum import RawDatumBatches, datum_to_array, parse_datum


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

    def __init__(self, reader, transformer, batch_size: int, color, output_labels: bool, where: str,
                 record_shape=None):
        self.reader, self.transformer = reader, transformer
        self.record_shape = tuple(record_shape) if record_shape is not None else None  # fixed by the first
        self.batch_size, self.color, self.output_labels = batch_size, color, output_labels
        self.where = where
        self._raw = RawDatumBatches()

    def close(self):
        self.reader.close()

    def _at(self, key):
        return f"{self.where}: record {key.decode('utf-8', 'replace')!r} of '{self.reader.path}'"

    def __call__(self):
        records = self.reader.read_many(self.batch_size)
        fast = self._raw.decode([val for _key, val in records])
        if fast is not None:  # the common case (convert_mnist, convert_imageset without --encoded): no parsing
            batch, labels = fast
            return self._out(batch, labels)
        datums = [_parse_or_none(val) for _key, val in records]
        labels = [0] * len(records)
        raw = _raw_uint8_batch(datums)
        if raw is not None:  # raw records of one shape but different layouts: one copy
            batch = raw
            labels = [d.label for d in datums]
        else:
            items = []
            for i, ((key, val), d) in enumerate(zip(records, datums)):
                at = self._at(key)
                d = d if d is not None else parse_datum(val, at)  # raises the typed error with the record
                items.append(datum_to_array(d, self.color, at))
                labels[i] = d.label
            batch = _stack(items, self.where, "record")
        return self._out(batch, labels)

    def _out(self, batch, labels):
        if self.record_shape is None:
            self.record_shape = tuple(batch.shape[1:])
        elif tuple(batch.shape[1:]) != self.record_shape:
            raise DataSourceError(f"{self.where}: a batch of '{self.reader.path}' holds records of shape "
                                  f"{tuple(batch.shape[1:])}, the first record's is {self.record_shape} (every "
                                  f"record of a Data source must have one shape)")
        out = [torch.from_numpy(self.transformer.transform(batch))]
        if self.output_labels:
            out.append(torch.from_numpy(np.asarray(labels, dtype=np.float32)))
        return out


def _parse_or_none(raw: bytes):
    return decode(caffe_pb2.Datum(), raw)   # None: reported with the record's name by the slow path


def _raw_uint8_batch(datums):
    """(N, C, H, W) uint8 from raw (not encoded) Datums of one shape with complete ``data``; else None."""
    if not datums or any(d is None for d in datums):
        return None
    d0 = datums[0]
    c, h, w = d0.channels, d0.height, d0.width
    if min(c, h, w) <= 0:   # negative dims can multiply to a valid size: the slow path names the record
        return None
    n = c * h * w
    for d in datums:
        if d.encoded or d.channels != c or d.height != h or d.width != w or len(d.data) != n:
            return None
    return np.frombuffer(b"".join([d.data for d in datums]), dtype=np.uint8).reshape(len(datums), c, h, w)


class ImageListBatchLoader:
    """ImageData: images of a "path label" list read in order (reshuffled at every wrap when shuffling).
    Data-parallel: of the stream of lines, this rank reads the ``offset``-th and every ``stride``-th after it
    (the skipped lines are not read)."""

    def __init__(self, lines, root: str, height: int, width: int, is_color: bool, shuffle: bool, rng,
                 transformer, batch_size: int, start: int, where: str, offset: int = 0, stride: int = 1):
        self.lines, self.root = lines, root
        self.height, self.width, self.is_color = height, width, is_color
        self.shuffle, self.rng = shuffle, rng
        self.transformer, self.batch_size = transformer, batch_size
        self.pos, self.where = start, where
        self.stride = int(stride)
        self._advance(int(offset))

    def _advance(self, n: int):
        for _ in range(n):
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if self.shuffle:
                    self.rng.shuffle(self.lines)

    def __call__(self):
        from .image import read_image
        items, labels = [], []
        for _ in range(self.batch_size):
            path, label = self.lines[self.pos]
            items.append(read_image(self.root + path, self.height, self.width, self.is_color, self.where))
            labels.append(label)
            self._advance(self.stride)
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
