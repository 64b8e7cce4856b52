"""Common layers (InnerProduct, Softmax and the structural layers): golden cases from real Caffe, numpy
re-computations, float64 finite-difference gradients and typed errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import LayerConfigError, ShapeMismatchError
from caffessl.proto import caffe_pb2
from tests.golden import case_names, need_shared, run_layer_case
from tests.layers.gradcheck import build_net, check_layer_gradients

COMMON_TYPES = ("InnerProduct", "Concat", "Slice", "Split", "Flatten", "Reshape", "Eltwise", "Softmax", "ArgMax",
                "Tile", "Reduction", "Embed", "BatchReindex")


@pytest.mark.parametrize("name", case_names(prefixes=("ip_", "concat_", "slice_", "split", "flatten", "reshape_",
                                                      "eltwise_", "softmax_", "argmax_", "tile_", "reduction_",
                                                      "embed", "batchreindex"), types=COMMON_TYPES))
def test_golden_common(name):
    run_layer_case(name)


def test_golden_common_cases_present():
    need_shared("golden")
    names = set(case_names(types=COMMON_TYPES))
    assert {"ip_transpose", "concat_axis1", "eltwise_prod3", "argmax_axis1_top2_outmax", "embed"} <= names


RNG = np.random.default_rng(11)
X = RNG.standard_normal((2, 3, 4, 5))


def run(layer, inputs, phase=caffe.TEST):
    net, arrays, tops, name = build_net(layer, [np.asarray(a, dtype=np.float64) if not isinstance(a, tuple) else a
                                                for a in inputs], phase)
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    net.forward()
    return [net.blobs[t].data.copy() for t in tops], net, tops


# -- forward against numpy -------------------------------------------------------------------------------

def test_concat_and_legacy_concat_dim():
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 5, 4))
    (y,), *_ = run('type: "Concat" bottom: "a" bottom: "b" top: "y"', [a, b])
    np.testing.assert_array_equal(y, np.concatenate([a, b], 1))
    c = RNG.standard_normal((2, 3, 7))
    (y,), *_ = run('type: "Concat" bottom: "a" bottom: "c" top: "y" concat_param { axis: -1 }', [a, c])
    np.testing.assert_array_equal(y, np.concatenate([a, c], 2))
    (y,), *_ = run('type: "Concat" bottom: "a" bottom: "c" top: "y" concat_param { concat_dim: 2 }', [a, c])
    np.testing.assert_array_equal(y, np.concatenate([a, c], 2))
    (y,), *_ = run('type: "Concat" bottom: "a" top: "y"', [a])
    np.testing.assert_array_equal(y, a)


def test_slice_points_even_and_legacy_slice_dim():
    (p, q, r), *_ = run('type: "Slice" bottom: "x" top: "p" top: "q" top: "r" '
                        'slice_param { axis: 3 slice_point: 1 slice_point: 4 }', [X])
    np.testing.assert_array_equal(p, X[..., :1])
    np.testing.assert_array_equal(q, X[..., 1:4])
    np.testing.assert_array_equal(r, X[..., 4:])
    (p, q), *_ = run('type: "Slice" bottom: "x" top: "p" top: "q" slice_param { slice_dim: 2 }', [X])
    np.testing.assert_array_equal(p, X[:, :, :2])
    np.testing.assert_array_equal(q, X[:, :, 2:])


def test_split_copies_and_sums_gradients():
    (p, q), net, tops = run('type: "Split" bottom: "x" top: "p" top: "q"', [X])
    np.testing.assert_array_equal(p, X)
    np.testing.assert_array_equal(q, X)
    net.blobs["p"].diff[...] = 1.0
    net.blobs["q"].diff[...] = 2.5
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, 3.5)


@pytest.mark.parametrize("param,shape", [("", (2, 60)), ("flatten_param { axis: 2 }", (2, 3, 20)),
                                         ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
                                         ("flatten_param { axis: 0 end_axis: -2 }", (24, 5))])
def test_flatten_shapes(param, shape):
    (y,), *_ = run(f'type: "Flatten" bottom: "x" top: "y" {param}', [X])
    np.testing.assert_array_equal(y, X.reshape(shape))


@pytest.mark.parametrize("param,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: -1 dim: 0 dim: 4 }", (10, 3, 4)),  # the 0 copies bottom axis 1; -1 takes the rest
    ("axis: 1 num_axes: 2 shape { dim: -1 }", (2, 12, 5)),
    ("axis: -1 num_axes: 0 shape { dim: 1 }", (2, 3, 4, 5, 1)),
    ("axis: 2 shape { dim: 20 }", (2, 3, 20)),
    ("shape { dim: 6 dim: 4 dim: 5 }", (6, 4, 5)),
])
def test_reshape(param, shape):
    (y,), *_ = run(f'type: "Reshape" bottom: "x" top: "y" reshape_param {{ {param} }}', [X])
    np.testing.assert_array_equal(y, X.reshape(shape))


def test_eltwise_sum_prod_max():
    a, b, c = (RNG.standard_normal((2, 3, 4)) for _ in range(3))
    (y,), *_ = run('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" '
                   'eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }', [a, b, c])
    np.testing.assert_allclose(y, a - 0.5 * b + 2 * c)
    (y,), *_ = run('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: PROD }',
                   [a, b, c])
    np.testing.assert_allclose(y, a * b * c)
    (y,), *_ = run('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: MAX }',
                   [a, b, c])
    np.testing.assert_array_equal(y, np.maximum(np.maximum(a, b), c))


def test_eltwise_max_gradient_routing_on_ties_is_caffes():
    # Caffe: between bottoms 0 and 1 a tie goes to bottom 1 (a > b ? 0 : 1); a later bottom takes over only
    # when strictly greater, so a tie with the running max stays with the earlier bottom.
    a = np.array([[1.0, 2.0, 0.0, 5.0]])
    b = np.array([[1.0, 1.0, 3.0, 5.0]])
    c = np.array([[0.0, 2.0, 3.0, 6.0]])
    (y,), net, tops = run('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" '
                          'eltwise_param { operation: MAX }', [a, b, c])
    np.testing.assert_array_equal(y, [[1, 2, 3, 6]])
    net.blobs["y"].diff[...] = [[10, 20, 30, 40]]
    net.backward()
    np.testing.assert_array_equal(net.blobs["a"].diff, [[0, 20, 0, 0]])
    np.testing.assert_array_equal(net.blobs["b"].diff, [[10, 0, 30, 0]])
    np.testing.assert_array_equal(net.blobs["c"].diff, [[0, 0, 0, 40]])


def test_eltwise_unstable_prod_grad_is_top_over_bottom():
    a = np.array([[2.0, 0.0, -1.0]])
    b = np.array([[3.0, 4.0, 0.5]])
    (y,), net, tops = run('type: "Eltwise" bottom: "a" bottom: "b" top: "y" '
                          'eltwise_param { operation: PROD stable_prod_grad: false }', [a, b])
    net.blobs["y"].diff[...] = 1
    with np.errstate(invalid="ignore", divide="ignore"):
        net.backward()
        expect_a = y / a
    # Caffe's unstable form: top * top_diff / bottom (NaN where the bottom is 0)
    np.testing.assert_array_equal(np.isnan(net.blobs["a"].diff), np.isnan(expect_a))
    np.testing.assert_allclose(net.blobs["a"].diff[:, [0, 2]], expect_a[:, [0, 2]])
    np.testing.assert_allclose(net.blobs["b"].diff, y / b)


def _argmax_ref(v, k):
    """std::partial_sort with std::greater on (value, index): larger value first, ties larger index first."""
    order = sorted(range(len(v)), key=lambda j: (v[j], j), reverse=True)[:k]
    return np.array(order, dtype=np.float64), np.array([v[j] for j in order])


def test_argmax_flat_with_ties_and_out_max_val():
    x = np.array([[[1.0, 3.0, 3.0, 0.0]], [[2.0, 2.0, 2.0, 5.0]]])  # (2, 1, 4)
    (y,), *_ = run('type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 3 out_max_val: true }', [x])
    assert y.shape == (2, 2, 3)
    for i in range(2):
        idx, val = _argmax_ref(x[i].ravel(), 3)
        np.testing.assert_array_equal(y[i, 0], idx)
        np.testing.assert_array_equal(y[i, 1], val)
    (y,), *_ = run('type: "ArgMax" bottom: "x" top: "y"', [x])
    assert y.shape == (2, 1, 1)
    np.testing.assert_array_equal(y.ravel(), [2, 3])
    x4 = RNG.standard_normal((2, 3, 2, 2))
    (y,), *_ = run('type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 2 }', [x4])
    assert y.shape == (2, 1, 2, 1)
    (y,), *_ = run('type: "ArgMax" bottom: "x" top: "y" argmax_param { axis: -1 top_k: 2 out_max_val: true }', [x4])
    np.testing.assert_array_equal(y, -np.sort(-x4, axis=-1)[..., :2])


def test_tile_repeats_trailing_block():
    x = RNG.standard_normal((2, 3, 4))
    (y,), *_ = run('type: "Tile" bottom: "x" top: "y" tile_param { axis: 1 tiles: 3 }', [x])
    np.testing.assert_array_equal(y, np.tile(x, (1, 3, 1)))
    (y,), *_ = run('type: "Tile" bottom: "x" top: "y" tile_param { axis: 0 tiles: 2 }', [x])
    np.testing.assert_array_equal(y, np.concatenate([x, x], 0))


@pytest.mark.parametrize("op,fn", [("SUM", np.sum), ("ASUM", lambda a, axis: np.abs(a).sum(axis)),
                                   ("SUMSQ", lambda a, axis: (a * a).sum(axis)), ("MEAN", np.mean)])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reduction(op, fn, axis):
    (y,), *_ = run(f'type: "Reduction" bottom: "x" top: "y" reduction_param {{ operation: {op} axis: {axis} '
                   f'coeff: 0.5 }}', [X])
    ax = axis % 4
    np.testing.assert_allclose(y, 0.5 * fn(X.reshape(X.shape[:ax] + (-1,)), axis=-1), rtol=1e-12)


def test_embed_batchreindex_filter_parameter_silence():
    idx = np.array([[0.0, 3.0, 2.0], [3.0, 1.0, 0.0]])
    (y,), net, _ = run('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 4 input_dim: 5 '
                       'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', [idx])
    W, b = (p.data for p in net.params["under_test"])
    np.testing.assert_allclose(y, W[idx.astype(int)] + b)
    perm = np.array([2.0, 0.0, 2.0])
    x = RNG.standard_normal((3, 2, 2))
    (y,), net, _ = run('type: "BatchReindex" bottom: "x" bottom: "p" top: "y"', [x, perm])
    np.testing.assert_array_equal(y, x[[2, 0, 2]])
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff[:, 0, 0], [1, 0, 2])  # scattered and summed
    sel = np.array([1.0, 0.0, 1.0])
    (p, q), net, _ = run('type: "Filter" bottom: "x" bottom: "z" bottom: "s" top: "p" top: "q"', [x, x * 2, sel])
    np.testing.assert_array_equal(p, x[[0, 2]])
    np.testing.assert_array_equal(q, 2 * x[[0, 2]])
    assert net.blobs["p"].shape == (2, 2, 2)
    net.blobs["p"].diff[...] = 1
    net.blobs["q"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff[:, 0, 0], [1, 0, 1])


def test_parameter_layer_exposes_its_blob():
    np_ = caffe_pb2.NetParameter()
    from caffessl.io.prototxt import parse_text
    parse_text('force_backward: true layer { name: "p" type: "Parameter" top: "w" '
               'parameter_param { shape { dim: 2 dim: 3 } } } '
               'layer { name: "s" type: "Reduction" bottom: "w" top: "s" reduction_param { operation: SUMSQ } }',
               np_, "<test>")
    net = caffe.Net(np_, caffe.TRAIN)
    assert net.params["p"][0].data.shape == (2, 3)
    np.testing.assert_array_equal(net.params["p"][0].data, 0)  # Caffe: no filler, zeros
    net.params["p"][0].data[...] = np.arange(6).reshape(2, 3)
    net.forward()
    np.testing.assert_array_equal(net.blobs["w"].data, np.arange(6).reshape(2, 3))
    net.blobs["s"].diff[...] = 1
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(net.params["p"][0].diff, 2 * np.arange(6).reshape(2, 3))


def test_silence_consumes_and_zeroes_gradient():
    net, arrays, tops, _ = build_net('type: "Silence" bottom: "x"', [(2, 3)])
    assert tops == []
    net.forward()
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, 0)


# -- gradients (float64 finite differences) --------------------------------------------------------------

@pytest.mark.parametrize("text,inputs,kw", [
    ('type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 '
     'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', [(2, 3, 2, 2)], {}),
    ('type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 axis: 2 transpose: true '
     'bias_term: false weight_filler { type: "gaussian" } }', [(2, 3, 2, 2)], {}),
    ('type: "Softmax" bottom: "x" top: "y"', [(2, 3, 2, 2)], {}),
    ('type: "Softmax" bottom: "x" top: "y" softmax_param { axis: -1 }', [(2, 3, 4)], {}),
    ('type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: 0 }', [(2, 3), (1, 3)], {}),
    ('type: "Slice" bottom: "x" top: "p" top: "q" slice_param { slice_point: 1 }', [(2, 3, 2)], {}),
    ('type: "Split" bottom: "x" top: "p" top: "q" top: "r"', [(2, 3)], {}),
    ('type: "Flatten" bottom: "x" top: "y"', [(2, 3, 2)], {}),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: -1 dim: 2 } }', [(2, 3, 2)], {}),
    ('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { coeff: 0.5 coeff: -1 coeff: 2 }',
     [(2, 3), (2, 3), (2, 3)], {}),
    ('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: PROD }',
     [(2, 3), (2, 3), (2, 3)], {}),
    ('type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param { operation: PROD stable_prod_grad: false }',
     [(2, 3), (2, 3)], {}),
    ('type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: MAX }',
     [(2, 3, 2), (2, 3, 2), (2, 3, 2)], {}),
    ('type: "Tile" bottom: "x" top: "y" tile_param { axis: 1 tiles: 3 }', [(2, 2, 3)], {}),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { operation: SUM axis: 1 coeff: 2 }', [(2, 3, 2)], {}),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { operation: ASUM axis: 1 }', [(2, 3, 2)], {}),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { operation: SUMSQ axis: -1 }', [(2, 3, 2)], {}),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { operation: MEAN coeff: -0.5 }', [(2, 3, 2)], {}),
    ('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 3 input_dim: 4 '
     'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
     [np.array([[0.0, 3.0], [3.0, 1.0]])], {"check_bottoms": []}),
    ('type: "BatchReindex" bottom: "x" bottom: "p" top: "y"', [(3, 2, 2), np.array([1.0, 1.0, 0.0, 2.0])],
     {"check_bottoms": [0]}),
    ('type: "Filter" bottom: "x" bottom: "s" top: "y"', [(3, 2), np.array([0.0, 1.0, 1.0])], {"check_bottoms": [0]}),
])
def test_gradients_finite_differences(text, inputs, kw):
    check_layer_gradients(text, inputs, **kw)


def test_index_inputs_get_no_gradient_under_force_backward():
    idx = np.array([[0.0, 1.0]])
    (y,), net, _ = run('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 2 input_dim: 2 }', [idx])
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["i"].diff, 0)
    (y,), net, _ = run('type: "ArgMax" bottom: "x" top: "y"', [X])
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, 0)


# -- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,shapes,err", [
    ('type: "InnerProduct" bottom: "x" top: "y"', [(2, 3)], LayerConfigError),
    ('type: "InnerProduct" bottom: "x" bottom: "z" top: "y" inner_product_param { num_output: 2 }',
     [(2, 3), (2, 3)], LayerConfigError),
    ('type: "Softmax" bottom: "x" top: "y" softmax_param { axis: 3 }', [(2, 3)], ShapeMismatchError),
    ('type: "Concat" bottom: "a" bottom: "b" top: "y"', [(2, 3, 4), (2, 3, 5)], ShapeMismatchError),
    ('type: "Concat" bottom: "a" bottom: "b" top: "y"', [(2, 3, 4), (2, 3)], ShapeMismatchError),
    ('type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: 1 concat_dim: 1 }', [(2, 3), (2, 3)],
     LayerConfigError),
    ('type: "Slice" bottom: "x" top: "p" top: "q" slice_param { slice_point: 1 slice_point: 2 }', [(2, 4)],
     LayerConfigError),
    ('type: "Slice" bottom: "x" top: "p" top: "q" top: "r" slice_param { slice_point: 2 slice_point: 2 }',
     [(2, 4)], ShapeMismatchError),
    ('type: "Slice" bottom: "x" top: "p" top: "q" top: "r"', [(2, 4)], ShapeMismatchError),
    ('type: "Slice" bottom: "x" top: "p" top: "q" slice_param { slice_dim: 5 }', [(2, 4)], ShapeMismatchError),
    ('type: "Split" bottom: "x" bottom: "z" top: "p"', [(2, 4), (2, 4)], LayerConfigError),
    ('type: "Flatten" bottom: "x" top: "y" flatten_param { axis: 2 end_axis: 1 }', [(2, 3, 4)], LayerConfigError),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: -1 dim: -1 } }', [(2, 3)],
     LayerConfigError),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: -1 dim: 4 } }', [(2, 3)],
     ShapeMismatchError),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: 5 } }', [(2, 3)], ShapeMismatchError),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { axis: 2 shape { dim: 0 } }', [(2, 3)],
     ShapeMismatchError),
    ('type: "Reshape" bottom: "x" top: "y" reshape_param { axis: 4 shape { dim: 1 } }', [(2, 3)],
     ShapeMismatchError),
    ('type: "Eltwise" bottom: "a" top: "y"', [(2, 3)], LayerConfigError),
    ('type: "Eltwise" bottom: "a" bottom: "b" top: "y"', [(2, 3), (3, 2)], ShapeMismatchError),
    ('type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param { coeff: 1 }', [(2, 3), (2, 3)],
     LayerConfigError),
    ('type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param { operation: MAX coeff: 1 coeff: 2 }',
     [(2, 3), (2, 3)], LayerConfigError),
    ('type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 7 }', [(2, 3, 2)], ShapeMismatchError),
    ('type: "ArgMax" bottom: "x" top: "y" argmax_param { axis: 1 top_k: 4 }', [(2, 3, 2)], ShapeMismatchError),
    ('type: "Tile" bottom: "x" top: "y" tile_param { tiles: 0 }', [(2, 3)], LayerConfigError),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { axis: 2 }', [(2, 3)], ShapeMismatchError),
    ('type: "Embed" bottom: "x" top: "y" embed_param { input_dim: 3 }', [(2, 3)], LayerConfigError),
    ('type: "BatchReindex" bottom: "x" bottom: "p" top: "y"', [(3, 2), (2, 2)], ShapeMismatchError),
    ('type: "Filter" bottom: "x" bottom: "s" top: "y" top: "z"', [(3, 2), (3,)], LayerConfigError),
    ('type: "Filter" bottom: "x" bottom: "s" top: "y"', [(3, 2), (3, 2)], ShapeMismatchError),
    ('type: "Filter" bottom: "x" bottom: "s" top: "y"', [(4, 2), (3,)], ShapeMismatchError),
])
def test_bad_configuration_raises_typed_error(text, shapes, err):
    with pytest.raises(err, match="under_test"):
        build_net(text, shapes)


@pytest.mark.parametrize("text,inputs", [
    ('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 2 input_dim: 3 }', [np.array([[0.0, 3.0]])]),
    ('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 2 input_dim: 3 }', [np.array([[0.5, 1.0]])]),
    ('type: "BatchReindex" bottom: "x" bottom: "p" top: "y"', [np.zeros((3, 2)), np.array([0.0, 3.0])]),
])
def test_bad_index_values_raise_typed_error(text, inputs):
    with pytest.raises(LayerConfigError, match="under_test"):
        run(text, inputs)


def test_inner_product_input_size_change_raises():
    net, *_ = build_net('type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 }', [(2, 3)])
    net.blobs["x"].reshape(2, 4)
    with pytest.raises(ShapeMismatchError, match="under_test"):
        net.reshape()


def test_float32_default_dtype_tops():
    # tops follow the net dtype (float32 unless asked otherwise)
    net, arrays, tops, _ = build_net('type: "Tile" bottom: "x" top: "y" tile_param { tiles: 2 }', [(2, 3)],
                                     dtype=torch.float32)
    net.forward()
    assert net.blobs[tops[0]].data.dtype == np.float32
