"""BlobProto <-> numpy, and .binaryproto files (mean images, decay_proto blobs); pycaffe's io.py protobuf
helpers (BlobProto, BlobProtoVector and Datum <-> numpy), which ``caffessl.io`` exports under pycaffe's names."""
from __future__ import annotations

import math
import operator
import os

import numpy as np

from ..errors import ArrayShapeError, CaffemodelFormatError
from ..proto import caffe_pb2
from .files import read_bytes
from .wire import decode


def blob_shape(bp) -> tuple:
    """The shape of a BlobProto: ``shape.dim`` or the legacy num/channels/height/width."""
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") or bp.HasField("width"):
        return (bp.num, bp.channels, bp.height, bp.width)
    return ()  # Blob::ToProto writes no shape for a 0-axis blob (count 1)


def blobproto_to_array(bp, where: str = "blob") -> np.ndarray:
    shape = blob_shape(bp)
    from .limits import check_declared
    check_declared(shape, 4, where)
    if len(bp.double_data):
        arr = np.asarray(bp.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.asarray(bp.data, dtype=np.float32)
    count = operator.index(math.prod(shape))  # 1 for a 0-axis blob; exact (no int64 wrap-around)
    if arr.size != count:
        raise CaffemodelFormatError(f"{where}: holds {arr.size} values but its shape {shape} needs {count}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None, legacy_shape: bool = False):
    """pycaffe's array_to_blobproto: ``shape.dim`` (or, with legacy_shape, num/channels/height/width) and
    the values flattened in C order into ``data``; ``diff``, when given, must have the array's shape."""
    arr = np.asarray(arr, dtype=np.float32)
    if diff is not None:
        diff = np.asarray(diff, dtype=np.float32)
        if diff.shape != arr.shape:
            raise ArrayShapeError(f"array_to_blobproto: diff has shape {diff.shape}, data has {arr.shape}")
    bp = caffe_pb2.BlobProto()
    if legacy_shape and arr.ndim <= 4:
        dims = (1,) * (4 - arr.ndim) + arr.shape
        bp.num, bp.channels, bp.height, bp.width = dims
    else:
        bp.shape.dim.extend(int(d) for d in arr.shape)
    bp.data.extend(arr.ravel().tolist())
    if diff is not None:
        bp.diff.extend(diff.ravel().tolist())
    return bp


def read_binaryproto(path) -> np.ndarray:
    """Read a binary BlobProto file (e.g. mean.binaryproto) as a float32 array of its shape."""
    path = os.fspath(path)
    raw = read_bytes(path, "binaryproto")
    bp = decode(caffe_pb2.BlobProto(), raw, CaffemodelFormatError, f"{path}: not a binary BlobProto")
    if not (len(bp.data) or len(bp.double_data)):
        raise CaffemodelFormatError(f"{path}: not a binary BlobProto (it holds no values)")
    return blobproto_to_array(bp, path)


def write_binaryproto(path, arr) -> None:
    from .atomic import atomic_write
    atomic_write(path, array_to_blobproto(arr).SerializeToString())


# ---- pycaffe's python/caffe/io.py protobuf helpers (float64 results, as pycaffe's np.array of a repeated
# float field); the functions above are caffessl's own float32 readers, which name the place in errors.

def pycaffe_blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """pycaffe's blobproto_to_array: ``data`` (``diff`` with return_diff) as float64, shaped like
    Blob::FromProto does -- num/channels/height/width when any legacy field is set, else ``shape.dim``.
    A blob that keeps its values only in double_data/double_diff is read from there."""
    if isinstance(return_diff, str):  # caffessl's internal blobproto_to_array(bp, where) signature
        raise TypeError("caffe.io.blobproto_to_array(blob, return_diff=False) follows pycaffe; for the "
                        "(bp, where) form use caffessl.io.blobproto.blobproto_to_array")
    values, doubles = (blob.diff, blob.double_diff) if return_diff else (blob.data, blob.double_data)
    data = np.array(values if len(values) or not len(doubles) else doubles, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(int(d) for d in blob.shape.dim)
    if data.size != int(np.prod(shape)):
        field = "diff" if return_diff else "data"
        raise ArrayShapeError(f"blobproto_to_array: the blob's {field} holds {data.size} values but its "
                              f"shape {shape} needs {int(np.prod(shape))}")
    return data.reshape(shape)


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """pycaffe: a serialized BlobProtoVector holding one BlobProto per array."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s: bytes) -> list:
    """pycaffe: the arrays (float64) of a serialized BlobProtoVector."""
    vec = decode(caffe_pb2.BlobProtoVector(), s, CaffemodelFormatError,
                 "blobprotovector_str_to_arraylist: not a BlobProtoVector")
    return [pycaffe_blobproto_to_array(b) for b in vec.blobs]


def pycaffe_array_to_datum(arr, label=None):
    """pycaffe's array_to_datum: a (C, H, W) array; uint8 goes into ``data`` as bytes, any other dtype into
    ``float_data``; the label is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ArrayShapeError(f"array_to_datum: needs a 3-D (channels, height, width) array, got shape "
                              f"{arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(v) for v in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes(order="C")
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = operator.index(label)
    return datum


def pycaffe_datum_to_array(datum) -> np.ndarray:
    """pycaffe's datum_to_array: uint8 from ``data`` when it holds bytes, else float64 from
    ``float_data``, shaped (channels, height, width)."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        arr = np.array(datum.float_data, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        field = "data" if len(datum.data) else "float_data"
        raise ArrayShapeError(f"datum_to_array: the Datum's {field} holds {arr.size} values but its shape "
                              f"{shape} needs {int(np.prod(shape))}")
    return arr.reshape(shape)
