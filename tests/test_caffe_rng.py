"""Caffe's random stream (caffessl.caffe_rng): the initial weights real Caffe filled after
set_random_seed(1701) (every golden case whose weights come straight from its fillers) are reproduced bit for
bit, plus the generator's own invariants against a plain scalar transcription of Boost's algorithms."""
from __future__ import annotations

import math

import numpy as np
import pytest

import caffessl as caffe
from caffessl import caffe_rng
from caffessl._ziggurat import EXP_X, EXP_Y, NORMAL_X, NORMAL_Y
from caffessl.io import read_solver_prototxt
from caffessl.io.caffemodel import read_weights
from tests.golden import GOLDEN, case_names, need_shared

# weights the case changed after filling (golden README: "plus the case's modifications"): BatchNorm
# statistics set to chosen values, connectivity masks applied to the weights
MODIFIED = ("batchnorm_", "ssl_connectivity_")


def _filled_cases():
    out = []
    for name in case_names(prefixes=("",)):
        d = GOLDEN / name
        if name.startswith(MODIFIED) or not (d / "net.prototxt").is_file():
            continue
        if (d / "solver.prototxt").is_file() and (d / "init.caffemodel").is_file():
            out.append(name)
        elif not (d / "solver.prototxt").is_file() and (d / "weights.caffemodel").is_file():
            out.append(name)
    return out or ["conv_3x3", "solver_sgd_momentum_l2", "net_lenet_deploy"]


@pytest.mark.parametrize("name", _filled_cases())
def test_initial_weights_are_caffes_bit_for_bit(name, monkeypatch):
    d = need_shared("golden", name)
    if (d / "solver.prototxt").is_file():          # the solver's random_seed (1701), then its train net
        monkeypatch.chdir(d)
        sp = read_solver_prototxt("solver.prototxt")
        assert sp.random_seed == 1701
        sp.snapshot_prefix = "/nonexistent/never_written"
        net, ref = caffe.get_solver(sp).net, d / "init.caffemodel"
    else:
        caffe.set_random_seed(1701)
        net, ref = caffe.Net(str(d / "net.prototxt"), caffe.TEST), d / "weights.caffemodel"
    golden = {n: arrays for n, _, arrays in read_weights(str(ref))}
    compared = 0
    for layer in net.layers:
        for i, p in enumerate(layer.params):
            want = golden[layer.name][i]
            np.testing.assert_array_equal(p.detach().numpy().reshape(want.shape), want,
                                          err_msg=f"{name}: layer {layer.name} param {i}")
            compared += 1
    assert compared


# -- the generator against a scalar transcription of Boost.Random (mt19937 draws from numpy) -------------
F = np.float32


class _Scalar:
    def __init__(self, seed):
        self.bg = np.random.RandomState(seed)._bit_generator

    def draw(self):
        return int(self.bg.random_raw())

    def u01(self):
        while True:
            r = F(F(self.draw()) / F(4294967296.0))
            if r < 1:
                return r

    def exponential(self):
        shift = F(0)
        while True:
            u = self.draw()
            i = u & 0xFF
            x = F(F(u >> 8) * F(2.0 ** -24) * F(EXP_X[i]))
            if x < F(EXP_X[i + 1]):
                return F(shift + x)
            if i == 0:
                shift = F(shift + F(EXP_X[1]))
                continue
            y = F(F(EXP_Y[i]) + F(self.u01() * F(EXP_Y[i + 1] - EXP_Y[i])))
            if y < F(math.exp(-float(x))):
                return F(x + shift)

    def normal(self):
        while True:
            u = self.draw()
            i = u & 0xFF
            sign = F((i & 1) * 2 - 1)
            i >>= 1
            x = F(F(u >> 8) * F(2.0 ** -24) * F(NORMAL_X[i]))
            if x < NORMAL_X[i + 1]:
                return F(x * sign)
            if i == 0:
                start = F(NORMAL_X[1])
                while True:
                    tx, ty = F(self.exponential() / start), self.exponential()
                    if F(2) * ty > F(tx * tx):
                        return F(F(tx + start) * sign)
            y = F(F(NORMAL_Y[i]) + F(self.u01() * F(NORMAL_Y[i + 1] - NORMAL_Y[i])))
            if y < F(math.exp(-float(F(F(x * x) / F(2))))):
                return F(x * sign)


@pytest.mark.parametrize("seed", [1701, 5])
def test_vectorized_normal_is_the_scalar_algorithm_and_leaves_the_stream_where_it_would(seed):
    n = 60000                                   # ~1700 slow paths, ~40 tails
    ref = _Scalar(seed)
    want = np.array([ref.normal() for _ in range(n)], F)
    rng = caffe_rng.CaffeRNG(seed)
    got = np.concatenate([rng.gaussian(17, 0, 1), rng.gaussian(n - 17, 0, 1)])   # two calls: one stream
    np.testing.assert_array_equal(got, want)
    assert rng.rand() == ref.draw()             # the draws taken ahead of need went back to the stream


def test_uniform_bernoulli_and_rand_share_one_stream():
    rng, ref = caffe_rng.CaffeRNG(3), _Scalar(3)
    u = rng.uniform(1000, -0.25, 0.75)
    hi = np.nextafter(F(0.75), F(np.inf))
    want = []
    while len(want) < 1000:
        r = F(F(F(ref.draw()) / F(4294967296.0)) * F(hi - F(-0.25)) + F(-0.25))
        if r < hi:
            want.append(r)
    np.testing.assert_array_equal(u, np.array(want, F))
    b = rng.bernoulli(500, 0.3)
    np.testing.assert_array_equal(b, [int(F(ref.draw()) <= F(0.3) * F(4294967295.0)) for _ in range(500)])
    assert rng.rand() == ref.draw()
    assert abs(b.mean() - 0.3) < 0.1 and abs(float(u.mean()) - 0.25) < 0.05


def test_empty_draws_take_nothing_from_the_stream():
    rng, ref = caffe_rng.CaffeRNG(8), _Scalar(8)
    assert rng.gaussian(0, 0, 1).shape == rng.uniform(0, 0, 1).shape == rng.bernoulli(0, 0.5).shape == (0,)
    assert rng.rand() == ref.draw()


def test_set_random_seed_restarts_the_filler_stream():
    caffe.set_random_seed(11)
    a = caffe_rng.get().gaussian(5, 0, 1)
    caffe.set_random_seed(11)
    np.testing.assert_array_equal(caffe_rng.get().gaussian(5, 0, 1), a)


def test_ziggurat_tables_are_the_standard_construction():
    """Equal-area layers: x[i] (f(x[i+1]) - f(x[i])) is the same area for every layer of both tables."""
    for xs, ys, f in ((NORMAL_X, NORMAL_Y, lambda x: math.exp(-x * x / 2)), (EXP_X, EXP_Y, lambda x: math.exp(-x))):
        areas = [xs[i] * (f(xs[i + 1]) - f(xs[i])) for i in range(1, len(xs) - 1)]
        assert max(areas) - min(areas) < 1e-14
        assert xs[-1] == 0 and abs(ys[-1] - 1) < 1e-15 and all(abs(ys[i] - f(xs[i])) < 3e-16 for i in range(1, len(xs)))
        assert abs(xs[0] * f(xs[1]) - areas[0]) < 1e-14          # the base strip's pseudo-width
