"""Weight fillers: statistics and structure against Caffe's definitions (include/caffe/filler.hpp)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import LayerConfigError
from caffessl.fillers import fill
from caffessl.proto import caffe_pb2

FP = caffe_pb2.FillerParameter


def filled(shape, **kw):
    caffe.set_random_seed(1234)
    t = torch.empty(shape, dtype=torch.float64)
    return fill(t, FP(**kw)).numpy()


def test_constant_and_default_is_constant_zero():
    np.testing.assert_array_equal(filled((3, 4), type="constant", value=0.5), 0.5)
    np.testing.assert_array_equal(fill(torch.ones(3), FP()).numpy(), 0.0)  # schema default: constant 0


def test_uniform_statistics():
    w = filled((200, 500), type="uniform", min=-0.5, max=1.5)
    assert w.min() >= -0.5 and w.max() <= 1.5
    assert abs(w.mean() - 0.5) < 0.01
    assert abs(w.std() - 2 / math.sqrt(12)) < 0.01


def test_gaussian_statistics():
    w = filled((200, 500), type="gaussian", mean=0.3, std=2.0)
    assert abs(w.mean() - 0.3) < 0.02
    assert abs(w.std() - 2.0) < 0.02


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    # Caffe: each weight is kept with probability sparse / shape[0]
    w = filled((50, 4000), type="gaussian", std=1.0, sparse=10)
    frac = (w != 0).mean()
    assert abs(frac - 10 / 50) < 0.01
    assert abs(w[w != 0].std() - 1.0) < 0.02


def test_positive_unitball_rows_sum_to_one():
    w = filled((6, 3, 2, 2), type="positive_unitball")
    assert (w >= 0).all() and (w <= 1).all()
    np.testing.assert_allclose(w.reshape(6, -1).sum(1), 1.0, rtol=1e-6)   # divided in float32, as Caffe does


@pytest.mark.parametrize("norm,n", [("FAN_IN", 32 * 9), ("FAN_OUT", 64 * 9), ("AVERAGE", (32 * 9 + 64 * 9) / 2)])
def test_xavier_bounds(norm, n):
    # fan_in = count / shape[0], fan_out = count / shape[1]; uniform in +-sqrt(3 / n)
    w = filled((64, 32, 3, 3), type="xavier", variance_norm=getattr(FP, norm))
    bound = math.sqrt(3.0 / n)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.var() - 1.0 / n) < 0.03 / n


@pytest.mark.parametrize("norm,n", [("FAN_IN", 32 * 9), ("FAN_OUT", 64 * 9), ("AVERAGE", (32 * 9 + 64 * 9) / 2)])
def test_msra_std(norm, n):
    w = filled((64, 32, 3, 3), type="msra", variance_norm=getattr(FP, norm))
    assert abs(w.mean()) < 0.02 * math.sqrt(2.0 / n)
    assert abs(w.std() - math.sqrt(2.0 / n)) < 0.02 * math.sqrt(2.0 / n)


def test_xavier_fans_of_lower_rank_blobs():
    # a (N, K) InnerProduct weight: fan_in = K; a 1-D blob: channels() = 1, so fan_out = count
    w = filled((10, 400), type="xavier")
    assert np.abs(w).max() <= math.sqrt(3 / 400) and np.abs(w).max() > 0.98 * math.sqrt(3 / 400)
    b = filled((1000,), type="xavier", variance_norm=FP.FAN_OUT)
    assert np.abs(b).max() <= math.sqrt(3 / 1000) and np.abs(b).max() > 0.98 * math.sqrt(3 / 1000)


def _bilinear_reference(k):
    """Caffe 1.0's BilinearFiller, element by element: f = ceil(k/2), c = (2f - 1 - f%2) / (2f)."""
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    out = np.empty((k, k))
    for y in range(k):
        for x in range(k):
            out[y, x] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_bilinear_kernel(k):
    w = filled((3, 2, k, k), type="bilinear")
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(w[i, j], _bilinear_reference(k), rtol=1e-12)


def test_bilinear_factor2_upsampling_kernel():
    # the classic 2x upsampling kernel (k = 4): outer product of [1, 3, 3, 1] / 4
    v = np.array([1, 3, 3, 1]) / 4
    np.testing.assert_allclose(filled((1, 1, 4, 4), type="bilinear")[0, 0], np.outer(v, v))


def test_seeded_fill_is_reproducible():
    caffe.set_random_seed(17)
    a = fill(torch.empty(5, 5), FP(type="gaussian")).numpy().copy()
    caffe.set_random_seed(17)
    b = fill(torch.empty(5, 5), FP(type="gaussian")).numpy().copy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,kw,match", [
    ((2, 3), dict(type="nonsense"), "unknown filler"),
    ((2, 3, 4), dict(type="bilinear"), "bilinear"),
    ((2, 3, 4, 5), dict(type="bilinear"), "bilinear"),
    ((2, 3), dict(type="xavier", sparse=1), "sparse"),
    ((2, 3), dict(type="constant", sparse=1), "sparse"),
    ((2, 3), dict(type="gaussian", sparse=3), "sparse"),
    ((2, 3), dict(type="uniform", min=1, max=0), "min"),          # Caffe: CHECK_LE(a, b)
    ((2, 3), dict(type="gaussian", std=0), "std"),                # Caffe: CHECK_GT(sigma, 0)
])
def test_bad_filler_raises_typed_error(shape, kw, match):
    with pytest.raises(LayerConfigError, match=match):
        fill(torch.empty(shape), FP(**kw))
