"""Weight files: the fast wire-format reader, Caffe's name matching, and one-line errors for bad input."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import CaffemodelFormatError, FileMissingError, PrototxtParseError, WeightsError
from caffessl.io.blobproto import blobproto_to_array
from caffessl.io.caffemodel import read_net_binary, read_weights, write_caffemodel
from caffessl.io.wire import read_layer_blobs
from caffessl.proto import caffe_pb2
from tests.golden import REPO, need_shared

LENET = REPO / "models" / "lenet" / "lenet.prototxt"


def _lenet_weights():
    return need_shared("models", "lenet", "lenet_iter_10000.caffemodel")


def _protobuf_arrays(path):
    return [(lp.name, lp.type, [blobproto_to_array(b) for b in lp.blobs]) for lp in read_net_binary(path).layer]


def _same(a, b):
    assert [(n, t, [x.shape for x in xs]) for n, t, xs in a] == [(n, t, [x.shape for x in xs]) for n, t, xs in b]
    for (_, _, xs), (_, _, ys) in zip(a, b):
        for x, y in zip(xs, ys):
            assert x.dtype == np.float32 and np.array_equal(x, y)


def test_fast_reader_equals_protobuf():
    w = _lenet_weights()
    raw = bytearray(w.read_bytes())
    fast = read_layer_blobs(raw)
    assert fast is not None
    _same(fast, _protobuf_arrays(w))


def test_fast_reader_defers_legacy_and_double_data(tmp_path):
    # V1 `layers` files go through protobuf + upgrade
    v1 = need_shared("models", "legacy_v1_lenet", "lenet_iter_10000.caffemodel")
    assert read_layer_blobs(bytearray(v1.read_bytes())) is None
    _same(read_weights(v1), _protobuf_arrays(v1))
    # double_data and legacy num/channels/height/width
    net = caffe_pb2.NetParameter()
    lp = net.layer.add(name="ip", type="InnerProduct")
    b = lp.blobs.add(num=1, channels=1, height=2, width=3)
    b.double_data.extend(np.arange(6) / 7.0)
    b2 = lp.blobs.add(num=1, channels=1, height=1, width=2)
    b2.data.extend([1.5, -2.5])
    p = tmp_path / "d.caffemodel"
    p.write_bytes(net.SerializeToString())
    assert read_layer_blobs(bytearray(p.read_bytes())) is None
    (_, _, (w, bias)), = read_weights(p)
    assert w.shape == (1, 1, 2, 3) and np.allclose(w.ravel(), np.arange(6) / 7.0)
    assert bias.shape == (1, 1, 1, 2) and list(bias.ravel()) == [1.5, -2.5]


def test_save_load_round_trip_is_byte_identical(tmp_path):
    w = _lenet_weights()
    net = caffe.Net(str(LENET), str(w), caffe.TEST)
    out = tmp_path / "again.caffemodel"
    net.save(str(out))
    orig = {n: xs for n, _, xs in read_weights(w) if xs}
    again = {n: xs for n, _, xs in read_weights(out) if xs}
    assert list(again) == list(orig) == ["conv1", "conv2", "ip1", "ip2"]
    for n in orig:
        assert [x.tobytes() for x in again[n]] == [x.tobytes() for x in orig[n]]
        assert [x.shape for x in again[n]] == [x.shape for x in orig[n]]
    # the file we write is a valid NetParameter that protobuf reads the same way
    _same(_protobuf_arrays(out), read_weights(out))
    net2 = caffe.Net(str(LENET), str(out), caffe.TEST)
    for name in net.params:
        for p, q in zip(net.params[name], net2.params[name]):
            assert p.data.tobytes() == q.data.tobytes()


def test_mismatched_layer_names_load_what_matches(tmp_path):
    w = _lenet_weights()
    net = caffe.Net(str(LENET), caffe.TEST)
    proto = read_net_binary(w)
    blobs = {lp.name: [blobproto_to_array(b) for b in lp.blobs] for lp in proto.layer}
    for lp in proto.layer:
        if lp.name == "ip2":
            lp.name = "classifier"
    blobs["classifier"] = blobs.pop("ip2")
    p = tmp_path / "renamed.caffemodel"
    write_caffemodel(p, proto, blobs)
    before = net.params["ip2"][0].data.copy()
    report = net.copy_from(str(p))
    assert "classifier" in report["ignored"] and "ip1" in report["loaded"] and "ip2" not in report["loaded"]
    assert np.array_equal(net.params["ip1"][0].data, blobs["ip1"][0])
    assert np.array_equal(net.params["ip2"][0].data, before)
    with pytest.raises(WeightsError, match="classifier"):
        net.copy_from(str(p), strict=True)


def test_prototxt_given_as_caffemodel():
    with pytest.raises(CaffemodelFormatError, match="text prototxt"):
        caffe.Net(str(LENET), str(LENET), caffe.TEST)


def test_caffemodel_given_as_prototxt():
    with pytest.raises(PrototxtParseError, match="lenet_iter_10000.caffemodel.*binary"):
        caffe.Net(str(_lenet_weights()), caffe.TEST)


def test_truncated_caffemodel(tmp_path):
    raw = _lenet_weights().read_bytes()
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(raw[: len(raw) // 2])
    net = caffe.Net(str(LENET), caffe.TEST)
    with pytest.raises(CaffemodelFormatError, match="cut.caffemodel.*truncated"):
        net.copy_from(str(p))


def test_caffemodel_of_another_net_names_layer_param_and_shapes():
    w = need_shared("models", "cifar10_quick", "cifar10_quick_iter_5000.caffemodel")
    # cifar10_quick's conv1 is 32x3x5x5, LeNet's 20x1x5x5
    with pytest.raises(WeightsError) as e:
        caffe.Net(str(LENET), str(w), caffe.TEST)
    msg = str(e.value)
    assert "conv1" in msg and "param 0" in msg and "(32, 3, 5, 5)" in msg and "(20, 1, 5, 5)" in msg


def test_missing_files(tmp_path):
    with pytest.raises(FileMissingError, match="nope.caffemodel"):
        caffe.Net(str(LENET), str(tmp_path / "nope.caffemodel"), caffe.TEST)
    with pytest.raises(FileMissingError, match="nope.prototxt"):
        caffe.Net(str(tmp_path / "nope.prototxt"), caffe.TEST)


def test_shapeless_blobs(tmp_path):
    # Caffe writes a 0-axis blob (a shared PReLU slope) with no shape: one value
    net = caffe_pb2.NetParameter()
    net.layer.add(name="p", type="PReLU").blobs.add().data.append(0.25)
    bad = net.layer.add(name="q", type="PReLU").blobs.add()
    bad.data.extend([1.0, 2.0])
    p = tmp_path / "s.caffemodel"
    p.write_bytes(net.SerializeToString())
    with pytest.raises(CaffemodelFormatError, match="layer 'q'.*2 values.*needs 1"):
        read_weights(p)
    del net.layer[1]
    p.write_bytes(net.SerializeToString())
    (_, _, (a,)), = read_weights(p)
    assert a.shape == () and float(a) == 0.25


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp creates 0600 files: a snapshot or caffemodel must be as readable as one written by open()."""
    import os
    from caffessl.io.atomic import atomic_write
    mask = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.caffemodel", b"x")
        with open(tmp_path / "b.caffemodel", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.caffemodel").stat().st_mode & 0o777 == (tmp_path / "b.caffemodel").stat().st_mode & 0o777 == 0o640
