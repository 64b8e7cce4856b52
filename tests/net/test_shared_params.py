"""Params shared by name: PERMISSIVE shapes (Blob::ShareData keeps each layer's shape) against numpy, and the
SSL fork's rules for a non-owner's SSL settings (../shared/spec/ssl_fork.md 2.2)."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import LayerConfigError

PERMISSIVE = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" } param { name: "b1" }
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" share_mode: PERMISSIVE }
        param { name: "b2" } inner_product_param { num_output: 4 bias_filler { type: "gaussian" std: 1 } } }
"""


def _net(tmp_path, text, phase=caffe.TRAIN):
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return caffe.Net(str(p), phase)


def test_permissive_share_keeps_each_layers_shape(tmp_path):
    net = _net(tmp_path, PERMISSIVE)
    assert net.params["a"][0].data.shape == (6, 4) and net.params["b"][0].data.shape == (4, 6)
    assert len(net.learnable_params) == 3                   # w (owned by a), b1, b2
    x = np.random.default_rng(1).standard_normal((2, 4))
    net.blobs["data"].data[...] = x
    out = net.forward()["b"]
    w, b1, b2 = (np.float64(net.params[n][i].data) for n, i in (("a", 0), ("a", 1), ("b", 1)))
    a = x @ w.T + b1
    np.testing.assert_allclose(out, a @ w.reshape(4, 6).T + b2, rtol=1e-5, atol=1e-5)
    g = np.random.default_rng(2).standard_normal((2, 4))
    net.blobs["b"].diff[...] = g
    net.backward()
    ga = g @ w.reshape(4, 6)                                   # d/d a
    dw = ga.T @ x + (g.T @ a).reshape(6, 4)                    # both uses of the shared storage
    np.testing.assert_allclose(net.params["a"][0].diff, dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.params["b"][0].diff, dw.reshape(4, 6), rtol=1e-4, atol=1e-4)
    net.params["b"][0].data[...] = 0.25                        # one storage
    assert np.all(net.params["a"][0].data == 0.25)
    net.clear_param_diffs()
    assert not net.params["b"][0].diff.any()


SSL_SHARED = """
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param {{ name: "w" {owner} }}
        inner_product_param {{ num_output: 3 bias_term: false }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param {{ name: "w" {other} }}
        inner_product_param {{ num_output: 3 bias_term: false }} }}
"""
BLOCK = "block_group_lasso { xdimen: 1 ydimen: 3 block_decay_mult: 1 }"


def _owner_spec(tmp_path, owner, other):
    net = _net(tmp_path, SSL_SHARED.format(owner=owner, other=other))
    (info,) = net.learnable_params
    return net, info.spec


def test_non_owner_ssl_settings_are_adopted_when_the_owner_has_none(tmp_path):
    net, spec = _owner_spec(tmp_path, "", f'breadth_decay_mult: 2 regularization_type: "L1" {BLOCK}')
    assert spec.breadth_decay_mult == 2 and spec.regularization_type == "L1"
    assert len(spec.block_group_lasso) == 1 and spec.block_group_lasso[0].ydimen == 3
    assert not net.layer_dict["ip1"].param.param[0].HasField("breadth_decay_mult")   # the prototxt is kept


def test_equal_settings_are_accepted_and_different_ones_rejected(tmp_path):
    _, spec = _owner_spec(tmp_path, "kernel_shape_decay_mult: 1.5", "kernel_shape_decay_mult: 1.5")
    assert spec.kernel_shape_decay_mult == 1.5
    with pytest.raises(LayerConfigError, match="kernel_shape_decay_mult"):
        _owner_spec(tmp_path, "kernel_shape_decay_mult: 1.5", "kernel_shape_decay_mult: 2")
    with pytest.raises(LayerConfigError, match="duplicate block_group_lasso"):
        _owner_spec(tmp_path, BLOCK, BLOCK)


def test_decay_proto_on_a_non_owner_is_not_implemented(tmp_path):
    with pytest.raises(NotImplementedError, match="decay_proto"):
        _owner_spec(tmp_path, "", 'decay_proto: "d.binaryproto"')
