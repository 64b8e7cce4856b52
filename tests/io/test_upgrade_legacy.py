"""Legacy V0/V1 nets upgrade as Caffe's upgrade_proto.cpp does (and the V1 LeNet still classifies MNIST)."""
import gzip

import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main as cli_main
from caffessl.errors import NetGraphError, UnknownLayerTypeError
from caffessl.io import parse_text, read_net_prototxt
from caffessl.io.upgrade import upgrade_net_as_needed
from caffessl.proto import caffe_pb2
from tests.golden import REPO, need_shared


def _mnist_test(n=2000):
    d = need_shared("data", "mnist")
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], ">i4")
    assert magic == 2051
    images = np.frombuffer(raw, np.uint8, count * rows * cols, 16).reshape(count, 1, rows, cols)[:n]
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        raw = f.read()
    assert np.frombuffer(raw[:4], ">i4")[0] == 2049
    labels = np.frombuffer(raw, np.uint8, count, 8)[:n]
    return images.astype(np.float32) * np.float32(0.00390625), labels


def _accuracy(net):
    x, y = _mnist_test()
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    prob = net.forward(data=x)["prob"]
    return float((prob.argmax(1) == y).mean())


def _upgrade(text):
    return upgrade_net_as_needed(parse_text(text, caffe_pb2.NetParameter()))


def test_v1_lenet_classifies_mnist():
    d = need_shared("models", "legacy_v1_lenet")
    net = caffe.Net(str(d / "lenet.prototxt"), str(d / "lenet_iter_10000.caffemodel"), caffe.TEST)
    assert net.layer_type("conv1") == "Convolution" and net.layer_type("relu1") == "ReLU"
    assert _accuracy(net) >= 0.985


def test_v2_lenet_classifies_mnist():
    d = need_shared("models", "lenet")
    net = caffe.Net(str(REPO / "models" / "lenet" / "lenet.prototxt"), str(d / "lenet_iter_10000.caffemodel"),
                    caffe.TEST)
    assert _accuracy(net) >= 0.985


def test_upgrade_net_round_trip(tmp_path):
    d = need_shared("models", "legacy_v1_lenet")
    out_m, out_w = tmp_path / "v2.prototxt", tmp_path / "v2.caffemodel"
    rc = cli_main(["upgrade-net", "--model", str(d / "lenet.prototxt"), "--weights",
                   str(d / "lenet_iter_10000.caffemodel"), "--out-model", str(out_m), "--out-weights", str(out_w)])
    assert rc == 0
    text = out_m.read_text()
    assert "layers {" not in text and 'type: "Convolution"' in text and "blobs_lr" not in text
    v2 = caffe_pb2.NetParameter()
    v2.ParseFromString(out_w.read_bytes())
    assert len(v2.layers) == 0 and len(v2.layer) > 0
    old = caffe.Net(str(d / "lenet.prototxt"), str(d / "lenet_iter_10000.caffemodel"), caffe.TEST)
    new = caffe.Net(str(out_m), str(out_w), caffe.TEST)
    x = np.random.RandomState(0).rand(64, 1, 28, 28).astype(np.float32)
    a, b = old.forward(data=x)["prob"].copy(), new.forward(data=x)["prob"]
    assert np.array_equal(a, b)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        for p, q in zip(old.params[name], new.params[name]):
            assert np.array_equal(p.data, q.data)


def test_v1_fields_to_param_specs():
    net = _upgrade("""
      input: "data" input_dim: 1 input_dim: 2 input_dim: 5 input_dim: 5
      layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2
               weight_decay: 1 weight_decay: 0 param: "w" param: "b" blob_share_mode: PERMISSIVE
               convolution_param { num_output: 3 kernel_size: 3 } }
      layers { name: "l" type: SOFTMAX_LOSS bottom: "c" bottom: "data" top: "loss" loss_weight: 2
               include { phase: TRAIN } }""")
    assert len(net.layers) == 0
    c = net.layer[1]
    assert (c.type, c.name) == ("Convolution", "c")
    assert [(p.name, p.lr_mult, p.decay_mult) for p in c.param] == [("w", 1, 1), ("b", 2, 0)]
    assert c.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE and not c.param[1].HasField("share_mode")
    assert c.convolution_param.num_output == 3 and list(c.convolution_param.kernel_size) == [3]
    loss = net.layer[2]
    assert loss.type == "SoftmaxWithLoss" and list(loss.loss_weight) == [2]
    assert loss.include[0].phase == caffe_pb2.TRAIN


def test_v1_blobs_kept():
    net = caffe_pb2.NetParameter()
    l = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    b = l.blobs.add(num=1, channels=1, height=2, width=3)
    b.data.extend(range(6))
    upgrade_net_as_needed(net)
    assert net.layer[0].type == "InnerProduct" and list(net.layer[0].blobs[0].data) == list(range(6))


@pytest.mark.parametrize("ltype,pname", [("DATA", "data_param"), ("IMAGE_DATA", "image_data_param"),
                                         ("WINDOW_DATA", "window_data_param")])
def test_v1_data_transformation_moves_to_transform_param(ltype, pname):
    net = _upgrade(f"""layers {{ name: "d" type: {ltype} top: "data"
        {pname} {{ source: "x" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto" crop_size: 7 mirror: true }} }}""")
    lp = net.layer[0]
    tp = lp.transform_param
    assert (tp.scale, tp.mean_file, tp.crop_size, tp.mirror) == (0.5, "m.binaryproto", 7, True)
    p = getattr(lp, pname)
    assert not any(p.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror"))
    assert p.source == "x" and p.batch_size == 4


def test_v0_net_padding_layers_merge_into_conv():
    net = _upgrade("""
      name: "v0" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
      layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
      layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1
                       biasterm: false blobs_lr: 1 weight_decay: 0
                       weight_filler { type: "gaussian" std: 0.01 } } bottom: "pad1" top: "conv1" }
      layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
      layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 k: 2 } bottom: "pool1" top: "norm1" }
      layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "norm1" top: "norm1" }
      layers { layer { name: "ip" type: "innerproduct" num_output: 5 } bottom: "norm1" top: "ip" }
      layers { layer { name: "d" type: "data" source: "db" batchsize: 8 scale: 0.25 cropsize: 4 mirror: true
                       meanfile: "m" rand_skip: 3 } top: "x" top: "y" }""")
    names = [l.name for l in net.layer]
    assert names == ["input", "conv1", "pool1", "norm1", "drop", "ip", "d"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and conv.type == "Convolution"
    cp = conv.convolution_param
    assert (list(cp.pad), list(cp.kernel_size), list(cp.stride), cp.num_output, cp.bias_term, cp.group) == \
        ([2], [3], [2], 4, False, 1)
    assert cp.weight_filler.type == "gaussian" and cp.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 0)]
    pp = net.layer[2].pooling_param
    assert pp.pool == caffe_pb2.PoolingParameter.AVE and (pp.kernel_size, pp.stride) == (2, 2)
    lrn = net.layer[3].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (3, pytest.approx(0.1), 0.5, 2)
    assert net.layer[4].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert net.layer[5].inner_product_param.num_output == 5
    d = net.layer[6]
    assert d.type == "Data" and (d.data_param.source, d.data_param.batch_size, d.data_param.rand_skip) == ("db", 8, 3)
    tp = d.transform_param
    assert (tp.scale, tp.crop_size, tp.mirror, tp.mean_file) == (0.25, 4, True, "m")


def test_v0_padding_into_non_conv_is_an_error():
    with pytest.raises(NetGraphError, match="relu1"):
        _upgrade("""input: "data"
          layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
          layers { layer { name: "relu1" type: "relu" } bottom: "pad1" top: "r" }""")


def test_v0_unknown_type_names_layer():
    with pytest.raises(UnknownLayerTypeError, match="weird1"):
        _upgrade("""input: "data" layers { layer { name: "weird1" type: "wobble" } bottom: "data" top: "w" }""")


def test_v1_unknown_type_names_layer():
    net = caffe_pb2.NetParameter()
    l = net.layers.add(name="mystery", type=caffe_pb2.V1LayerParameter.RELU)
    raw = bytearray(net.SerializeToString())
    # rewrite the enum value (RELU = 18) to 77, which no Caffe version defines
    i = raw.rindex(bytes([5 << 3, 18]))
    raw[i + 1] = 77
    bad = caffe_pb2.NetParameter()
    bad.ParseFromString(bytes(raw))
    with pytest.raises((UnknownLayerTypeError, caffe.errors.CaffeSSLError), match="mystery"):
        upgrade_net_as_needed(bad)
        caffe.Net(bad, caffe.TEST)
    del l


def test_both_layer_and_layers_refused():
    with pytest.raises(NetGraphError, match="both"):
        _upgrade("""layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
                    layers { name: "b" type: RELU bottom: "x" top: "x" }""")


def test_batchnorm_with_three_param_specs_is_upgraded():
    net = _upgrade("""layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                        param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
                      layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 0 } }""")
    assert len(net.layer[0].param) == 0 and len(net.layer[1].param) == 1


def test_read_net_prototxt_legacy_file():
    d = need_shared("models", "legacy_v1_lenet")
    net = read_net_prototxt(d / "lenet_train_test.prototxt")
    data = [l for l in net.layer if l.type == "Data"]
    assert len(data) == 2 and all(l.transform_param.scale == np.float32(0.00390625) for l in data)
    assert not any(l.data_param.HasField("scale") for l in data)
