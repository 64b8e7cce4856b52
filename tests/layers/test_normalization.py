"""BatchNorm, Scale, Bias, MVN against real Caffe (golden), numpy formulas, finite differences and
Caffe's parameter checks."""
import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import LayerConfigError, ShapeMismatchError
from tests.golden import case_names, run_layer_case
from tests.layers.gradcheck import build_net, check_layer_gradients


@pytest.mark.parametrize("name", case_names(prefixes=("batchnorm_",)) or ["batchnorm_train"])
def test_golden_batchnorm(name):
    run_layer_case(name)   # batchnorm_train also checks params_after_forward (the updated statistics)


@pytest.mark.parametrize("name", case_names(prefixes=("mvn_",)) or ["mvn_default"])
def test_golden_mvn(name):
    run_layer_case(name)


@pytest.mark.parametrize("name", case_names(prefixes=("scale_", "bias_")) or ["scale_axis1_bias"])
def test_golden_scale_bias(name):
    run_layer_case(name)


# -- BatchNorm ------------------------------------------------------------------------------------------

def test_batchnorm_adds_lr_mult_zero_specs_like_caffe():
    net, _, _, _ = build_net('name: "bn" type: "BatchNorm" bottom: "x" top: "y"', [(2, 3, 4, 4)])
    infos = [p for p in net.learnable_params if p.layer_name == "bn"]
    assert [p.lr_mult for p in infos] == [0, 0, 0]
    assert [tuple(p.tensor.shape) for p in infos] == [(3,), (3,), (1,)]
    assert len(net.layer_dict["bn"].param.param) == 3


def test_batchnorm_rejects_learnable_statistics():
    with pytest.raises(LayerConfigError, match="bn"):
        build_net('name: "bn" type: "BatchNorm" bottom: "x" top: "y" param { lr_mult: 0 } param { lr_mult: 1 }',
                  [(2, 3, 4, 4)])


def test_batchnorm_train_updates_statistics_numpy():
    x1 = np.random.default_rng(1).standard_normal((4, 3, 2, 5)) * 2 + 1
    x2 = np.random.default_rng(2).standard_normal((4, 3, 2, 5))
    net, _, _, _ = build_net('name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { '
                             'moving_average_fraction: 0.75 eps: 0.0625 }', [x1], phase=caffe.TRAIN)
    assert net.layer_dict["bn"].use_global_stats is False   # default: phase == TEST
    b = np.zeros(3), np.zeros(3), np.zeros(1)
    for x in (x1, x2):
        net.blobs["x"].data[...] = x
        net.forward()
        mu = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        m = x.size / 3
        b = (0.75 * b[0] + mu, 0.75 * b[1] + m / (m - 1) * var, 0.75 * b[2] + 1)
        want = (x - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.0625)
        np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-10, atol=1e-12)
        for i in range(3):
            np.testing.assert_allclose(net.params["bn"][i].data, b[i], rtol=1e-12)


def test_batchnorm_global_stats_divides_by_scale_factor():
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    net, _, _, _ = build_net('name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.125 }',
                             [x], phase=caffe.TEST)
    p = net.params["bn"]
    net.blobs["x"].data[...] = x
    net.forward()  # b2 = 0: statistics are 0
    np.testing.assert_allclose(net.blobs["y"].data, x / np.sqrt(0.125), rtol=1e-12)
    p[0].data[...] = [1, 2, 3]
    p[1].data[...] = [4, 5, 6]
    p[2].data[...] = 2
    net.forward()
    want = (x - np.array([0.5, 1, 1.5])[None, :, None]) / np.sqrt(np.array([2, 2.5, 3])[None, :, None] + 0.125)
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-12)
    np.testing.assert_array_equal(p[2].data, [2])   # no update with global stats


@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (5, 3), (6,)])
def test_batchnorm_train_gradients(shape):
    check_layer_gradients('type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.01 }', [shape],
                          phase=caffe.TRAIN)


def test_batchnorm_test_gradients():
    check_layer_gradients('type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.5 }', [(2, 3, 4)])


def test_batchnorm_channel_change_on_reshape_raises():
    net, _, _, _ = build_net('name: "bn" type: "BatchNorm" bottom: "x" top: "y"', [(2, 3, 4, 4)])
    net.blobs["x"].reshape(2, 4, 4, 4)
    with pytest.raises(ShapeMismatchError, match="bn"):
        net.reshape()


# -- Scale / Bias ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sp,shapes", [
    ("axis: 1 num_axes: 2 bias_term: true", [(2, 3, 4, 2)]),
    ("axis: -1 bias_term: true", [(2, 3, 4)]),
    ("num_axes: 0 bias_term: true", [(2, 3)]),
    ("axis: 0 num_axes: -1", [(2, 3)]),
    ("axis: 1 bias_term: true", [(2, 3, 4), (3, 4)]),
    ("axis: 0", [(2, 3, 4), ()]),
])
def test_scale_gradients(sp, shapes):
    second = 'bottom: "s" ' if len(shapes) > 1 else ""
    text = (f'type: "Scale" bottom: "x" {second}top: "y" scale_param '
            f'{{ {sp} filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')
    check_layer_gradients(text, shapes)


def test_scale_defaults_and_param_layout():
    net, arrays, _, _ = build_net('name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true }',
                                  [(2, 3, 4)])
    assert [b.data.tolist() for b in net.params["s"]] == [[1, 1, 1], [0, 0, 0]]   # constant 1 / constant 0
    net2, arrays2, _, _ = build_net('name: "s" type: "Scale" bottom: "x" bottom: "t" top: "y" '
                                    'scale_param { bias_term: true axis: 1 }', [(2, 3, 4), (3, 4)])
    assert [b.shape for b in net2.params["s"]] == [(3, 4)]   # two bottoms: blob 0 is the bias
    net2.blobs["x"].data[...] = arrays2["x"]
    net2.blobs["t"].data[...] = arrays2["t"]
    net2.forward()
    np.testing.assert_allclose(net2.blobs["y"].data, arrays2["x"] * arrays2["t"][None], rtol=1e-12)


@pytest.mark.parametrize("bp,shapes", [
    ("axis: 1 num_axes: 2 filler { type: \"gaussian\" }", [(2, 3, 4, 2)]),
    ("num_axes: 0", [(2, 3)]),
    ("axis: 2", [(2, 3, 4), (4,)]),
    ("axis: 0", [(2, 3, 4), (2, 3)]),
])
def test_bias_gradients(bp, shapes):
    second = 'bottom: "b" ' if len(shapes) > 1 else ""
    text = (f'type: "Bias" bottom: "x" {second}top: "y" bias_param '
            f'{{ {bp} }}')
    check_layer_gradients(text, shapes)


@pytest.mark.parametrize("text,shapes,err", [
    ('type: "Scale" bottom: "x" bottom: "s" bottom: "t" top: "y"', [(2, 3), (3,), (3,)], LayerConfigError),
    ('type: "Bias" bottom: "x" top: "y" top: "z"', [(2, 3)], LayerConfigError),
    ('type: "BatchNorm" bottom: "x" bottom: "z" top: "y"', [(2, 3), (2, 3)], LayerConfigError),
    ('type: "MVN" bottom: "x" top: "y" top: "z"', [(2, 3, 4)], LayerConfigError),
    ('type: "Scale" bottom: "x" top: "y" scale_param { num_axes: -2 }', [(2, 3)], LayerConfigError),
    ('type: "Bias" bottom: "x" top: "y" bias_param { num_axes: -3 }', [(2, 3)], LayerConfigError),
    ('type: "Scale" bottom: "x" top: "y" scale_param { axis: 1 num_axes: 3 }', [(2, 3, 4)], ShapeMismatchError),
    ('type: "Scale" bottom: "x" top: "y" scale_param { axis: 3 }', [(2, 3, 4)], ShapeMismatchError),
    ('type: "Scale" bottom: "x" bottom: "s" top: "y"', [(2, 3, 4), (4,)], ShapeMismatchError),
    ('type: "Bias" bottom: "x" bottom: "b" top: "y" bias_param { axis: 1 }', [(2, 3, 4), (3, 5)],
     ShapeMismatchError),
    ('type: "MVN" bottom: "x" top: "y"', [(4,)], ShapeMismatchError),
])
def test_bad_configurations_raise_typed_errors(text, shapes, err):
    with pytest.raises(err, match="under_test"):
        build_net(text, shapes, dtype=torch.float32)


# -- MVN ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mp", ["", "normalize_variance: false", "across_channels: true",
                                "across_channels: true normalize_variance: false"])
def test_mvn_gradients(mp):
    check_layer_gradients(f'type: "MVN" bottom: "x" top: "y" mvn_param {{ {mp} }}', [(2, 3, 3, 4)])


def test_mvn_eps_after_sqrt_and_caffe_backward():
    """Forward: (x - mean) / (std + eps). Backward: Caffe's (dy - mean(dy) - mean(dy*y)*y) / (std + eps)."""
    x = np.random.default_rng(4).standard_normal((2, 3, 5))
    net, _, _, _ = build_net('type: "MVN" bottom: "x" top: "y" mvn_param { across_channels: true eps: 0.5 }', [x])
    net.blobs["x"].data[...] = x
    net.forward()
    r = x.reshape(2, -1)
    z = r - r.mean(1, keepdims=True)
    d = np.sqrt((z ** 2).mean(1, keepdims=True)) + 0.5
    y = z / d
    np.testing.assert_allclose(net.blobs["y"].data, y.reshape(x.shape), rtol=1e-12)
    dy = np.random.default_rng(5).standard_normal(r.shape)
    net.blobs["y"].diff[...] = dy.reshape(x.shape)
    net.backward()
    g = (dy - dy.mean(1, keepdims=True) - (dy * y).mean(1, keepdims=True) * y) / d
    np.testing.assert_allclose(net.blobs["x"].diff, g.reshape(x.shape), rtol=1e-10, atol=1e-12)
