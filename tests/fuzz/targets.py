"""Fuzz targets: what each reader is fed (seeds, plain mutations, hypothesis strategies) and how the worker
runs one input (``RUNNERS``). Parent side: ``TARGETS``; worker side: ``prepare_worker`` + ``RUNNERS``."""
from __future__ import annotations

import glob
import io
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np

from .harness import ROOT

HOSTILE_INTS = [0, 1, 2, 3, 7, -1, -2, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 2 ** 40, 65536, 100000]
HOSTILE_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-45, -1e-38, 1e38, 3.4e38, -3.4e38, 1e30, 100.0,
                  float("inf"), float("-inf"), float("nan")]

# the small net whose weights / solver state the weight and solverstate targets load
NET_TEXT = """name: "fuzz"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 1 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "pool1" top: "pool1" }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


# ---------------------------------------------------------------------------------------------- mutation
def mutate_bytes(rng, data: bytes, seeds: list) -> bytes:
    """A few random byte-level edits: flips, interesting values, cuts, duplications, splices, truncation."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        n = len(b)
        if n == 0:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            continue
        i = rng.randrange(n)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFE])
        elif op == 2:
            del b[i:i + rng.randint(1, 64)]
        elif op == 3:
            j = rng.randrange(n)
            b[j:j] = b[i:i + rng.randint(1, 64)]
        elif op == 4:
            del b[i:]
        elif op == 5:
            other = rng.choice(seeds)
            if other:
                k = rng.randrange(len(other))
                b[i:] = other[k:k + rng.randint(1, 256)] + b[i:]
        elif op == 6:
            w = rng.choice([4, 8])
            b[i:i + w] = struct.pack("<Q", rng.choice([0, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 63 - 1, 2 ** 64 - 1]))[:w]
        else:
            b[i:i] = bytes([0xFF] * rng.randint(1, 10))   # varint continuation bytes
    return bytes(b)


def mutate_text(rng, text: str) -> str:
    """Token-level edits of a prototxt: numbers become hostile values, lines are dropped or repeated,
    type names swapped."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(5)
        toks = lines[i].split(" ")
        if op <= 1:
            nums = [k for k, t in enumerate(toks) if t.replace(".", "", 1).replace("-", "", 1).isdigit()]
            if nums:
                k = rng.choice(nums)
                toks[k] = str(rng.choice(HOSTILE_INTS + HOSTILE_FLOATS))
                lines[i] = " ".join(toks)
        elif op == 2:
            del lines[i]
        elif op == 3:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        else:
            types = ["Convolution", "Pooling", "InnerProduct", "ReLU", "Exp", "Log", "Power", "BatchNorm", "Crop",
                     "Concat", "Slice", "Reshape", "Flatten", "Eltwise", "Tile", "Embed", "Deconvolution",
                     "LRN", "Softmax", "SoftmaxWithLoss", "Accuracy", "Reduction", "ArgMax", "Scale", "Bias"]
            if "type:" in lines[i]:
                lines[i] = lines[i].split("type:")[0] + f'type: "{rng.choice(types)}"'
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- seeds
def make_seeds() -> dict:
    import shutil
    d = tempfile.mkdtemp(prefix="caffessl-fuzz-seeds-")
    try:
        return _make_seeds(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _make_seeds(d: str) -> dict:
    """Valid inputs of every kind, written by caffessl's own writers."""
    import h5py
    from caffessl import Net, TEST
    from caffessl.data.datum import array_to_datum, encoded_datum
    from caffessl.data.image import encode_image
    from caffessl.io.blobproto import array_to_blobproto
    from caffessl.io.solverstate import SolverStateData, write_solverstate, write_solverstate_hdf5
    net_path = os.path.join(d, "net.prototxt")
    with open(net_path, "w") as f:
        f.write(NET_TEXT)
    net = Net(net_path, TEST)
    net.save(os.path.join(d, "w.caffemodel"))
    net.save_hdf5(os.path.join(d, "w.caffemodel.h5"))
    hist = [p.detach().numpy() * 0 for l in net.layers for p in l.params]
    st = SolverStateData(10, "seed.caffemodel", 1, hist)   # the worker writes it (prepare_worker)
    write_solverstate(os.path.join(d, "s.solverstate"), st)
    write_solverstate_hdf5(os.path.join(d, "s.solverstate.h5"), st)
    mean = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    bio = io.BytesIO()
    np.save(bio, mean[0])
    img = (np.arange(3 * 6 * 5) % 255).astype(np.uint8).reshape(3, 6, 5)
    images = [encode_image(img, fmt) for fmt in ("png", "jpg", "bmp", "gif")]

    def read(name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()
    prototxts = []
    for p in sorted(glob.glob(os.path.join(ROOT, "models", "**", "*.prototxt"), recursive=True)):
        with open(p) as f:
            prototxts.append(f.read())
    prototxts.append(NET_TEXT)
    del h5py
    return {
        "prototxt": [t.encode() for t in prototxts],
        "caffemodel": [read("w.caffemodel")],
        "caffemodel.h5": [read("w.caffemodel.h5")],
        "solverstate": [read("s.solverstate")],
        "solverstate.h5": [read("s.solverstate.h5")],
        "binaryproto": [array_to_blobproto(mean).SerializeToString()],
        "npy": [bio.getvalue()],
        "datum": [array_to_datum(img, 3).SerializeToString(), array_to_datum(img[:1], 1).SerializeToString()],
        "image": [encoded_datum(b, 2).SerializeToString() for b in images],
    }


# ---------------------------------------------------------------------------------------------- strategies
def _strategies():
    from hypothesis import strategies as st
    from google.protobuf.descriptor import FieldDescriptor as FD
    from caffessl.proto import caffe_pb2

    ints = st.sampled_from(HOSTILE_INTS) | st.integers(-3, 40)
    floats = st.sampled_from(HOSTILE_FLOATS) | st.floats(-10, 10, width=32)

    def value_for(fd, draw, depth):
        t = fd.type
        if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            return draw(floats)
        if t == FD.TYPE_BOOL:
            return draw(st.booleans())
        if t == FD.TYPE_STRING:
            if fd.name == "type":
                return draw(st.sampled_from(["constant", "uniform", "gaussian", "xavier", "msra", "bilinear",
                                             "positive_unitball", "nope"]))
            return draw(st.sampled_from(["", "x", "../../etc/passwd", "data", "\u00e9"]))
        if t == FD.TYPE_ENUM:
            return draw(st.sampled_from([v.number for v in fd.enum_type.values]))
        if t == FD.TYPE_MESSAGE:
            return None
        v = draw(ints)
        lo, hi = {FD.TYPE_UINT32: (0, 2 ** 32 - 1), FD.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1),
                  FD.TYPE_UINT64: (0, 2 ** 64 - 1), FD.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1)}.get(t, (0, 1))
        return min(max(v, lo), hi)

    def fill_message(draw, msg, depth):
        fields = [f for f in msg.DESCRIPTOR.fields if f.name not in ("blobs", "source", "mean_file", "module",
                                                                     "include", "exclude", "param_str")]
        if not fields:
            return
        chosen = draw(st.lists(st.sampled_from(fields), max_size=4, unique_by=lambda f: f.name))
        for fd in chosen:
            rep = getattr(fd, "is_repeated", None)
            rep = rep if rep is not None else fd.label == FD.LABEL_REPEATED
            count = draw(st.integers(1, 3)) if rep else 1
            for _ in range(count):
                if fd.type == FD.TYPE_MESSAGE:
                    if depth >= 2:
                        break
                    sub = getattr(msg, fd.name).add() if rep else getattr(msg, fd.name)
                    fill_message(draw, sub, depth + 1)
                    if not rep:
                        sub.SetInParent()
                else:
                    v = value_for(fd, draw, depth)
                    try:
                        if rep:
                            getattr(msg, fd.name).append(v)
                        else:
                            setattr(msg, fd.name, v)
                    except (ValueError, TypeError):
                        pass

    layer_types = {
        "Convolution": "convolution_param", "Deconvolution": "convolution_param", "Pooling": "pooling_param",
        "InnerProduct": "inner_product_param", "Exp": "exp_param", "Log": "log_param", "Power": "power_param",
        "BatchNorm": "batch_norm_param", "ReLU": "relu_param", "Dropout": "dropout_param", "LRN": "lrn_param",
        "Reshape": "reshape_param", "Concat": "concat_param", "Slice": "slice_param", "Tile": "tile_param",
        "Crop": "crop_param", "Softmax": "softmax_param", "Flatten": "flatten_param", "Eltwise": "eltwise_param",
        "Scale": "scale_param", "Bias": "bias_param", "Embed": "embed_param", "Reduction": "reduction_param",
        "ArgMax": "argmax_param", "MVN": "mvn_param", "ELU": "elu_param", "PReLU": "prelu_param",
        "Threshold": "threshold_param", "DummyData": "dummy_data_param", "Clip": "clip_param",
        "Swish": "swish_param", "Sigmoid": "sigmoid_param", "TanH": "tanh_param", "AbsVal": None, "BNLL": None,
        "Split": None, "Silence": None, "Im2col": "convolution_param", "SPP": "spp_param",
    }
    layer_types = {k: v for k, v in layer_types.items()
                   if v is None or v in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name}

    @st.composite
    def netparameter(draw):
        net = caffe_pb2.NetParameter(name="fuzz")
        inp = net.layer.add(name="data", type="Input")
        inp.top.append("data")
        shape = inp.input_param.shape.add()
        shape.dim.extend(draw(st.lists(st.sampled_from([1, 2, 3, 5, 8, 0, -1, 2 ** 31 - 1, 2 ** 40]) |
                                       st.integers(1, 12), min_size=1, max_size=5)))
        tops = ["data"]
        for i in range(draw(st.integers(1, 3))):
            ltype = draw(st.sampled_from(sorted(layer_types)))
            lp = net.layer.add(name=f"l{i}", type=ltype)
            nb = draw(st.integers(0, 2)) if ltype in ("Concat", "Eltwise", "Crop", "Scale", "Bias") else \
                (0 if ltype == "DummyData" else 1)
            for _ in range(nb):
                lp.bottom.append(draw(st.sampled_from(tops)))
            lp.top.append(f"t{i}")
            if ltype == "Slice":
                lp.top.append(f"t{i}b")
            pname = layer_types[ltype]
            if pname is not None:
                fill_message(draw, getattr(lp, pname), 0)
                getattr(lp, pname).SetInParent()
            tops.append(f"t{i}")
        from google.protobuf import text_format
        return text_format.MessageToString(net).encode()

    def blobproto(draw, nvalues=None):
        bp = caffe_pb2.BlobProto()
        dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, -1, -4, 2 ** 31 - 1, 2 ** 40, 2 ** 62]),
                             max_size=5))
        if draw(st.booleans()):
            bp.shape.dim.extend(dims)
        else:
            for name, v in zip(("num", "channels", "height", "width"), dims):
                setattr(bp, name, max(min(v, 2 ** 31 - 1), -2 ** 31))
        n = draw(st.sampled_from([0, 1, 2, 4, 8, 16, 24, 27, 81])) if nvalues is None else nvalues
        vals = [draw(floats) for _ in range(min(n, 4))] + [0.5] * max(n - 4, 0)
        if draw(st.booleans()):
            bp.double_data.extend(vals)
        else:
            bp.data.extend(vals)
        return bp

    @st.composite
    def binary_caffemodel(draw):
        net = caffe_pb2.NetParameter()
        for name, nblobs in (("conv1", 2), ("ip1", 2), ("bn1", 3)):
            if draw(st.booleans()):
                lp = net.layer.add(name=draw(st.sampled_from([name, "x", "\u00e9", ""])))
                for _ in range(draw(st.integers(0, 3))):
                    lp.blobs.add().CopyFrom(blobproto(draw))
        return net.SerializeToString()

    @st.composite
    def binary_solverstate(draw):
        s = caffe_pb2.SolverState()
        s.iter = draw(st.sampled_from([0, 1, 10, -1, -2 ** 31, 2 ** 31 - 1]))
        s.current_step = draw(st.sampled_from([0, 1, -1, -5, 2 ** 31 - 1]))
        s.learned_net = draw(st.sampled_from(["", "nope.caffemodel", "/dev/zero", "/", "\u00e9"]))
        for _ in range(draw(st.integers(0, 8))):
            s.history.add().CopyFrom(blobproto(draw))
        return s.SerializeToString()

    @st.composite
    def binaryproto(draw):
        return blobproto(draw).SerializeToString()

    @st.composite
    def npy(draw):
        dtype = draw(st.sampled_from(["<f4", "<f8", "|u1", "<i8", "|O", "<U3", "|V8", "<c8", "|b1", "<f2"]))
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 2 ** 31, 2 ** 40, 2 ** 62]), max_size=4)))
        fortran = draw(st.booleans())
        header = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (dtype, fortran, shape)
        header = header.encode("latin1")
        header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
        body = bytes(draw(st.integers(0, 200)))
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body

    @st.composite
    def datum(draw):
        d = caffe_pb2.Datum()
        for name in ("channels", "height", "width"):
            if draw(st.booleans()) or name != "width":
                setattr(d, name, draw(st.sampled_from([0, 1, 2, 3, 6, 5, -1, -2, -3, 2 ** 31 - 1, -2 ** 31])))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            d.data = bytes(draw(st.sampled_from([0, 1, 6, 30, 90, 91, 12])))
        elif kind == 1:
            d.float_data.extend([draw(floats) for _ in range(draw(st.sampled_from([0, 1, 6, 30, 90])))])
        else:
            d.data = b"\x89PNG" + bytes(20)
            d.encoded = True
        d.label = draw(st.sampled_from([0, 1, -1, 2 ** 31 - 1]))
        return d.SerializeToString()

    @st.composite
    def image(draw):
        w = draw(st.sampled_from([1, 2, 100, 65535, 100000, 2 ** 31 - 1, 0]))
        h = draw(st.sampled_from([1, 3, 100, 65535, 100000, 2 ** 31 - 1, 0]))
        color = draw(st.sampled_from([0, 2, 3, 4, 6]))
        depth = draw(st.sampled_from([1, 8, 16]))
        ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)

        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        raw = zlib.compress(bytes(draw(st.sampled_from([0, 10, 1000, 100000]))), 9)
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
        d = caffe_pb2.Datum(data=png, encoded=True, label=1)
        return d.SerializeToString()

    @st.composite
    def hdf5(draw, kind):
        import h5py
        bio = io.BytesIO()
        with h5py.File(bio, "w", track_order=True) as f:
            if kind == "caffemodel":
                top = f.create_group("data") if draw(st.integers(0, 5)) else f.create_dataset("data", data=[1])
                names = ["conv1", "ip1", "bn1"]
            else:
                top = f
                for name in ("iter", "current_step"):
                    c = draw(st.integers(0, 7))
                    vals = {0: [3], 1: [], 2: [float("nan")], 3: [-4], 4: [2 ** 40], 5: [1.5], 6: [1, 2], 7: None}[c]
                    if vals is None:
                        f.create_group(name)
                    elif draw(st.integers(0, 6)):
                        f.create_dataset(name, data=np.array(vals, dtype=np.float64 if c in (2, 4, 5) else np.int32))
                if draw(st.booleans()):
                    f.create_dataset("learned_net", data=np.array(draw(st.sampled_from(
                        [b"", b"x.caffemodel", b"\xff\xfe", b"a\0b"])), dtype="S8"))
                top = f.create_group("history") if draw(st.integers(0, 5)) else f.create_dataset("history",
                                                                                              data=[0])
                names = None
            if isinstance(top, h5py.Group):
                groups = [top.create_group(n) for n in names if draw(st.integers(0, 4))] if names else [top]
                for g in groups:
                    for i in range(draw(st.integers(0, 3))):
                        key = str(i if draw(st.integers(0, 6)) else i + 1)
                        op = draw(st.integers(0, 9))
                        if key in g:
                            continue
                        if op <= 3:
                            shape = draw(st.sampled_from([(3, 1, 3, 3), (3,), (4, 27), (4,), (0,), (1, 1), ()]))
                            g.create_dataset(key, data=np.full(shape, draw(floats), dtype=np.float32))
                        elif op == 4:
                            g.create_dataset(key, shape=draw(st.sampled_from([(2 ** 20, 2 ** 20), (2 ** 31,),
                                                                              (10 ** 6, 10 ** 6, 10)])),
                                             dtype=np.float32, chunks=True, compression="gzip")
                        elif op == 5:
                            g[key] = h5py.SoftLink(g.name.rstrip("/") + "/" + key)       # a link loop
                        elif op == 6:
                            g.create_dataset(key, shape=(4,), dtype=np.float32, external=[("/dev/zero", 0, 16)])
                        elif op == 7:
                            g.create_group(key)
                        elif op == 8:
                            g[key] = h5py.ExternalLink("/etc/hostname", "/x")
                        else:
                            g.create_dataset(key, data=np.array([b"abc"], dtype="S3"))
                if draw(st.integers(0, 3)) == 0:
                    top.create_group(b"\xff\xfe-bad-utf8")
        return bio.getvalue()

    return {"netparameter": netparameter(), "caffemodel": binary_caffemodel(),
            "caffemodel.h5": hdf5("caffemodel"), "solverstate": binary_solverstate(),
            "solverstate.h5": hdf5("solverstate"), "binaryproto": binaryproto(), "npy": npy(),
            "datum": datum(), "image": image()}


@dataclass
class Target:
    name: str
    runner: str
    seeds: list
    strategy: object
    text: bool = False

    def mutate(self, rng) -> bytes:
        seed = rng.choice(self.seeds)
        if self.text and rng.random() < 0.7:
            return mutate_text(rng, seed.decode("utf-8", "replace")).encode()
        return mutate_bytes(rng, seed, self.seeds)


def targets() -> list:
    seeds = make_seeds()
    strat = _strategies()
    return [
        Target("prototxt (mutated shipped nets)", "net", seeds["prototxt"], None, text=True),
        Target("NetParameter (hypothesis, hostile values)", "net", seeds["prototxt"][-1:],
               strat["netparameter"], text=True),
        Target("caffemodel (binary)", "caffemodel", seeds["caffemodel"], strat["caffemodel"]),
        Target("caffemodel.h5", "caffemodel", seeds["caffemodel.h5"], strat["caffemodel.h5"]),
        Target("solverstate (binary)", "solverstate", seeds["solverstate"], strat["solverstate"]),
        Target("solverstate.h5", "solverstate", seeds["solverstate.h5"], strat["solverstate.h5"]),
        Target("mean .binaryproto", "binaryproto", seeds["binaryproto"], strat["binaryproto"]),
        Target("mean .npy", "npy", seeds["npy"], strat["npy"]),
        Target("Datum (raw)", "datum", seeds["datum"], strat["datum"]),
        Target("Datum (encoded image)", "datum", seeds["image"], strat["image"]),
    ]


# ---------------------------------------------------------------------------------------------- worker side
_STATE: dict = {}


def prepare_worker():
    from caffessl import Net, TEST
    from caffessl.data.transform import DataTransformer
    from caffessl.log import get_logger
    from caffessl.proto import caffe_pb2
    from caffessl.solver.solver import get_solver
    import logging
    get_logger().setLevel(logging.ERROR)
    import atexit
    import shutil
    d = tempfile.mkdtemp(prefix="caffessl-fuzz-worker-")
    atexit.register(shutil.rmtree, d, True)
    os.chdir(d)
    with open("net.prototxt", "w") as f:
        f.write(NET_TEXT)
    _STATE["net"] = Net("net.prototxt", TEST)
    _STATE["net"].save("seed.caffemodel")
    sp = caffe_pb2.SolverParameter(net="net.prototxt", base_lr=0.01, momentum=0.9, max_iter=1, type="SGD",
                                 lr_policy="fixed")
    _STATE["solver"] = get_solver(sp, "solver.prototxt")
    tp = caffe_pb2.TransformationParameter()
    _STATE["transformer"] = DataTransformer(tp, TEST, np.random.RandomState(0), "fuzz")
    img = (np.arange(3 * 6 * 5) % 255).astype(np.uint8).reshape(3, 6, 5)
    from caffessl.data.datum import array_to_datum
    _STATE["first_record"] = array_to_datum(img, 3).SerializeToString()


def _write(name: str, data: bytes) -> str:
    with open(name, "wb") as f:
        f.write(data)
    return name


def run_net(data: bytes):
    from caffessl import Net, TEST
    net = Net(_write("fuzz.prototxt", data), TEST)
    if sum(math.prod(b.shape) for b in net.blobs.values()) < (1 << 22):
        net.forward()


def run_caffemodel(data: bytes):
    from caffessl.io.caffemodel import HDF5_SIGNATURE
    name = "w.caffemodel.h5" if data[:8] == HDF5_SIGNATURE else "w.caffemodel"
    _STATE["net"].copy_from(_write(name, data))


def run_solverstate(data: bytes):
    from caffessl.io.caffemodel import HDF5_SIGNATURE
    name = "s.solverstate.h5" if data[:8] == HDF5_SIGNATURE else "s.solverstate"
    _STATE["solver"].restore(_write(name, data))


def run_binaryproto(data: bytes):
    from caffessl.io.transformer import load_mean
    load_mean(_write("mean.binaryproto", data))


def run_npy(data: bytes):
    from caffessl.io.transformer import load_mean
    load_mean(_write("mean.npy", data))


class _Records:
    path = "fuzz-db"

    def __init__(self, batches):
        self.batches = list(batches)

    def read_many(self, n):
        return [(b"%08d" % i, v) for i, v in enumerate(self.batches.pop(0))]

    def close(self):
        pass


def run_datum(data: bytes):
    """The Data layer's path: the first batch is a valid record (its shape fixes the top), the second batch
    the fuzzed record twice (a record whose shape changes between batches), decoded and transformed."""
    from caffessl.data.datum import datum_to_array, parse_datum
    from caffessl.data.loaders import DatumBatchLoader
    first = _STATE["first_record"]
    shape = datum_to_array(parse_datum(first, "seed"), None, "seed").shape
    loader = DatumBatchLoader(_Records([[first, first], [data, data]]), _STATE["transformer"], 2, None, True,
                              "fuzz Data layer", record_shape=shape)
    loader()
    loader()


RUNNERS = {"net": run_net, "caffemodel": run_caffemodel, "solverstate": run_solverstate,
           "binaryproto": run_binaryproto, "npy": run_npy, "datum": run_datum}
