"""Neuron layers: golden cases from real Caffe, numpy re-computations of Caffe's formulas, float64
finite-difference gradients, and the typed errors for bad parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import LayerConfigError, ShapeMismatchError
from tests.golden import GOLDEN, case_names, need_shared, run_layer_case
from tests.layers.gradcheck import build_net, check_layer_gradients

NEURON_TYPES = ("ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL", "Threshold",
                "Dropout")
GOLDEN_CASES = [c for c in case_names(types=NEURON_TYPES) if c != "dropout_train_stat"]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_neuron(name):
    run_layer_case(name)


def test_golden_neuron_cases_present():
    need_shared("golden")
    assert {"relu", "prelu_channelwise", "sigmoid", "bnll", "threshold_0.2"} <= set(GOLDEN_CASES)


def forward(layer, x, phase=caffe.TEST, dtype=torch.float64):
    net, arrays, tops, _ = build_net(layer, [np.asarray(x, dtype=np.float64)], phase, dtype=dtype)
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    net.forward()
    return net.blobs[tops[0]].data.astype(np.float64).copy(), net


RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 4, 5))
XPOS = np.abs(X) + 0.3


def F(v):
    """A prototxt float as the layer sees it (float32)."""
    return float(np.float32(v))


# -- forward against numpy (Caffe's formulas) -----------------------------------------------------------

@pytest.mark.parametrize("text,x,expect", [
    ('type: "ReLU" bottom: "x" top: "y" relu_param { negative_slope: 0.2 }', X,
     lambda x: np.maximum(x, 0) + F(0.2) * np.minimum(x, 0)),
    ('type: "ELU" bottom: "x" top: "y" elu_param { alpha: 0.5 }', X,
     lambda x: np.maximum(x, 0) + 0.5 * (np.exp(np.minimum(x, 0)) - 1)),
    ('type: "Sigmoid" bottom: "x" top: "y"', X, lambda x: 1 / (1 + np.exp(-x))),
    ('type: "TanH" bottom: "x" top: "y"', X, np.tanh),
    ('type: "AbsVal" bottom: "x" top: "y"', X, np.abs),
    ('type: "BNLL" bottom: "x" top: "y"', X * 30, lambda x: np.logaddexp(0, x)),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 0.5 scale: 2 shift: 0.1 }', XPOS,
     lambda x: (F(0.1) + 2 * x) ** 0.5),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 3 scale: -1.5 }', X, lambda x: (-1.5 * x) ** 3),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 1 scale: 3 shift: -1 }', X, lambda x: 3 * x - 1),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 0 scale: 3 shift: 2 }', X,
     lambda x: np.ones_like(x)),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 2 scale: 0 shift: 3 }', X,
     lambda x: np.full_like(x, 9.0)),
    ('type: "Exp" bottom: "x" top: "y" exp_param { base: 2 scale: 0.5 shift: 0.1 }', X,
     lambda x: 2.0 ** (F(0.1) + 0.5 * x)),
    ('type: "Exp" bottom: "x" top: "y" exp_param { scale: -1.5 shift: 0.25 }', X,
     lambda x: np.exp(0.25 - 1.5 * x)),
    ('type: "Log" bottom: "x" top: "y" log_param { base: 2 scale: 0.5 shift: 1 }', XPOS,
     lambda x: np.log2(1 + 0.5 * x)),
    ('type: "Log" bottom: "x" top: "y"', XPOS, np.log),
    ('type: "Threshold" bottom: "x" top: "y" threshold_param { threshold: 0.2 }', X,
     lambda x: (x > F(0.2)).astype(np.float64)),
    ('type: "Clip" bottom: "x" top: "y" clip_param { min: -0.5 max: 0.7 }', X, lambda x: np.clip(x, -0.5, F(0.7))),
    ('type: "Swish" bottom: "x" top: "y" swish_param { beta: 1.5 }', X, lambda x: x / (1 + np.exp(-1.5 * x))),
    ('type: "Swish" bottom: "x" top: "y"', X, lambda x: x / (1 + np.exp(-x))),
    ('type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.3 }', X, lambda x: x),
])
def test_forward_matches_caffe_formula(text, x, expect):
    y, _ = forward(text, x)
    np.testing.assert_allclose(y, expect(x), rtol=1e-12, atol=1e-12)


def test_prelu_forward_and_default_filler():
    y, net = forward('type: "PReLU" bottom: "x" top: "y"', X)
    slopes = net.params["under_test"][0].data
    assert slopes.shape == (3,)
    np.testing.assert_array_equal(slopes, 0.25)  # Caffe's default filler: constant 0.25
    np.testing.assert_allclose(y, np.where(X > 0, X, 0.25 * X))
    _, net = forward('type: "PReLU" bottom: "x" top: "y" prelu_param { channel_shared: true }', X)
    assert net.params["under_test"][0].data.shape == ()  # Caffe: a 0-axis blob


# -- gradients (float64 finite differences) --------------------------------------------------------------

@pytest.mark.parametrize("text,x", [
    ('type: "ReLU" bottom: "x" top: "y"', X),
    ('type: "ReLU" bottom: "x" top: "x" relu_param { negative_slope: 0.1 }', X),
    ('type: "PReLU" bottom: "x" top: "y" prelu_param { filler { type: "uniform" min: -0.8 max: 0.8 } }', X),
    ('type: "PReLU" bottom: "x" top: "y" prelu_param { channel_shared: true filler { type: "constant" value: 0.3 } }',
     X),
    ('type: "ELU" bottom: "x" top: "y" elu_param { alpha: 0.7 }', X),
    ('type: "Sigmoid" bottom: "x" top: "y"', X),
    ('type: "TanH" bottom: "x" top: "y"', X),
    ('type: "AbsVal" bottom: "x" top: "y"', X),
    ('type: "BNLL" bottom: "x" top: "y"', X * 5),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 2 scale: 0.5 shift: 1 }', X),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 0.5 scale: 2 shift: 0.1 }', XPOS),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 3 scale: 0.7 }', X),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 1 scale: 0.7 shift: 2 }', X),
    ('type: "Power" bottom: "x" top: "y" power_param { power: 0 }', X),
    ('type: "Exp" bottom: "x" top: "y" exp_param { base: 2 scale: 0.5 shift: 0.1 }', X),
    ('type: "Exp" bottom: "x" top: "y"', X),
    ('type: "Log" bottom: "x" top: "y" log_param { base: 2 scale: 0.5 shift: 1 }', XPOS),
    ('type: "Log" bottom: "x" top: "y"', XPOS),
    ('type: "Clip" bottom: "x" top: "y" clip_param { min: -0.5 max: 0.7 }', X),
    ('type: "Swish" bottom: "x" top: "y" swish_param { beta: 1.5 }', X),
    ('type: "Dropout" bottom: "x" top: "y"', X),  # TEST phase: the identity
])
def test_gradients_finite_differences(text, x):
    check_layer_gradients(text, [x])


def test_relu_gradient_at_zero_is_caffes():
    # Caffe: dy/dx = (x > 0) + slope * (x <= 0): the slope at exactly 0
    x = np.array([[-1.0, 0.0, 2.0]])
    net, arrays, tops, _ = build_net('type: "ReLU" bottom: "x" top: "y" relu_param { negative_slope: 0.25 }', [x])
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs[tops[0]].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, [[0.25, 0.25, 1.0]])


def test_threshold_has_no_backward_and_force_backward_skips_it():
    x = X.copy()
    net, arrays, tops, _ = build_net('type: "Threshold" bottom: "x" top: "y" threshold_param { threshold: 0.1 }', [x])
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs[tops[0]].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, 0)


# -- Dropout in TRAIN ------------------------------------------------------------------------------------

def _check_dropout_structure(x, y, p):
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    return 1 - kept.mean()


def test_golden_dropout_train_stat():
    d = need_shared("golden", "dropout_train_stat")
    x = np.load(d / "inputs.npz")["data"]
    caffe_out = np.load(d / "outputs.npz")["out"]
    p = 0.3
    # Caffe's own output has the structure we reproduce ...
    _check_dropout_structure(x.astype(np.float64), caffe_out.astype(np.float64), p)
    # ... and ours is Caffe's, mask and all: the case ran right after set_random_seed(1701) (its filler_seed),
    # and the mask is the first draws of Caffe's stream
    caffe.set_random_seed(1701)
    net = caffe.Net(str(d / "net.prototxt"), caffe.TRAIN)
    net.blobs["data"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["out"].data, caffe_out)


def test_dropout_train_statistics_and_gradient_through_mask():
    caffe.set_random_seed(1)
    p = 0.3
    x = np.random.default_rng(3).standard_normal((50, 40, 50)) + 5.0  # no exact zeros in x
    y, net = forward(f'type: "Dropout" bottom: "x" top: "y" dropout_param {{ dropout_ratio: {p} }}', x,
                     phase=caffe.TRAIN)
    frac = _check_dropout_structure(x, y, p)
    assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / x.size)
    # the gradient goes through the same mask, scaled by 1 / (1 - p)
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, (y != 0) / (1 - p))


# -- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,shapes,err", [
    ('type: "ReLU" bottom: "x" bottom: "z" top: "y"', [(2, 3), (2, 3)], LayerConfigError),
    ('type: "Sigmoid" bottom: "x" top: "y" top: "z"', [(2, 3)], LayerConfigError),
    ('type: "PReLU" bottom: "x" top: "y"', [(5,)], ShapeMismatchError),
    ('type: "Exp" bottom: "x" top: "y" exp_param { base: -2 }', [(2, 3)], LayerConfigError),
    ('type: "Log" bottom: "x" top: "y" log_param { base: 0 }', [(2, 3)], LayerConfigError),
    ('type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 1 }', [(2, 3)], LayerConfigError),
    ('type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: -0.1 }', [(2, 3)], LayerConfigError),
    ('type: "Clip" bottom: "x" top: "y" clip_param { min: -1 }', [(2, 3)], LayerConfigError),
])
def test_bad_configuration_raises_typed_error(text, shapes, err):
    with pytest.raises(err, match="under_test"):
        build_net(text, shapes)


def test_prelu_reshape_to_other_channel_count_raises():
    net, *_ = build_net('type: "PReLU" bottom: "x" top: "y"', [(2, 3, 4)])
    net.blobs["x"].reshape(2, 5, 4)
    with pytest.raises(ShapeMismatchError, match="channels"):
        net.reshape()


def test_golden_dir_is_where_expected():
    assert GOLDEN.name == "golden"
