"""Net construction and the pycaffe surface, checked against Caffe's documented Net semantics and
independent numpy computations."""
import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.proto import caffe_pb2


def make_net(tmp_path, text, *args, **kw):
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return caffe.Net(str(p), *args, **kw)


IP_NET = """
name: "t"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { lr_mult: 1 decay_mult: 2 } param { lr_mult: 0 }
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        include { phase: TRAIN } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" include { phase: TEST } }
layer { name: "staged" type: "Softmax" bottom: "ip" top: "staged" include { stage: "extra" } }
"""


def test_phase_and_stage_rules_filter_layers(tmp_path):
    train = make_net(tmp_path, IP_NET, caffe.TRAIN)
    test = make_net(tmp_path, IP_NET, caffe.TEST)
    staged = make_net(tmp_path, IP_NET, caffe.TEST, stages=["extra"])
    assert train._layer_names == ["data", "ip", "loss"]
    assert test._layer_names == ["data", "ip", "prob"]
    assert staged._layer_names == ["data", "ip", "prob", "staged"]
    # an input nobody consumes is a net output, as in Caffe
    assert train.outputs == ["loss"] and test.outputs == ["label", "prob"]
    assert train.inputs == ["data", "label"]


def test_param_specs_recorded_and_fillers_applied(tmp_path):
    net = make_net(tmp_path, IP_NET, caffe.TRAIN)
    w, b = net.learnable_params
    assert (w.lr_mult, w.decay_mult) == (1, 2)
    assert (b.lr_mult, b.decay_mult) == (0, 1)  # decay_mult from the schema default
    assert np.allclose(net.params["ip"][1].data, 0.1)
    assert not b.tensor.requires_grad  # lr_mult 0: Caffe computes no diff for it


def test_loss_matches_numpy_and_blob_writes_go_through(tmp_path):
    net = make_net(tmp_path, IP_NET, caffe.TRAIN)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 4, 2, 1], np.float32)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    out = net.forward()
    W = net.params["ip"][0].data.astype(np.float64)
    z = x @ W.T + 0.1
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = -logp[np.arange(4), y.astype(int)].mean()
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    # the loss top's diff starts at its loss weight, as Caffe's SetLossWeights does
    assert net.blobs["loss"].diff == pytest.approx(1.0)
    net.backward()
    p = np.exp(logp)
    p[np.arange(4), y.astype(int)] -= 1
    assert np.allclose(net.params["ip"][0].diff, p.T @ x / 4, atol=1e-6)


def test_param_diffs_accumulate_until_cleared(tmp_path):
    net = make_net(tmp_path, IP_NET, caffe.TRAIN)
    net.blobs["data"].data[...] = 1.0
    net.forward()
    net.backward()
    g1 = net.params["ip"][0].diff.copy()
    net.forward()
    net.backward()
    assert np.allclose(net.params["ip"][0].diff, 2 * g1)
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any()


FANOUT = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "Power" bottom: "data" top: "a" power_param { scale: 2 } }
layer { name: "b" type: "Power" bottom: "data" top: "b" power_param { scale: 3 } }
layer { name: "relu" type: "ReLU" bottom: "b" top: "b" }
"""


def test_one_blob_feeding_two_layers_sums_gradients_and_inplace_diff(tmp_path):
    if "Power" not in caffe.layer_type_list():
        pytest.skip("Power layer not registered yet")
    net = make_net(tmp_path, FANOUT, caffe.TEST)
    x = np.array([[1, -2, 3], [-1, 2, -3]], np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    assert net.outputs == ["a", "b"]
    assert np.allclose(net.blobs["b"].data, np.maximum(3 * x, 0))
    net.blobs["a"].diff[...] = 1
    net.blobs["b"].diff[...] = 1
    net.backward()
    # Split semantics: d/dx = 2*1 + 3*1[3x>0]
    assert np.allclose(net.blobs["data"].diff, 2 + 3 * (x > 0))


SHARED = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
"""


def test_param_sharing_by_name(tmp_path):
    net = make_net(tmp_path, SHARED, caffe.TEST)
    assert len(net.learnable_params) == 2  # owners only
    net.params["ip1"][0].data[...] = 0.5
    assert np.all(net.params["ip2"][0].data == 0.5)


def test_forward_start_end_and_kwargs(tmp_path):
    net = make_net(tmp_path, SHARED, caffe.TEST)
    x = np.ones((2, 3), np.float32)
    out = net.forward(data=x, end="ip1")
    assert list(out) == ["ip1"]
    W = net.params["ip1"][0].data
    assert np.allclose(out["ip1"], x @ W.T, atol=1e-6)
    out2 = net.forward(start="ip2")
    assert np.allclose(out2["ip2"], out["ip1"] @ W.T, atol=1e-5)


def test_propagate_down_false_blocks_gradient(tmp_path):
    text = """force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" propagate_down: false
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }"""
    net = make_net(tmp_path, text, caffe.TEST)
    net.forward(data=np.ones((2, 3), np.float32))
    net.blobs["ip"].diff[...] = 1
    net.backward()
    assert not net.blobs["data"].diff.any()
    assert net.params["ip"][0].diff.any()


def test_deprecated_input_fields_become_input_layer(tmp_path):
    text = """input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3
layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }"""
    net = make_net(tmp_path, text, caffe.TEST)
    assert net.inputs == ["data"]
    assert net.blobs["data"].shape == (1, 2, 3, 3)


def test_save_and_reload_round_trip_is_bit_exact(tmp_path):
    net = make_net(tmp_path, SHARED, caffe.TEST)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    net2 = make_net(tmp_path, SHARED, caffe.TEST, weights=str(path))
    for name in net.params:
        for a, b in zip(net.params[name], net2.params[name]):
            assert a.data.tobytes() == b.data.tobytes()


def test_reshape_propagates_input_shape(tmp_path):
    net = make_net(tmp_path, SHARED, caffe.TEST)
    net.blobs["data"].reshape(5, 3)
    net.reshape()
    assert net.blobs["ip2"].shape == (5, 3)


def test_pycaffe_surface_names():
    assert caffe.TRAIN == caffe_pb2.TRAIN and caffe.TEST == caffe_pb2.TEST
    types = caffe.layer_type_list()
    for t in ("Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "Softmax", "SoftmaxWithLoss",
              "Accuracy"):
        assert t in types
    caffe.set_mode_cpu()
    caffe.set_device(0)


def test_float64_net(tmp_path):
    net = make_net(tmp_path, SHARED, caffe.TEST, dtype=torch.float64)
    out = net.forward(data=np.ones((2, 3)))
    assert out["ip2"].dtype == np.float64
