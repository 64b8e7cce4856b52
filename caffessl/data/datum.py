"""Caffe's Datum record <-> CHW arrays (raw uint8 ``data``, ``float_data``, or an ``encoded`` image)."""
from __future__ import annotations

import numpy as np

from ..errors import DataSourceError
from ..proto import caffe_pb2


def parse_datum(raw: bytes, where: str) -> caffe_pb2.Datum:
    d = caffe_pb2.Datum()
    try:
        d.ParseFromString(raw)
    except Exception as e:  # protobuf DecodeError
        raise DataSourceError(f"{where}: corrupt Datum record ({e})") from None
    return d


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
