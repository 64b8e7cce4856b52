"""Tiny datasets written with the plain lmdb / h5py / Pillow libraries (independent of caffessl's writers)."""
from __future__ import annotations

import io

import lmdb
import numpy as np

from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2


def net_param(text):
    return parse_text(text, caffe_pb2.NetParameter())


def data_net(source, batch, extra="", tops=("data", "label"), phase=None, backend="LMDB"):
    """A net of one Data layer "d" (prefetch 2); ``backend`` None leaves the schema's default (LEVELDB)."""
    import caffessl as caffe
    tops_txt = " ".join(f'top: "{t}"' for t in tops)
    backend_txt = f"backend: {backend} " if backend else ""
    return caffe.Net(net_param(f'layer {{ name: "d" type: "Data" {tops_txt} data_param {{ source: "{source}" '
                               f'batch_size: {batch} {backend_txt}prefetch: 2 }} {extra} }}'),
                     caffe.TRAIN if phase is None else phase)


def write_lmdb(path, records):
    """records: list of (key bytes, value bytes)."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in records:
            txn.put(k, v)
    env.close()


def raw_datum(chw_uint8, label):
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = chw_uint8.shape
    d.data = np.ascontiguousarray(chw_uint8, dtype=np.uint8).tobytes()
    d.label = int(label)
    return d.SerializeToString()


def float_datum(chw, label):
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = chw.shape
    d.float_data.extend(np.asarray(chw, np.float32).ravel().tolist())
    d.label = int(label)
    return d.SerializeToString()


def png_bytes(hwc_rgb_or_hw):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc_rgb_or_hw, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def encoded_datum(png, label):
    d = caffe_pb2.Datum()
    d.data = png
    d.encoded = True
    d.label = int(label)
    return d.SerializeToString()


def write_mean(path, chw):
    bp = caffe_pb2.BlobProto()
    bp.num, (bp.channels, bp.height, bp.width) = 1, chw.shape
    bp.data.extend(np.asarray(chw, np.float32).ravel().tolist())
    with open(path, "wb") as f:
        f.write(bp.SerializeToString())


def write_leveldb(path, records):
    """records: list of (key bytes, value bytes), written with the LevelDB library itself (plyvel)."""
    import plyvel
    db = plyvel.DB(str(path), create_if_missing=True)
    with db.write_batch() as wb:
        for k, v in records:
            wb.put(k, v)
    db.close()


def read_leveldb(path):
    import plyvel
    db = plyvel.DB(str(path), create_if_missing=False)
    out = list(db.iterator())
    db.close()
    return out
