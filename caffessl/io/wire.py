"""A small protobuf wire-format walker for the hot path of weight loading and saving.

``read_layer_blobs(raw)`` walks NetParameter -> LayerParameter (``layer``, field 100) -> BlobProto (``blobs``,
field 7) and returns each packed float ``data`` field as a zero-copy numpy view of ``raw``. It returns None for
anything it does not handle (V0/V1 ``layers``, ``double_data``, unpacked floats, groups, a data field split in
several chunks, any malformed or truncated bytes), and the caller falls back to protobuf, which then produces
the error message. Field numbers come from proto/caffe.proto.
"""
from __future__ import annotations

import math

import numpy as np

from ..proto import caffe_pb2

_NET = caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
_LAYER = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
_BLOB = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
F_NET_LAYER, F_NET_LAYERS = _NET["layer"].number, _NET["layers"].number
F_LAYER_NAME, F_LAYER_TYPE, F_LAYER_BLOBS = _LAYER["name"].number, _LAYER["type"].number, _LAYER["blobs"].number
F_BLOB_DATA, F_BLOB_SHAPE, F_BLOB_DIFF = _BLOB["data"].number, _BLOB["shape"].number, _BLOB["diff"].number
F_BLOB_DOUBLE = _BLOB["double_data"].number
F_BLOB_LEGACY = {_BLOB[n].number: i for i, n in enumerate(("num", "channels", "height", "width"))}
F_SHAPE_DIM = caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].number


def decode(message, raw, error=None, what: str = ""):
    """``message`` parsed from the binary protobuf ``raw`` and returned. A malformed ``raw`` (protobuf's
    DecodeError and friends) raises ``error(f"{what} ({reason})")`` -- a caffessl.errors class -- or, with
    ``error=None``, returns None."""
    try:
        message.ParseFromString(raw)
    except Exception as e:  # protobuf's DecodeError, or RuntimeError/ValueError from some backends
        if error is None:
            return None
        raise error(f"{what} ({type(e).__name__}: {e})") from None
    return message


class _Unhandled(Exception):
    pass


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Unhandled
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _spans(buf, pos, end):
    """Yield (field number, wire type, start, stop) of each field's value bytes in buf[pos:end]."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if wt == 0:
            stop = _varint(buf, pos, end)[1]
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            stop = pos + n
        elif wt == 5:
            stop = pos + 4
        elif wt == 1:
            stop = pos + 8
        else:  # groups (3, 4) and invalid wire types
            raise _Unhandled
        if stop > end:
            raise _Unhandled
        yield num, wt, pos, stop
        pos = stop


def _fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop)) over buf[pos:end]."""
    for num, wt, start, stop in _spans(buf, pos, end):
        yield num, wt, (_varint(buf, start, stop)[0] if wt == 0 else (start, stop))


def _int32(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _blob(buf, pos, end, where):
    data = None
    dims = None
    legacy = [None, None, None, None]
    for num, wt, val in _fields(buf, pos, end):
        if num == F_BLOB_DATA:
            if wt != 2 or data is not None or (val[1] - val[0]) % 4:
                raise _Unhandled
            data = np.frombuffer(buf, dtype="<f4", count=(val[1] - val[0]) // 4, offset=val[0])
        elif num == F_BLOB_DOUBLE:
            raise _Unhandled
        elif num == F_BLOB_SHAPE and wt == 2:
            dims = []
            for n2, w2, v2 in _fields(buf, val[0], val[1]):
                if n2 != F_SHAPE_DIM:
                    continue
                if w2 == 0:
                    dims.append(_int32(v2))
                elif w2 == 2:
                    p, e = v2
                    while p < e:
                        d, p = _varint(buf, p, e)
                        dims.append(_int32(d))
                else:
                    raise _Unhandled
        elif num in F_BLOB_LEGACY and wt == 0:
            legacy[F_BLOB_LEGACY[num]] = _int32(val)
    if data is None:
        data = np.zeros(0, dtype="<f4")
    if dims is not None:
        shape = tuple(dims)
    elif any(v is not None for v in legacy):
        shape = tuple(1 if v is None else v for v in legacy)  # the schema's defaults are 1
    else:
        shape = ()  # Caffe writes a 0-axis blob (e.g. a shared PReLU slope) with no shape at all
    count = math.prod(shape)  # 1 for a 0-axis blob (exact: no int64 wrap-around)
    if count != data.size or any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) > 1 << 48:
        raise _Unhandled   # protobuf path reports it with the blob's place
    return data.reshape(shape)


def read_layer_blobs(raw, where="<caffemodel>"):
    """[(layer name, type, [float32 arrays])] of a V2 binary NetParameter, or None to fall back."""
    buf = raw if isinstance(raw, (bytes, bytearray)) else bytes(raw)
    out = []
    try:
        for num, wt, val in _fields(buf, 0, len(buf)):
            if num == F_NET_LAYERS:
                return None  # legacy V0/V1 layers: protobuf + upgrade
            if num != F_NET_LAYER:
                continue
            if wt != 2:
                return None
            name, ltype, arrays = "", "", []
            for n2, w2, v2 in _fields(buf, val[0], val[1]):
                if w2 != 2:
                    continue
                if n2 == F_LAYER_NAME:
                    name = bytes(buf[v2[0]:v2[1]]).decode("utf-8")
                elif n2 == F_LAYER_TYPE:
                    ltype = bytes(buf[v2[0]:v2[1]]).decode("utf-8")
                elif n2 == F_LAYER_BLOBS:
                    arrays.append(_blob(buf, v2[0], v2[1], where))
            out.append((name, ltype, arrays))
    except (_Unhandled, UnicodeDecodeError):
        return None
    return out or None


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_field(num: int, payload: bytes | None, length: int | None = None) -> bytes:
    """Tag + length (+ payload) of a length-delimited field; ``payload=None`` gives only the header."""
    n = len(payload) if payload is not None else length
    head = _encode_varint(num << 3 | 2) + _encode_varint(n)
    return head if payload is None else head + payload


def encode_blobproto(arr, diff=None) -> bytes:
    """A BlobProto with ``shape`` and packed float ``data`` (the layout Caffe's Blob::ToProto writes), and
    packed ``diff`` when given (ToProto with write_diff: snapshot_diff)."""
    a = np.ascontiguousarray(arr, dtype="<f4")
    shape = caffe_pb2.BlobShape()
    shape.dim.extend(int(d) for d in a.shape)
    out = encode_field(F_BLOB_DATA, a.tobytes())
    if diff is not None:
        out += encode_field(F_BLOB_DIFF, np.ascontiguousarray(diff, dtype="<f4").reshape(a.shape).tobytes())
    return out + encode_field(F_BLOB_SHAPE, shape.SerializeToString())
