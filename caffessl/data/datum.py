"""Caffe's Datum record <-> CHW arrays (raw uint8 ``data``, ``float_data``, or an ``encoded`` image)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataSourceError
from ..io.wire import decode
from ..proto import caffe_pb2


def parse_datum(raw: bytes, where: str) -> caffe_pb2.Datum:
    return decode(caffe_pb2.Datum(), raw, DataSourceError, f"{where}: corrupt Datum record")


def datum_to_array(d: caffe_pb2.Datum, color=None, where: str = "datum") -> np.ndarray:
    """The Datum's image as CHW: uint8 for raw/encoded data, float32 for float_data."""
    if d.encoded:
        from .image import decode_image
        return decode_image(d.data, color, where)
    c, h, w = d.channels, d.height, d.width
    if c <= 0 or h <= 0 or w <= 0:
        raise DataSourceError(f"{where}: Datum has shape channels={c} height={h} width={w}")
    n = c * h * w
    if len(d.data):
        if len(d.data) != n:
            raise DataSourceError(f"{where}: Datum holds {len(d.data)} bytes, its shape {(c, h, w)} needs {n}")
        return np.frombuffer(d.data, dtype=np.uint8).reshape(c, h, w)
    if len(d.float_data) != n:
        raise DataSourceError(f"{where}: Datum holds {len(d.float_data)} float_data values, its shape "
                              f"{(c, h, w)} needs {n}")
    return np.asarray(d.float_data, dtype=np.float32).reshape(c, h, w)


_DATUM = caffe_pb2.Datum.DESCRIPTOR.fields_by_name
F_CHANNELS, F_HEIGHT, F_WIDTH = _DATUM["channels"].number, _DATUM["height"].number, _DATUM["width"].number
F_DATA, F_LABEL, F_ENCODED = _DATUM["data"].number, _DATUM["label"].number, _DATUM["encoded"].number


def _raw_layout(raw: bytes):
    """Where a raw (not encoded) uint8 Datum keeps its pixels and its label: ((c, h, w), (start, stop) of
    the pixels, (start, stop) of the label's varint bytes or None); None for any other kind of record."""
    from ..io.wire import _spans, _Unhandled, _varint
    seen = {}
    try:
        for num, wt, start, stop in _spans(raw, 0, len(raw)):
            if num in seen or num not in (F_CHANNELS, F_HEIGHT, F_WIDTH, F_DATA, F_LABEL, F_ENCODED):
                return None  # a repeated field (the last one wins), float_data or an unknown field
            if (wt == 2) != (num == F_DATA) or (wt != 2 and wt != 0):
                return None
            seen[num] = (start, stop)
        value = {f: _varint(raw, *seen[f])[0] for f in (F_CHANNELS, F_HEIGHT, F_WIDTH, F_ENCODED) if f in seen}
    except _Unhandled:
        return None
    shape = tuple(int(value.get(f, 0)) for f in (F_CHANNELS, F_HEIGHT, F_WIDTH))
    data = seen.get(F_DATA)
    if value.get(F_ENCODED) or data is None or min(shape) <= 0 or data[1] - data[0] != math.prod(shape):
        return None
    return shape, data, seen.get(F_LABEL)


class RawDatumBatches:
    """(N, C, H, W) uint8 pixels and int64 labels of raw Datums that all have one layout (same shape, same
    bytes everywhere except the pixels and the label's value) -- the records convert_mnist_data and
    convert_imageset write -- without parsing each record: ``decode`` returns None when any record differs
    (the caller then parses them one by one). The layout is read from a batch's first record once and kept
    while the next batches' first records have the same fixed bytes."""

    def __init__(self):
        self._layout = None   # (record size, layout, [(start, stop) of the fixed bytes], those bytes)

    def _layout_for(self, first: bytes):
        size = len(first)
        if self._layout is not None and self._layout[0] == size:
            _, layout, spans, expect = self._layout
            if b"".join(first[a:b] for a, b in spans) == expect:
                return layout, spans
        layout = _raw_layout(first)
        if layout is None:
            return None
        cuts = sorted([layout[1]] + ([layout[2]] if layout[2] is not None else []))
        spans, pos = [], 0
        for a, b in cuts:
            spans.append((pos, a))
            pos = b
        spans = [(a, b) for a, b in spans + [(pos, size)] if b > a]
        self._layout = (size, layout, spans, b"".join(first[a:b] for a, b in spans))
        return layout, spans

    def decode(self, values: list):
        if not values or len(set(map(len, values))) != 1:
            return None
        found = self._layout_for(values[0])
        if found is None:
            return None
        ((c, h, w), (d0, d1), label), spans = found
        n = len(values)
        buf = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(n, -1)
        for a, b in spans:  # every record's fixed bytes equal the first record's
            if not (buf[1:, a:b] == buf[:1, a:b]).all():
                return None
        if label is None:
            labels = np.zeros(n, dtype=np.int64)
        elif label[1] - label[0] == 1:  # labels 0..127: the varint is the value
            labels = buf[:, label[0]].astype(np.int64)
            if labels.max() >= 0x80:
                return None
        else:
            lb = buf[:, label[0]:label[1]].astype(np.uint64)
            more = lb >= 0x80
            if not (more[:, :-1].all() and not more[:, -1].any()):
                return None  # a label varint of another length than the first record's
            v = np.zeros(n, dtype=np.uint64)
            for i in range(lb.shape[1]):
                v |= (lb[:, i] & np.uint64(0x7F)) << np.uint64(7 * i)
            labels = v.astype(np.uint32).view(np.int32).astype(np.int64)  # an int32, as protobuf reads it
        return buf[:, d0:d1].reshape(n, c, h, w), labels


def array_to_datum(chw: np.ndarray, label: int) -> caffe_pb2.Datum:
    """CVMatToDatum / convert_mnist_data: a raw uint8 Datum."""
    chw = np.ascontiguousarray(chw, dtype=np.uint8)
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = (int(v) for v in chw.shape)
    d.data = chw.tobytes()
    d.label = int(label)
    return d


def encoded_datum(data: bytes, label: int) -> caffe_pb2.Datum:
    d = caffe_pb2.Datum()
    d.data = data
    d.encoded = True
    d.label = int(label)
    return d
