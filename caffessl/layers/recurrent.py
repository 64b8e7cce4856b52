"""Recurrent layers: RNN, LSTM and LSTMUnit, computing what BVLC Caffe's unrolled nets compute
(src/caffe/layers/recurrent_layer.cpp, rnn_layer.cpp, lstm_layer.cpp, lstm_unit_layer.cpp).

Caffe builds a hidden Net that unrolls the recurrence over the T timesteps; here the same math runs as torch
ops: one InnerProduct for the input of all timesteps at once, then a Python loop over the timesteps.

Bottoms: ``x`` (T, N, ...) -- its axes from 2 on are flattened, as by Caffe's InnerProduct with axis 2 --,
``cont`` (T, N), the sequence-continuation indicators (0 starts a new sequence), an optional static input
``x_static`` (N, ...), and with ``recurrent_param.expose_hidden`` the initial state ``h_0`` (1, N, D)
[and ``c_0`` for LSTM]. Tops: the per-timestep output (T, N, D), and with expose_hidden the final state
``h_T`` (1, N, D) [and ``c_T``]. D is ``recurrent_param.num_output``.

RNN:   h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]);  o_t = tanh(W_ho h_t + b_o)
LSTM:  [i' f' o' g'] = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static];
       i, f, o = sigmoid(i', f', o'), g = tanh(g');  c_t = cont_t f c_{t-1} + i g;  h_t = o tanh(c_t)

What Caffe does and this module copies:

* Learnable blobs, in the order the unrolled net owns them: RNN W_xh (D, K), b_h (D), [W_xh_static (D, Ks)],
  W_hh (D, D), W_ho (D, D), b_o (D); LSTM W_xc (4D, K), b_c (4D), [W_xc_static (4D, Ks)], W_hc (4D, D).
* Without expose_hidden the state is carried across forward calls: each forward starts from the previous
  forward's last h (and c), zero at first; no gradient flows into it ("we can't backpropagate across batches").
* With expose_hidden, Caffe shares only the *data* of h_0/c_0 and h_T/c_T with the unrolled net, never the
  diffs: h_0/c_0 receive no gradient and the diffs of the h_T/c_T tops are ignored. Same here (the exposed
  state enters detached and leaves detached).
* No gradient to ``cont`` (Caffe: "Cannot backpropagate to sequence indicators").
* LSTMUnit's backward is Caffe's closed form (``_LSTMUnitFn``); it equals the true derivative for binary
  cont, and for other cont values it is Caffe's f (1 - f) with f = cont * sigmoid(f').

Not reproduced: ``recurrent_param.debug_info`` (Caffe logs the unrolled net's per-layer debug info).
"""
from __future__ import annotations

import math

import torch

from ..conv_modes.matmul import linear
from ..fillers import fill
from .base import Layer, register


class _LSTMUnitFn(torch.autograd.Function):
    """One LSTM step (LSTMUnitLayer): c_prev (..., D), X = gate inputs [i' f' o' g'] (..., 4D), cont (...)
    -> c, h (..., D). Forward and backward follow lstm_unit_layer.cpp term by term."""

    @staticmethod
    def forward(ctx, c_prev, X, cont):
        D = c_prev.shape[-1]
        i = torch.sigmoid(X[..., :D])
        o = torch.sigmoid(X[..., 2 * D:3 * D])
        g = torch.tanh(X[..., 3 * D:])
        cc = cont.unsqueeze(-1)
        # f = (cont == 0) ? 0 : cont * sigmoid(f'): an exact 0 even where f' is NaN
        f = (cc * torch.sigmoid(X[..., D:2 * D])).masked_fill(cc == 0, 0)
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx, dc, dh):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        dc_prev = c_term * f
        dX = torch.cat([c_term * g * i * (1 - i),
                        c_term * c_prev * f * (1 - f),
                        dh * tanh_c * o * (1 - o),
                        c_term * i * (1 - g * g)], dim=-1)
        return dc_prev, dX, None


def lstm_unit(c_prev, X, cont):
    return _LSTMUnitFn.apply(c_prev, X, cont.detach())


@register("LSTMUnit")
class LSTMUnit(Layer):
    """Bottoms c_prev (1, N, D), X (1, N, 4D), cont (1, N); tops c_t, h_t (1, N, D). No learnable blobs."""
    num_bottoms = 3
    num_tops = 2
    no_grad_bottoms = (2,)

    def reshape(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        n = shapes[0][1] if len(shapes[0]) > 1 else None
        for k, (s, what) in enumerate(zip(shapes, ("c_prev", "X", "cont"))):
            axes = 2 if k == 2 else 3
            if len(s) != axes or s[0] != 1 or s[1] != n:
                want = "(1, N)" if k == 2 else "(1, N, ...)"
                self.shape_error(f"bottom {k} ({what}) has shape {s}; expected {axes} axes {want} with N taken "
                                 f"from c_prev {shapes[0]}")
        if shapes[1][2] != 4 * shapes[0][2]:
            self.shape_error(f"X {shapes[1]} must have 4 * D = {4 * shapes[0][2]} gate inputs on axis 2 "
                             f"(c_prev {shapes[0]})")
        return [shapes[0], shapes[0]]

    def forward(self, bottoms):
        self.reshape([tuple(b.shape) for b in bottoms])
        c, h = lstm_unit(bottoms[0], bottoms[1], bottoms[2])
        return [c, h]


class _Recurrent(Layer):
    """RecurrentLayer: bottom/top bookkeeping, shape checks, the carried state; subclasses define the blobs
    (``_create_params``) and the recurrence (``_unroll``)."""
    STATES: tuple = ()       # recurrent state names, in Caffe's RecurrentInputBlobNames order

    # -- set up ----------------------------------------------------------------------------------
    def setup(self, bottom_shapes):
        p = self.param.recurrent_param
        self.expose = bool(p.expose_hidden)
        n_state = len(self.STATES) if self.expose else 0
        nb, nt = len(bottom_shapes), len(self.param.top)
        lo = 2 + n_state
        names = ["x", "cont"] + [f"{s}_0" for s in self.STATES][:n_state]
        if not lo <= nb <= lo + 1:
            self.fail(f"takes {lo} bottoms ({', '.join(names)}) or {lo + 1} (with x_static after cont), "
                      f"got {nb}" + ("" if self.expose else " (expose_hidden is off)"))
        if nt != 1 + n_state:
            tops = ["output"] + [f"{s}_T" for s in self.STATES][:n_state]
            self.fail(f"produces exactly {1 + n_state} top(s) ({', '.join(tops)}), got {nt}")
        self.static = nb > lo
        self.state_at = 3 if self.static else 2          # index of the first exposed state bottom
        self.no_grad_bottoms = (1,) + tuple(range(self.state_at, nb))  # cont; h_0/c_0 (data-only in Caffe)
        self.D = int(p.num_output)
        if self.D <= 0:
            self.fail("recurrent_param.num_output must be positive")
        x = tuple(bottom_shapes[0])
        if len(x) < 3:
            self.shape_error(f"x {x} needs at least 3 axes (T, N, ...): Caffe's InnerProduct over the inputs "
                             "uses axis 2")
        self.T = x[0]
        self.K = math.prod(x[2:])
        self.Ks = math.prod(bottom_shapes[2][1:]) if self.static and len(bottom_shapes[2]) >= 2 else None
        self._state = None
        self._check(bottom_shapes)
        self._create_params(p.weight_filler, p.bias_filler)

    def _replay_fills(self, blobs, times):
        """Caffe's unrolled net has one layer per timestep for the shared hidden transforms; each fills its own
        copy of the weights (drawing from the global stream) before Net::ShareWeights makes it use the first
        timestep's. Draw and discard those ``times`` repetitions of ``blobs`` [(shape, filler)] in that order,
        so that the layers after this one see the stream where Caffe leaves it."""
        if times <= 0 or all(fp.type == "constant" for _, fp in blobs):
            return
        scratch = [torch.empty(shape, dtype=torch.float32) for shape, _ in blobs]
        for _ in range(times):
            for t, (_, fp) in zip(scratch, blobs):
                fill(t, fp)

    # -- shapes ----------------------------------------------------------------------------------
    def _check(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        x, cont = shapes[0], shapes[1]
        if len(x) < 3:
            self.shape_error(f"x {x} needs at least 3 axes (T, N, ...)")
        T, N = x[0], x[1]
        if T != self.T:
            self.shape_error(f"input number of timesteps changed: x {x} has T = {T}, the layer was set up "
                             f"with T = {self.T}")
        if T < 1:
            self.shape_error(f"x {x} has no timesteps")
        if math.prod(x[2:]) != self.K:
            self.shape_error(f"x {x} has {math.prod(x[2:])} features per timestep from axis 2; the weights "
                             f"expect {self.K}")
        if cont != (T, N):
            self.shape_error(f"cont {cont} must have exactly 2 axes (T, N) = {(T, N)} to match x {x}")
        if self.static:
            xs = shapes[2]
            if len(xs) < 2 or xs[0] != N:
                self.shape_error(f"x_static {xs} must be (N, ...) with N = {N} (from x {x}) and at least 2 "
                                 "axes (Caffe's InnerProduct over it uses axis 1)")
            if self.Ks is not None and math.prod(xs[1:]) != self.Ks:
                self.shape_error(f"x_static {xs} has {math.prod(xs[1:])} features; the weights expect {self.Ks}")
        if self.expose:
            want = (1, N, self.D)
            for k, s in enumerate(self.STATES):
                got = shapes[self.state_at + k]
                if got != want:
                    self.shape_error(f"bottom {self.state_at + k} ({s}_0) has shape {got}; the hidden state "
                                     f"input must be {want}")
        return T, N

    def reshape(self, bottom_shapes):
        T, N = self._check(bottom_shapes)
        n_state = len(self.STATES) if self.expose else 0
        return [(T, N, self.D)] + [(1, N, self.D)] * n_state

    # -- forward ---------------------------------------------------------------------------------
    def reset(self):
        """RecurrentLayer::Reset: zero the carried state."""
        self._state = None

    def _carried(self, N, like):
        """The state the last forward left, as Caffe's recurrent-output blobs hold it after a reshape to N
        streams: kept for the first N streams when N did not grow; zeros when it grew (Caffe reallocates;
        regrowing within an earlier, larger capacity would show stale values there) or at first."""
        s = self._state
        if s is None or s[0].shape[1] < N or s[0].dtype != like.dtype or s[0].device != like.device:
            return [like.new_zeros((1, N, self.D)) for _ in self.STATES]
        return [t[:, :N] for t in s]

    def forward(self, bottoms):
        T, N = self._check([tuple(b.shape) for b in bottoms])
        x = bottoms[0].reshape(T * N, self.K)
        cont = bottoms[1].detach()
        xs = bottoms[2].reshape(N, -1) if self.static else None
        if self.expose:
            init = [b.detach() for b in bottoms[self.state_at:]]
        else:
            init = self._carried(N, bottoms[0])
        out, final = self._unroll(x, cont, xs, [s.reshape(N, self.D) for s in init], T, N)
        final = [s.detach().reshape(1, N, self.D) for s in final]
        if not self.expose:
            self._state = final
            return [out]
        return [out] + final


@register("RNN")
class RNN(_Recurrent):
    num_bottoms = (2, 4)     # exact counts depend on expose_hidden: checked in setup
    num_tops = (1, 2)
    STATES = ("h",)

    def _create_params(self, wf, bf):
        # Caffe's fill order is the unrolled net's layer order: x_transform (W_xh, b_h), [W_xh_x_static
        # (W_xh_static)], then per timestep t = 1..T: W_hh_h_{t-1} (W_hh), W_ho_h_t (W_ho, b_o). The blobs of
        # t = 1 are the ones kept (the later copies are shared away); this layer's blobs are in that order.
        D = self.D
        self.new_param((D, self.K), wf)
        self.new_param((D,), bf)
        if self.static:
            self.new_param((D, self.Ks), wf)
        self.new_param((D, D), wf)
        self.new_param((D, D), wf)
        self.new_param((D,), bf)
        self._replay_fills([((D, D), wf), ((D, D), wf), ((D,), bf)], self.T - 1)

    def _unroll(self, x, cont, xs, init, T, N):
        P = iter(self.params)
        W_xh, b_h = next(P), next(P)
        W_s = next(P) if self.static else None
        W_hh, W_ho, b_o = next(P), next(P), next(P)
        wx = linear(x, W_xh, b_h).reshape(T, N, self.D)          # all timesteps at once
        ws = linear(xs, W_s) if xs is not None else None
        h = init[0]
        hs = []
        for t in range(T):
            pre = linear(cont[t].unsqueeze(1) * h, W_hh) + wx[t]   # Eltwise SUM order: W_hh h, W_xh x_t, static
            if ws is not None:
                pre = pre + ws
            h = torch.tanh(pre)
            hs.append(h)
        H = torch.stack(hs).reshape(T * N, self.D)
        o = torch.tanh(linear(H, W_ho, b_o)).reshape(T, N, self.D)
        return o, [h]


@register("LSTM")
class LSTM(_Recurrent):
    num_bottoms = (2, 5)     # exact counts depend on expose_hidden: checked in setup
    num_tops = (1, 3)
    STATES = ("h", "c")      # bottoms h_0, c_0 and tops h_T, c_T in this order

    def _create_params(self, wf, bf):
        # Caffe's fill order is the unrolled net's layer order: x_transform (W_xc, b_c), [W_xc_x_static
        # (W_xc_static)], then per timestep t = 1..T: transform_t (W_hc); t = 1's W_hc is the one kept.
        G = 4 * self.D
        self.new_param((G, self.K), wf)
        self.new_param((G,), bf)
        if self.static:
            self.new_param((G, self.Ks), wf)
        self.new_param((G, self.D), wf)
        self._replay_fills([((G, self.D), wf)], self.T - 1)

    def _unroll(self, x, cont, xs, init, T, N):
        P = iter(self.params)
        W_xc, b_c = next(P), next(P)
        W_s = next(P) if self.static else None
        W_hc = next(P)
        gx = linear(x, W_xc, b_c).reshape(T, N, 4 * self.D)      # all timesteps at once
        gs = linear(xs, W_s) if xs is not None else None
        h, c = init
        hs = []
        for t in range(T):
            gate = linear(cont[t].unsqueeze(1) * h, W_hc) + gx[t]  # Eltwise SUM order: W_hc h, W_xc x_t, static
            if gs is not None:
                gate = gate + gs
            c, h = lstm_unit(c, gate, cont[t])
            hs.append(h)
        return torch.stack(hs), [h, c]
