"""Each class of hostile input the hardening issue lists gives a typed caffessl error naming the file and the
layer / field / blob, before anything large is allocated or anything outside the file is followed."""
from __future__ import annotations

import os
import struct
import time
import zlib

import h5py
import numpy as np
import pytest

from caffessl import TEST, Net
from caffessl.errors import (CaffemodelFormatError, DataSourceError, FileTooLargeError, LayerConfigError,
                             MemoryLimitError, ShapeMismatchError)
from caffessl.io import limits

NET = '''name: "h"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
'''


@pytest.fixture
def net(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return Net(str(p), TEST)


def _h5(path, build):
    with h5py.File(path, "w") as f:
        build(f)
    return str(path)


def _weights(f, **override):
    g = f.create_group("data").create_group("ip")
    g.create_dataset("0", data=np.zeros((2, 3), np.float32))
    g.create_dataset("1", data=np.zeros((2,), np.float32))
    return g


@pytest.mark.parametrize("case,match", [
    ("missing_blob", r"layer 'ip' blob 1 is missing"),
    ("dataset_for_group", r"layer 'ip' is a Dataset, expected a group"),
    ("link_loop", r"layer 'ip' blob 1 is a SoftLink"),
    ("external_storage", r"layer 'ip' blob 1 keeps its values outside the file"),
    ("huge_declared", r"layer 'ip' blob 1: declares shape \(1048576, 1048576\) \(4\.0 TiB\), over the"),
    ("strings", r"layer 'ip' blob 1 holds \|S3 values"),
])
def test_hdf5_caffemodel_classes(tmp_path, net, case, match):
    def build(f):
        if case == "dataset_for_group":
            f.create_group("data").create_dataset("ip", data=[1.0])
            return
        g = _weights(f)
        del g["1"]
        if case == "link_loop":
            g["1"] = h5py.SoftLink("/data/ip/1")
        elif case == "external_storage":
            g.create_dataset("1", shape=(2,), dtype=np.float32, external=[(os.devnull, 0, 8)])
        elif case == "huge_declared":
            g.create_dataset("1", shape=(1 << 20, 1 << 20), dtype=np.float32, chunks=True, compression="gzip")
        elif case == "strings":
            g.create_dataset("1", data=np.array([b"abc"], dtype="S3"))
        elif case == "missing_blob":
            g.create_dataset("2", data=np.zeros((2,), np.float32))
    path = _h5(tmp_path / "w.caffemodel.h5", build)
    with pytest.raises(FileTooLargeError if case == "huge_declared" else CaffemodelFormatError, match=match) as e:
        net.copy_from(path)
    assert str(path) in str(e.value)


def test_hdf5_corrupt_bytes_are_one_typed_error(tmp_path, net):
    path = _h5(tmp_path / "w.caffemodel.h5", _weights)
    raw = bytearray(open(path, "rb").read())
    for i in range(200, len(raw), 97):
        raw[i] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(CaffemodelFormatError, match=r"w\.caffemodel\.h5"):
        net.copy_from(path)


def test_hdf5_non_utf8_layer_name(tmp_path, net):
    def build(f):
        f.create_group("data").create_group(b"\xff\xfe")
    path = _h5(tmp_path / "w.caffemodel.h5", build)
    with pytest.raises(CaffemodelFormatError, match=r"w\.caffemodel\.h5"):
        net.copy_from(path)


@pytest.mark.parametrize("value,match", [([], r"'iter' must hold one number"),
                                         ([np.nan], r"'iter' is nan"),
                                         ([-3], r"'iter' is -3")])
def test_hdf5_solverstate_iter(tmp_path, value, match):
    from caffessl.io.solverstate import read_solverstate

    def build(f):
        f.create_dataset("iter", data=np.array(value, dtype=np.float64))
        f.create_group("history")
    path = _h5(tmp_path / "s.solverstate.h5", build)
    with pytest.raises(CaffemodelFormatError, match=match):
        read_solverstate(path)


@pytest.mark.parametrize("reader", ["prototxt", "caffemodel", "binaryproto", "solverstate", "npy"])
def test_readers_refuse_files_over_the_size_limit(tmp_path, reader):
    from caffessl.io.blobproto import read_binaryproto
    from caffessl.io.caffemodel import read_weights
    from caffessl.io.prototxt import read_net_prototxt
    from caffessl.io.transformer import load_mean
    from caffessl.io.solverstate import read_solverstate
    fn = {"prototxt": read_net_prototxt, "caffemodel": read_weights, "binaryproto": read_binaryproto,
          "solverstate": read_solverstate, "npy": load_mean}[reader]
    path = tmp_path / f"f.{reader}"
    if reader == "npy":
        np.save(path, np.zeros(1000, np.float32))     # f.npy
    else:
        path.write_bytes(b"\x08" * 5000)
    limits.set_limits(file_bytes=1000)
    try:
        with pytest.raises(FileTooLargeError, match=rf"{path.name}.*over the 1000 B limit"):
            fn(str(path))
    finally:
        limits.set_limits(file_bytes=0)


def test_npy_declared_huge_shape_is_refused_before_reading(tmp_path):
    from caffessl.io.transformer import load_mean
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (tmp_path / "m.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    with pytest.raises(FileTooLargeError, match=r"m\.npy.*\(1099511627776,\)"):
        load_mean(str(tmp_path / "m.npy"))


def _net(tmp_path, layers, dims="dim: 2 dim: 3 dim: 8 dim: 8"):
    p = tmp_path / "n.prototxt"
    p.write_text(f'name: "n"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
                 + layers)
    return str(p)


@pytest.mark.parametrize("dims,layers,err,match", [
    ("dim: 100000 dim: 100000 dim: 100000", "", MemoryLimitError,
     r"n\.prototxt: the net would need .*layer 'data' top 'data' \(100000, 100000, 100000\)"),
    ("dim: 2 dim: 3", 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
     'inner_product_param { num_output: 2000000000 } }', MemoryLimitError, r"layer 'ip' param 0 \(2000000000, 3\)"),
    ("dim: 2 dim: -3", "", ShapeMismatchError, r"layer 'data' \(Input\): top 'data' would have shape \(2, -3\)"),
    ("dim: 2 dim: 0", "", ShapeMismatchError, r"every dimension must be positive"),
    ("dim: 1 dim: 1 dim: 2 dim: 2", 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param '
     '{ kernel_size: 2000000 pad: 1999999 stride: 1000000 } }', MemoryLimitError, r"layer 'p' padded input"),
    ("dim: 2", 'layer { name: "e" type: "Exp" bottom: "data" top: "e" exp_param { shift: 1000 } }',
     LayerConfigError, r"n\.prototxt: layer 'e' \(Exp\): exp_param: base \^ shift .* overflows"),
    ("dim: 2 dim: 3", 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: -1 } }',
     LayerConfigError, r"layer 'bn' \(BatchNorm\): batch_norm_param.eps is -1.0; it must be > 0"),
    ("dim: 2 dim: 3", 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { '
     'num_output: 2 weight_filler { type: "uniform" max: inf } } }', LayerConfigError,
     r"n\.prototxt: layer 'ip' \(InnerProduct\): inner_product_param.weight_filler.*inf"),
    # found by the long fuzz profile: a constant-filled DummyData top was allocated in set-up, before the shape
    # check (torch's RuntimeError on a negative dim; terabytes for the huge ones)
    ("dim: 2", 'layer { name: "dd" type: "DummyData" top: "dd" dummy_data_param { shape { dim: 4294967295 '
     'dim: 1099511627776 dim: -2 } } }', ShapeMismatchError, r"layer 'dd' \(DummyData\): top 'dd' would have shape"),
    ("dim: 2", 'layer { name: "dd" type: "DummyData" top: "dd" dummy_data_param { shape { dim: 100000 '
     'dim: 100000 dim: 100000 } } }', MemoryLimitError, r"layer 'dd' top 'dd' \(100000, 100000, 100000\)"),
])
def test_net_setup_refuses(tmp_path, dims, layers, err, match):
    t0 = time.perf_counter()
    with pytest.raises(err, match=match):
        Net(_net(tmp_path, layers, dims), TEST)
    assert time.perf_counter() - t0 < 5


def test_xavier_zero_fan_in_names_layer_and_file():
    import torch
    from caffessl.fillers import fill
    from caffessl.proto import caffe_pb2
    with pytest.raises(LayerConfigError, match=r"n\.prototxt: layer 'ip'.*xavier filler.*holds no values"):
        fill(torch.zeros(0, 3), caffe_pb2.FillerParameter(type="xavier"), where="n.prototxt: layer 'ip'")


def test_memory_limit_is_configurable(tmp_path):
    path = _net(tmp_path, "", "dim: 1000 dim: 1000")     # 8 MB (data + diff)
    Net(path, TEST)
    limits.set_limits(net_bytes="4M")
    try:
        with pytest.raises(MemoryLimitError, match=r"over the 4\.0 MiB limit"):
            Net(path, TEST)
    finally:
        limits.set_limits(net_bytes=0)


def _png(w, h):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused():
    from caffessl.data.image import decode_image
    with pytest.raises(DataSourceError, match=r"rec: image refused.*pixels"):
        decode_image(_png(60000, 60000), None, "rec")


def _db(path, arrays):
    from caffessl.data.datum import array_to_datum
    from caffessl.data.lmdb_source import LMDBWriter
    w = LMDBWriter(str(path))
    for i, a in enumerate(arrays):
        w.put(b"%08d" % i, array_to_datum(a, 1).SerializeToString())
    w.close()
    return str(path)


def _data_net(tmp_path, source, extra=""):
    p = tmp_path / "d.prototxt"
    p.write_text(f'name: "d"\nlayer {{ name: "data" type: "Data" top: "data" top: "label" '
                 f'data_param {{ source: "{source}" backend: LMDB batch_size: 2 {extra} }} }}')
    return str(p)


def test_record_shape_changing_between_batches(tmp_path):
    src = _db(tmp_path / "db", [np.zeros((1, 4, 4), np.uint8)] * 2 + [np.zeros((1, 5, 4), np.uint8)] * 2)
    net = Net(_data_net(tmp_path, src), TEST)
    net.forward()
    with pytest.raises(DataSourceError, match=r"records of shape \(1, 5, 4\), the first record's is \(1, 4, 4\)"):
        net.forward()


def test_truncated_lmdb_is_refused_at_open(tmp_path):
    src = _db(tmp_path / "db", [np.zeros((1, 32, 32), np.uint8)] * 64)
    os.truncate(os.path.join(src, "data.mdb"), 8192)
    with pytest.raises(DataSourceError, match=r"data\.mdb' is truncated or damaged"):
        Net(_data_net(tmp_path, src), TEST)


def test_rand_skip_2_pow_31_cycles_quickly(tmp_path):
    src = _db(tmp_path / "db", [np.full((1, 2, 2), i, np.uint8) for i in range(5)])
    t0 = time.perf_counter()
    Net(_data_net(tmp_path, src, "rand_skip: 2147483647"), TEST).forward()
    assert time.perf_counter() - t0 < 10


def test_datum_negative_dims_with_a_valid_product():
    from caffessl.data.datum import datum_to_array
    from caffessl.proto import caffe_pb2
    d = caffe_pb2.Datum(channels=-1, height=-2, width=3, data=bytes(6))
    with pytest.raises(DataSourceError, match=r"rec: Datum has shape channels=-1 height=-2 width=3"):
        datum_to_array(d, None, "rec")


def test_datum_negative_dims_through_the_data_layer_batch_path():
    """Found by the long fuzz profile: a batch of raw records with two negative dims (product valid) reached
    numpy's reshape in the one-copy batch path (ValueError); it must be the typed error naming the record."""
    from caffessl.data.loaders import DatumBatchLoader
    from caffessl.proto import caffe_pb2

    class Records:
        path = "mem.lmdb"

        def read_many(self, n):
            d = caffe_pb2.Datum(channels=-1, height=3, width=-2, data=bytes(6)).SerializeToString()
            return [(b"k0", d), (b"k1", d)]

        def close(self):
            pass

    loader = DatumBatchLoader(Records(), None, 2, None, True, "layer 'data'")
    with pytest.raises(DataSourceError, match=r"record 'k0'.*channels=-1 height=3 width=-2"):
        loader()
