"""BlobProto <-> numpy, and .binaryproto files (mean images, decay_proto blobs)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import CaffemodelFormatError, FileMissingError
from ..proto import caffe_pb2


def blob_shape(bp) -> tuple:
    """The shape of a BlobProto: ``shape.dim`` or the legacy num/channels/height/width."""
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") or bp.HasField("width"):
        return (bp.num, bp.channels, bp.height, bp.width)
    return ()  # Blob::ToProto writes no shape for a 0-axis blob (count 1)


def blobproto_to_array(bp, where: str = "blob") -> np.ndarray:
    shape = blob_shape(bp)
    if len(bp.double_data):
        arr = np.asarray(bp.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.asarray(bp.data, dtype=np.float32)
    count = int(np.prod(shape))  # 1 for a 0-axis blob
    if arr.size != count:
        raise CaffemodelFormatError(f"{where}: holds {arr.size} values but its shape {shape} needs {count}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None, legacy_shape: bool = False):
    arr = np.asarray(arr, dtype=np.float32)
    bp = caffe_pb2.BlobProto()
    if legacy_shape and arr.ndim <= 4:
        dims = (1,) * (4 - arr.ndim) + arr.shape
        bp.num, bp.channels, bp.height, bp.width = dims
    else:
        bp.shape.dim.extend(int(d) for d in arr.shape)
    bp.data.extend(arr.ravel().tolist())
    if diff is not None:
        bp.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return bp


def read_binaryproto(path) -> np.ndarray:
    """Read a binary BlobProto file (e.g. mean.binaryproto) as a float32 array of its shape."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    bp = caffe_pb2.BlobProto()
    try:
        bp.ParseFromString(raw)
    except Exception as e:  # protobuf's DecodeError and friends
        raise CaffemodelFormatError(f"{path}: not a binary BlobProto ({e})") from None
    if not (len(bp.data) or len(bp.double_data)):
        raise CaffemodelFormatError(f"{path}: not a binary BlobProto (it holds no values)")
    return blobproto_to_array(bp, path)


def write_binaryproto(path, arr) -> None:
    from .atomic import atomic_write
    atomic_write(path, array_to_blobproto(arr).SerializeToString())
