"""Caffe's global random stream, value for value: boost::mt19937 through Boost.Random's distributions.

Caffe draws every filler (and caffe_rng_rand) from one ``boost::mt19937`` seeded by ``Caffe::set_random_seed``
(pycaffe's ``set_random_seed``, the solver's ``random_seed``), in float32 (``Dtype``):

* ``uniform(a, b)`` -- caffe_rng_uniform: ``boost::uniform_real<float>(a, nextafter(b))``: one 32-bit draw u,
  ``float(u) / 2^32 * (b' - a) + a`` in float arithmetic, redrawn when it reaches b';
* ``gaussian(mu, sigma)`` -- caffe_rng_gaussian: ``boost::normal_distribution<float>``, Boost's ziggurat
  (128 layers; one draw: the low 8 bits pick the layer and the sign, the high 24 the abscissa; a second
  draw tests the wedge; the tail is sampled with two ``exponential_distribution`` draws, themselves a
  256-layer ziggurat), times sigma plus mu;
* ``bernoulli(p)`` -- caffe_rng_bernoulli: ``float(u) <= p * float(2^32 - 1)``;
* ``rand()`` -- caffe_rng_rand: the raw 32-bit draw.

mt19937 seeded with an integer is numpy's legacy ``RandomState(seed)`` generator (same init_genrand), so the
raw draws come from numpy in bulk; the fast paths are vectorized, the rare slow ones (a wedge test, ~1 % of
normal draws; the tail, ~0.06 %) walk through the same draws in Python. Checked against the weights real
Caffe filled after ``set_random_seed(1701)`` (tests/test_caffe_rng.py). Tables: caffessl/_ziggurat.py.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ._ziggurat import EXP_X, EXP_Y, NORMAL_X, NORMAL_Y

F = np.float32
_DIV = F(4294967295.0) + F(1)            # boost: float(max - min) + 1 = 2^32 in float
BLOCK = 1 << 20                          # variates per vectorized pass: temporaries stay cache-sized
_U24 = F(1.0 / (1 << 24))
_NX, _NY = np.array(NORMAL_X), np.array(NORMAL_Y)
_NX32 = _NX.astype(F)


class CaffeRNG:
    """One mt19937 stream with Caffe's (Boost's float32) distributions."""

    def __init__(self, seed: int | None = None):
        if seed is None:      # Caffe's cluster_seedgen: entropy when no seed is set
            seed = int.from_bytes(os.urandom(4), "little")
        self.seed = int(seed) & 0xFFFFFFFF
        self._bg = np.random.RandomState(self.seed)._bit_generator
        self._pending = np.empty(0, np.uint64)    # drawn in bulk ahead of need, handed out first

    # -- raw draws -------------------------------------------------------------------------------
    def raw(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit outputs of mt19937 (uint64 array)."""
        n = int(n)
        p = self._pending
        if p.size >= n:
            self._pending = p[n:]
            return p[:n]
        self._pending = np.empty(0, np.uint64)
        return np.concatenate([p, self._bg.random_raw(n - p.size)]) if p.size else self._bg.random_raw(n)

    def unread(self, draws: np.ndarray) -> None:
        """Give back draws taken ahead of need: the next ones handed out."""
        if draws.size:
            self._pending = np.concatenate([draws, self._pending])

    def rand(self) -> int:
        return int(self.raw(1)[0])

    # -- distributions ---------------------------------------------------------------------------
    def uniform(self, n: int, a: float, b: float) -> np.ndarray:
        a, hi = F(a), np.nextafter(F(b), F(np.inf))
        span = F(hi - a)
        out, have = np.empty(n, F), 0
        while have < n:                    # a draw that rounds up to b' yields nothing: the next one is used
            r = self.raw(min(n - have, BLOCK)).astype(F) / _DIV * span + a
            r = r[r < hi]
            out[have:have + r.size] = r
            have += r.size
        return out

    def bernoulli(self, n: int, p: float, dtype=F) -> np.ndarray:
        """0/1 ints: boost::bernoulli_distribution<dtype>(p) (Caffe's caffe_rng_bernoulli<Dtype>)."""
        p = dtype(p)
        if p == 0:
            return np.zeros(n, np.int32)
        return (self.raw(n).astype(dtype) <= p * dtype(4294967295.0)).astype(np.int32)

    def gaussian(self, n: int, mu: float, sigma: float) -> np.ndarray:
        z = self._unit_normal(n)
        return z * F(sigma) + F(mu)

    # -- the ziggurats ---------------------------------------------------------------------------
    def _unit_normal(self, n: int) -> np.ndarray:
        """n standard normal floats, in the order Boost draws them. Over a buffer of draws, the fast path
        (accepted inside the layer's rectangle: ~99 % of draws) and the common slow path's wedge test (the
        next draw as y01) are computed for every position at once; a Python walk over the ~1 % slow positions
        only decides which draws start a variate (a slow one consumes the next draw too), and the rare rest
        (the tail, a y01 that rounds to 1) runs the scalar path. Draws past the n-th variate go back."""
        parts, have = [], 0
        while have < n:
            need = min(n - have, BLOCK)
            buf = self.raw(need + need // 32 + 128)
            val, slow, acc, special = _normal_vector(buf)
            emit = ~slow
            ends = {}                        # special position -> the position after its last draw
            stop = buf.size - 64             # a slow variate from here on is left to the next buffer
            cursor = 0
            for b in np.flatnonzero(slow).tolist():
                if b < cursor:
                    continue                 # consumed as the y01 of the slow variate before it
                if b >= stop:
                    break
                if special[b]:
                    d = _Draws(self, buf, b)
                    val[b] = self._normal_slow(d)
                    if d.buf is not buf:     # ran past the buffer (64 draws to spare make it moot, but exact)
                        self.unread(d.buf[d.pos:])
                        d.pos = buf.size
                    emit[b], ends[b] = True, d.pos
                    emit[b + 1:d.pos] = False
                    cursor = d.pos
                else:
                    emit[b] = acc[b]
                    emit[b + 1] = False
                    cursor = b + 2
            else:
                stop = buf.size
            stop = max(stop, cursor)
            pos = np.flatnonzero(emit[:stop])
            if pos.size > need:              # the n-th variate ends the call
                last = int(pos[need - 1])
                stop = ends.get(last, last + (2 if slow[last] else 1))
                pos = pos[:need]
            parts.append(val[pos])
            have += pos.size
            self.unread(buf[stop:])
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, F)

    def _normal_slow(self, d: "_Draws") -> F:
        while True:
            u = d.next()
            i = u & 0xFF
            sign = F((i & 1) * 2 - 1)
            i >>= 1
            x = F(F(u >> 8) * _U24 * _NX32[i])
            if x < _NX[i + 1]:
                return F(x * sign)
            if i == 0:
                return F(_normal_tail(d) * sign)
            y01 = _uniform01(d)
            y = F(F(_NY[i]) + F(y01 * F(_NY[i + 1] - _NY[i])))
            xi = F(_NX[i])
            if _NX[i] >= 1:     # convex region (with the inflection layer)
                above_ubound = F(F(F(_NX[i] - _NX[i + 1]) * y01) - F(xi - x))
                above_lbound = F(y - F(F(_NY[i]) + F(F(F(xi - x) * F(_NY[i])) * xi)))
            else:               # concave
                above_lbound = F(F(F(_NX[i] - _NX[i + 1]) * y01) - F(xi - x))
                above_ubound = F(y - F(F(_NY[i]) + F(F(F(xi - x) * F(_NY[i])) * xi)))
            if above_ubound < 0 and (above_lbound < 0 or y < F(math.exp(-float(F(F(x * x) / F(2)))))):
                return F(x * sign)


class _Draws:
    """A cursor over a bulk buffer of raw draws that fetches more from the generator when it runs out."""

    def __init__(self, rng: CaffeRNG, buf: np.ndarray, pos: int):
        self.rng, self.buf, self.pos = rng, buf, pos

    def next(self) -> int:
        if self.pos >= self.buf.size:
            self.buf, self.pos = self.rng.raw(64), 0
        v = int(self.buf[self.pos])
        self.pos += 1
        return v


def _fast_tables():
    """Indexed by a draw's low 8 bits i (layer i >> 1, sign from bit 0): the factor that turns the draw's high
    24 bits (exact in float) into the signed candidate -- +-2^-24 * float(x[layer]), exact, so the one product
    rounds as Boost's r * x[layer] does -- and the float threshold T with |x| < T  <=>  x < x[layer + 1]."""
    i = np.arange(256)
    layer, sign = i >> 1, (i & 1) * 2 - 1
    factor = (sign * _U24).astype(F) * _NX32[layer]
    t = _NX[layer + 1].astype(F)
    t = np.where(t.astype(np.float64) < _NX[layer + 1], np.nextafter(t, F(np.inf)), t)
    return factor.astype(F), t.astype(F)


_FACTOR, _THRESHOLD = _fast_tables()


def _normal_vector(u: np.ndarray):
    """Per draw u[p] taken as the start of a variate: its signed value, whether it misses the fast path
    (``slow``), whether the common slow path (u[p+1] as y01) accepts it, and whether it needs the scalar
    path instead (``special``: the base layer's tail, a y01 that rounds to 1, no next draw)."""
    u32 = u.astype(np.uint32)
    i = (u32 & 0xFF).astype(np.uint8)
    val = (u32 >> 8).astype(F) * _FACTOR[i]
    slow = ~(np.abs(val) < _THRESHOLD[i])
    acc = np.zeros(u.size, bool)
    sb = np.flatnonzero(slow)
    layer = i[sb].astype(np.int64) >> 1
    special = np.zeros(u.size, bool)
    special[sb[layer == 0]] = True
    special[-1] |= slow[-1]
    keep = (layer > 0) & (sb + 1 < u.size)
    b, l = sb[keep], layer[keep]
    if b.size:
        xb = np.abs(val[b])
        y01 = u32[b + 1].astype(F) / _DIV
        special[b[~(y01 < 1)]] = True
        y = _NY[l].astype(F) + y01 * (_NY[l + 1] - _NY[l]).astype(F)
        xi = _NX32[l]
        t1 = (_NX[l] - _NX[l + 1]).astype(F) * y01 - (xi - xb)
        t2 = y - (_NY[l].astype(F) + (xi - xb) * _NY[l].astype(F) * xi)
        convex = _NX[l] >= 1
        above_ubound, above_lbound = np.where(convex, t1, t2), np.where(convex, t2, t1)
        fx = np.exp(-((xb * xb) / F(2)).astype(np.float64)).astype(F)
        acc[b] = (above_ubound < 0) & ((above_lbound < 0) | (y < fx))
    return val, slow, acc, special


def _uniform01(d: _Draws) -> F:
    """boost::uniform_01<float>: float(u) / 2^32, redrawn when it rounds to 1."""
    while True:
        r = F(F(d.next()) / _DIV)
        if r < 1:
            return r


_EX, _EY = np.array(EXP_X), np.array(EXP_Y)
_EX32 = _EX.astype(F)


def _unit_exponential(d: _Draws) -> F:
    shift = F(0)
    while True:
        u = d.next()
        i = u & 0xFF
        x = F(F(u >> 8) * _U24 * _EX32[i])
        if x < _EX32[i + 1]:
            return F(shift + x)
        if i == 0:           # the tail of an exponential is an exponential: go again, shifted
            shift = F(shift + _EX32[1])
            continue
        y01 = _uniform01(d)
        y = F(F(_EY[i]) + F(y01 * F(_EY[i + 1] - _EY[i])))
        xi = F(_EX[i])
        above_ubound = F(F(F(_EX[i] - _EX[i + 1]) * y01) - F(xi - x))
        above_lbound = F(y - F(F(_EY[i]) + F(F(xi - x) * F(_EY[i]))))
        if above_ubound < 0 and (above_lbound < 0 or y < F(math.exp(-float(x)))):
            return F(x + shift)


def _normal_tail(d: _Draws) -> F:
    """Beyond x[1]: x ~ Exp(x[1]), y ~ Exp(1), accepted when 2y > x^2; returns x + x[1]."""
    start = F(_NX[1])
    while True:
        x = F(_unit_exponential(d) / start)
        y = _unit_exponential(d)
        if F(2) * y > F(x * x):
            return F(x + start)


_GLOBAL = {"rng": None}


def get() -> CaffeRNG:
    """The process's stream (Caffe::rng_stream()); seeded from entropy until set_random_seed is called."""
    if _GLOBAL["rng"] is None:
        _GLOBAL["rng"] = CaffeRNG()
    return _GLOBAL["rng"]


def seed(value: int) -> None:
    """Caffe::set_random_seed: a new stream from ``value``."""
    _GLOBAL["rng"] = CaffeRNG(value)
