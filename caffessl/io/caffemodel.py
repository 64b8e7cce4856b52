"""Reading and writing trained weights: binary NetParameter (.caffemodel) and HDF5 (.caffemodel.h5).

``read_weights(path)`` returns a list of ``(layer_name, layer_type, [arrays])`` in file order, after the
legacy upgrade (V0/V1 layers), whatever the file format. Writing mirrors Caffe's Net::ToProto / ToHDF5.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import CaffemodelFormatError
from ..proto import caffe_pb2
from .blobproto import blobproto_to_array
from .files import existing_file, read_bytes
from .limits import check_file_size
from .upgrade import upgrade_net_as_needed
from .wire import decode

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:4096]
    try:
        txt = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(k in txt for k in ("layer", "name:", "input", "net:", "base_lr"))


def read_net_binary(path) -> "caffe_pb2.NetParameter":
    """Parse a binary caffemodel into an (upgraded) NetParameter, with clear errors."""
    path = os.fspath(path)
    raw = read_bytes(path, "caffemodel")
    if not raw:
        raise CaffemodelFormatError(f"{path}: empty file, not a caffemodel")
    net = decode(caffe_pb2.NetParameter(), raw)
    if net is None:
        if _looks_like_text(raw):
            raise CaffemodelFormatError(
                f"{path}: this is a text prototxt, not a binary caffemodel (pass it as the model, "
                f"not the weights)")
        decode(caffe_pb2.NetParameter(), raw, CaffemodelFormatError, f"{path}: not a caffemodel, or truncated")
    if not len(net.layer) and not len(net.layers):
        raise CaffemodelFormatError(f"{path}: not a caffemodel (no layers in it)")
    return upgrade_net_as_needed(net, path)


def _read_hdf5(path):
    from .hdf5_read import open_hdf5
    out = []
    with open_hdf5(path, "caffemodel.h5") as h:
        data = h.group(h.file, "data", "group 'data'")
        for lname in h.keys(data, "group 'data'"):  # h5py keeps creation order when the file tracks it
            g = h.group(data, lname, f"layer '{lname}'")
            n = len(h.keys(g, f"layer '{lname}'"))
            out.append((lname, None, [h.array(g, str(i), f"layer '{lname}' blob {i}") for i in range(n)]))
    return out


def read_weights(path):
    """[(layer_name, layer_type or None, [np arrays])] from a binary or HDF5 caffemodel.

    Binary files take the fast path (``wire.read_layer_blobs``: float data are zero-copy views of the file's
    bytes); anything it does not handle (V0/V1 ``layers``, double_data, unpacked floats) or a malformed file
    goes through protobuf, which also produces the error messages.
    """
    path = existing_file(path)
    if is_hdf5(path):
        return _read_hdf5(path)
    check_file_size(path, "caffemodel")
    from .wire import read_layer_blobs
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = bytearray(size)
        got = f.readinto(raw)
    if got == size and size:
        fast = read_layer_blobs(raw, path)
        if fast is not None:
            return fast
    del raw
    net = read_net_binary(path)
    return [(lp.name, lp.type,
             [blobproto_to_array(b, f"{path}: layer '{lp.name}' blob {i}") for i, b in enumerate(lp.blobs)])
            for lp in net.layer]


def weights_format(path) -> str:
    return "hdf5" if is_hdf5(path) else "binary"


def write_caffemodel(path, net_param, layer_blobs: dict, layer_diffs: dict | None = None) -> None:
    """Write ``net_param`` (its layers) with ``layer_blobs[name] = [arrays]`` as a binary caffemodel, and each
    blob's ``diff`` from ``layer_diffs[name]`` when given (Caffe's snapshot_diff). Either may also be a list
    with one entry per layer of ``net_param`` (a net whose layer names repeat, as Caffe allows).

    Layers are serialised by protobuf without their blobs; each blob is appended as raw bytes (packed float
    ``data`` then ``shape``, the order Caffe's serializer uses), so no float goes through Python lists.
    """
    from .atomic import atomic_path
    from .wire import F_LAYER_BLOBS, F_NET_LAYER, encode_blobproto, encode_field
    head = caffe_pb2.NetParameter()
    head.CopyFrom(net_param)
    head.ClearField("layer")
    head.ClearField("layers")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(head.SerializeToString())
            for i, lp_src in enumerate(net_param.layer):
                lp = caffe_pb2.LayerParameter()
                lp.CopyFrom(lp_src)
                del lp.blobs[:]
                arrays = _entry(layer_blobs, i, lp.name) or []
                diffs = _entry(layer_diffs, i, lp.name) or [None] * len(arrays)
                blobs = [encode_field(F_LAYER_BLOBS, encode_blobproto(a, d)) for a, d in zip(arrays, diffs)]
                body = lp.SerializeToString()
                f.write(encode_field(F_NET_LAYER, None, len(body) + sum(len(b) for b in blobs)))
                f.write(body)
                for b in blobs:
                    f.write(b)
            f.flush()
            os.fsync(f.fileno())


def _entry(per_layer, i: int, name: str):
    if per_layer is None:
        return None
    return per_layer[i] if isinstance(per_layer, list) else per_layer.get(name)


def write_caffemodel_hdf5(path, layer_names, layer_blobs: dict, layer_diffs: dict | None = None) -> None:
    """Net::ToHDF5: group ``data/<layer>/<i>``; with ``layer_diffs`` (snapshot_diff) also ``diff/<layer>/<i>``."""
    import h5py
    from .atomic import atomic_path
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            groups = [("data", layer_blobs)] + ([("diff", layer_diffs)] if layer_diffs is not None else [])
            for top, arrays in groups:
                grp = f.create_group(top, track_order=True)
                for name in layer_names:
                    g = grp.create_group(name, track_order=True)
                    for i, arr in enumerate(arrays.get(name, [])):
                        g.create_dataset(str(i), data=np.asarray(arr, dtype=np.float32))
