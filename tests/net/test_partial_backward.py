"""Net.backward(start=, end=) -- Caffe's BackwardFromTo (pycaffe's DeepDream / visualisation idiom) --
against the whole backward of a net truncated at ``start`` (another graph, same weights) and numpy."""
import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import CaffeSSLError, NetGraphError

HEAD = """
name: "pb"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
"""
TAIL = """
layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" }
"""
TARGET = 'layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 3 } } }\n'


def _nets(tmp_path):
    full_p, head_p = tmp_path / "full.prototxt", tmp_path / "head.prototxt"
    full_p.write_text(HEAD.replace('layer { name: "conv1"', TARGET + 'layer { name: "conv1"', 1) + TAIL)
    head_p.write_text(HEAD)
    full, head = caffe.Net(str(full_p), caffe.TRAIN), caffe.Net(str(head_p), caffe.TRAIN)
    for name in ("conv1", "ip1"):
        for a, b in zip(full.params[name], head.params[name]):
            b.data[...] = a.data
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    for net in (full, head):
        net.blobs["data"].data[...] = x
    full.blobs["target"].data[...] = rng.standard_normal((2, 3))
    return full, head, rng


def test_backward_from_a_middle_layer_equals_the_truncated_net(tmp_path):
    full, head, rng = _nets(tmp_path)
    full.forward()
    head.forward()
    np.testing.assert_allclose(full.blobs["ip1"].data, np.maximum(head.blobs["ip1"].data, 0), rtol=1e-6)
    g = rng.standard_normal((2, 5)).astype(np.float32)
    full.blobs["ip1"].diff[...] = g
    got = full.backward(start="ip1")
    head.blobs["ip1"].diff[...] = g
    want = head.backward()
    np.testing.assert_allclose(got["data"], want["data"], rtol=1e-5, atol=1e-6)
    for name in ("pool1", "conv1"):
        np.testing.assert_allclose(full.blobs[name].diff, head.blobs[name].diff, rtol=1e-5, atol=1e-6)
    for name in ("conv1", "ip1"):
        for a, b in zip(full.params[name], head.params[name]):
            np.testing.assert_allclose(a.diff, b.diff, rtol=1e-5, atol=1e-6)
    assert not full.params["ip2"][0].diff.any()          # above start: not run
    np.testing.assert_array_equal(full.blobs["ip1"].diff, g)  # start's top keeps the diff it was given


def test_backward_start_end_stops_at_end_bottoms(tmp_path):
    full, _, rng = _nets(tmp_path)
    full.forward()
    g = rng.standard_normal((2, 5)).astype(np.float32)
    full.blobs["ip1"].diff[...] = g
    got = full.backward(start="ip1", end="ip1")
    w = full.params["ip1"][0].data
    np.testing.assert_allclose(got["pool1"], (g @ w).reshape(2, 4, 2, 2), rtol=1e-5, atol=1e-6)
    pooled = full.blobs["pool1"].data.reshape(2, -1)
    np.testing.assert_allclose(full.params["ip1"][0].diff, g.T @ pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.params["ip1"][1].diff, g.sum(0), rtol=1e-5, atol=1e-6)
    assert not full.params["conv1"][0].diff.any() and not full.blobs["data"].diff.any()   # below end


def test_backward_from_the_loss_layer_equals_the_whole_backward(tmp_path):
    full, _, _ = _nets(tmp_path)
    full.forward()
    whole = full.backward()["data"].copy()
    grads = [p.diff.copy() for p in full.params["conv1"]]
    full.clear_param_diffs()
    part = full.backward(start="loss")["data"]
    np.testing.assert_allclose(part, whole, rtol=1e-6)
    for p, g in zip(full.params["conv1"], grads):
        np.testing.assert_allclose(p.diff, g, rtol=1e-6)


def test_backward_range_errors(tmp_path):
    full, _, _ = _nets(tmp_path)
    full.forward()
    with pytest.raises(NetGraphError, match="comes after"):
        full.backward(start="conv1", end="ip2")
    with pytest.raises(NetGraphError, match="no layer named 'nope'"):
        full.backward(start="nope")
    full.forward(end="conv1")
    with pytest.raises(CaffeSSLError, match="needs a forward"):
        full.backward(start="ip2")
    with torch.no_grad():
        full.forward()


def test_deepdream_idiom_forward_end_then_backward_start(tmp_path):
    """net.forward(end=L); net.blobs[L].diff[...] = g; net.backward(start=L) -- the pycaffe DeepDream loop."""
    full, head, rng = _nets(tmp_path)
    g = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    full.forward(end="relu1")
    full.blobs["conv1"].diff[...] = g
    got = full.backward(start="relu1")["data"]
    head.forward()
    relu_mask = head.blobs["conv1"].data > 0
    head.blobs["conv1"].diff[...] = g * relu_mask            # through relu1 by hand, then conv1 alone
    want = head.backward(start="conv1")["data"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got).sum() > 0


def test_backward_start_after_a_forward_from_a_middle_layer(tmp_path):
    """forward(start=ip1) records ip1.. only: backward(start=ip2) reaches ip1's bottom (pool1), not below."""
    full, _, rng = _nets(tmp_path)
    full.forward()
    full.forward(start="ip1")
    g = rng.standard_normal((2, 3)).astype(np.float32)
    full.blobs["ip2"].diff[...] = g
    full.backward(start="ip2")
    w2 = full.params["ip2"][0].data
    d_ip1 = (g @ w2) * (full.blobs["ip1"].data > 0)
    np.testing.assert_allclose(full.blobs["ip1"].diff, d_ip1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.params["ip1"][0].diff, d_ip1.T @ full.blobs["pool1"].data.reshape(2, -1),
                               rtol=1e-5, atol=1e-6)
    assert not full.params["conv1"][0].diff.any()
