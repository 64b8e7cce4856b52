"""Recurrent layers (RNN, LSTM, LSTMUnit) against plain numpy re-computations of BVLC Caffe's unrolled nets
(rnn_layer.cpp, lstm_layer.cpp, lstm_unit_layer.cpp, recurrent_layer.cpp): forward with and without a static
input, expose_hidden, cont resets, the state carried across forwards, float64 finite-difference gradients,
Caffe's seeded fill order, caffemodel round trips and typed errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl import caffe_rng
from caffessl.errors import LayerConfigError, MissingBottomError, ShapeMismatchError
from caffessl.fillers import fill
from caffessl.proto import caffe_pb2
from tests.layers.gradcheck import build_net, check_layer_gradients

RNG = np.random.default_rng(7)
T, N, D = 3, 2, 4
X_SHAPE = (T, N, 3, 2)          # trailing axes flattened: K = 6
XS_SHAPE = (N, 2, 3)            # Ks = 6
FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.3 }'


# -- numpy references (Caffe's equations) --------------------------------------------------------------

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def np_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o, h0=None, xs=None, W_s=None):
    t_, n = cont.shape
    X = x.reshape(t_, n, -1)
    h = np.zeros((n, W_hh.shape[0])) if h0 is None else h0.reshape(n, -1)
    out = []
    for t in range(t_):
        pre = (cont[t][:, None] * h) @ W_hh.T + X[t] @ W_xh.T + b_h
        if xs is not None:
            pre = pre + xs.reshape(n, -1) @ W_s.T
        h = np.tanh(pre)
        out.append(np.tanh(h @ W_ho.T + b_o))
    return np.stack(out), h[None]


def np_lstm(x, cont, W_xc, b_c, W_hc, h0=None, c0=None, xs=None, W_s=None):
    t_, n = cont.shape
    d = W_hc.shape[1]
    X = x.reshape(t_, n, -1)
    h = np.zeros((n, d)) if h0 is None else h0.reshape(n, d)
    c = np.zeros((n, d)) if c0 is None else c0.reshape(n, d)
    out = []
    for t in range(t_):
        gate = (cont[t][:, None] * h) @ W_hc.T + X[t] @ W_xc.T + b_c
        if xs is not None:
            gate = gate + xs.reshape(n, -1) @ W_s.T
        c, h = np_lstm_unit(c, gate, cont[t])
        out.append(h)
    return np.stack(out), h[None], c[None]


def np_lstm_unit(c_prev, X, cont):
    d = c_prev.shape[-1]
    i, f, o = sigmoid(X[..., :d]), sigmoid(X[..., d:2 * d]), sigmoid(X[..., 2 * d:3 * d])
    g = np.tanh(X[..., 3 * d:])
    c = cont[..., None] * f * c_prev + i * g
    return c, o * np.tanh(c)


def np_lstm_unit_backward(c_prev, X, cont, dc, dh):
    """LSTMUnitLayer::Backward_cpu's closed form (f includes cont)."""
    d = c_prev.shape[-1]
    i, o = sigmoid(X[..., :d]), sigmoid(X[..., 2 * d:3 * d])
    f = np.where(cont[..., None] == 0, 0, cont[..., None] * sigmoid(X[..., d:2 * d]))
    g = np.tanh(X[..., 3 * d:])
    tc = np.tanh(f * c_prev + i * g)
    ct = dc + dh * o * (1 - tc * tc)
    dX = np.concatenate([ct * g * i * (1 - i), ct * c_prev * f * (1 - f), dh * tc * o * (1 - o),
                         ct * i * (1 - g * g)], axis=-1)
    return ct * f, dX


# -- helpers ----------------------------------------------------------------------------------------------

def layer_text(kind, bottoms, tops, extra=""):
    b = " ".join(f'bottom: "{n}"' for n in bottoms)
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'name: "rec" type: "{kind}" {b} {t} recurrent_param {{ num_output: {D} {FILLERS} {extra} }}'


def make(kind, inputs, bottoms, tops, extra=""):
    net, arrays, tops_, name = build_net(layer_text(kind, bottoms, tops, extra), inputs)
    return net, net.layer_dict[name]


def run(net, arrays):
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    net.forward()


def weights(layer):
    return [p.detach().numpy().astype(np.float64) for p in layer.params]


def cont_with_reset():
    c = np.ones((T, N))
    c[0, :] = 0          # every stream starts at t = 0
    c[1, 1] = 0          # stream 1 starts a new sequence mid-batch
    return c


# -- forward against numpy ------------------------------------------------------------------------------

@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward_matches_caffe_equations(static):
    x, cont, xs = RNG.standard_normal(X_SHAPE), cont_with_reset(), RNG.standard_normal(XS_SHAPE)
    inputs = [x, cont] + ([xs] if static else [])
    bottoms = ["x", "cont"] + (["xs"] if static else [])
    net, layer = make("RNN", inputs, bottoms, ["o"])
    run(net, dict(zip(bottoms, inputs)))
    W = weights(layer)
    assert [w.shape for w in W] == [(D, 6), (D,)] + ([(D, 6)] if static else []) + [(D, D), (D, D), (D,)]
    if static:
        W_xh, b_h, W_s, W_hh, W_ho, b_o = W
        expect, _ = np_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o, xs=xs, W_s=W_s)
    else:
        expect, _ = np_rnn(x, cont, *W)
    np.testing.assert_allclose(net.blobs["o"].data, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward_matches_caffe_equations(static):
    x, cont, xs = RNG.standard_normal(X_SHAPE), cont_with_reset(), RNG.standard_normal(XS_SHAPE)
    inputs = [x, cont] + ([xs] if static else [])
    bottoms = ["x", "cont"] + (["xs"] if static else [])
    net, layer = make("LSTM", inputs, bottoms, ["h"])
    run(net, dict(zip(bottoms, inputs)))
    W = weights(layer)
    assert [w.shape for w in W] == [(4 * D, 6), (4 * D,)] + ([(4 * D, 6)] if static else []) + [(4 * D, D)]
    if static:
        W_xc, b_c, W_s, W_hc = W
        expect, *_ = np_lstm(x, cont, W_xc, b_c, W_hc, xs=xs, W_s=W_s)
    else:
        expect, *_ = np_lstm(x, cont, *W)
    np.testing.assert_allclose(net.blobs["h"].data, expect, rtol=1e-12, atol=1e-12)


def test_cont_zero_mid_sequence_restarts_that_stream():
    # stream 1 restarted at t = 1: its outputs from t = 1 on equal a fresh run over x[1:]
    x, cont = RNG.standard_normal(X_SHAPE), cont_with_reset()
    net, layer = make("LSTM", [x, cont], ["x", "cont"], ["h"])
    run(net, {"x": x, "cont": cont})
    W_xc, b_c, W_hc = weights(layer)
    fresh, *_ = np_lstm(x[1:, 1:], np.array([[0.0], [1.0]]), W_xc, b_c, W_hc)
    np.testing.assert_allclose(net.blobs["h"].data[1:, 1:], fresh, rtol=1e-12, atol=1e-12)


def test_expose_hidden_rnn_and_lstm():
    x, cont, xs = RNG.standard_normal(X_SHAPE), np.ones((T, N)), RNG.standard_normal(XS_SHAPE)
    h0, c0 = RNG.standard_normal((1, N, D)), RNG.standard_normal((1, N, D))
    cont[2, 0] = 0
    net, layer = make("RNN", [x, cont, xs, h0], ["x", "cont", "xs", "h0"], ["o", "hT"], "expose_hidden: true")
    run(net, {"x": x, "cont": cont, "xs": xs, "h0": h0})
    W_xh, b_h, W_s, W_hh, W_ho, b_o = weights(layer)
    o, hT = np_rnn(x, cont, W_xh, b_h, W_hh, W_ho, b_o, h0=h0, xs=xs, W_s=W_s)
    np.testing.assert_allclose(net.blobs["o"].data, o, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["hT"].data, hT, rtol=1e-12, atol=1e-12)

    net, layer = make("LSTM", [x, cont, h0, c0], ["x", "cont", "h0", "c0"], ["h", "hT", "cT"],
                      "expose_hidden: true")
    for _ in range(2):          # exposed: nothing is carried between forwards
        run(net, {"x": x, "cont": cont, "h0": h0, "c0": c0})
        h, hT, cT = np_lstm(x, cont, *weights(layer), h0=h0, c0=c0)
        np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(net.blobs["hT"].data, hT, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(net.blobs["cT"].data, cT, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carried_across_forwards(kind):
    x1, x2 = RNG.standard_normal(X_SHAPE), RNG.standard_normal(X_SHAPE)
    cont1, cont2 = cont_with_reset(), np.ones((T, N))
    net, layer = make(kind, [x1, cont1], ["x", "cont"], ["y"])
    W = weights(layer)
    ref = np_rnn if kind == "RNN" else np_lstm
    run(net, {"x": x1, "cont": cont1})
    y1, *state = ref(x1, cont1, *W)
    np.testing.assert_allclose(net.blobs["y"].data, y1, rtol=1e-12, atol=1e-12)
    run(net, {"x": x2, "cont": cont2})          # continues from the first forward's last h (and c)
    kw = {"h0": state[0]} if kind == "RNN" else {"h0": state[0], "c0": state[1]}
    y2, *_ = ref(x2, cont2, *W, **kw)
    np.testing.assert_allclose(net.blobs["y"].data, y2, rtol=1e-12, atol=1e-12)
    cont2[0] = 0                                # a reset at t = 0 forgets it
    run(net, {"x": x2, "cont": cont2})
    np.testing.assert_allclose(net.blobs["y"].data, ref(x2, cont2, *W)[0], rtol=1e-12, atol=1e-12)
    layer.reset()                               # RecurrentLayer::Reset: zero state
    run(net, {"x": x2, "cont": np.ones((T, N))})
    np.testing.assert_allclose(net.blobs["y"].data, ref(x2, np.ones((T, N)), *W)[0], rtol=1e-12, atol=1e-12)


def test_lstm_one_timestep_at_a_time_equals_full_sequence():
    # Caffe's LSTMLayerTest.TestForward: T = 3 in one batch == three T = 1 forwards carrying the state
    x, cont = RNG.standard_normal(X_SHAPE), (np.arange(T)[:, None] > 0) * np.ones((T, N))
    full, layer = make("LSTM", [x, cont], ["x", "cont"], ["h"])
    run(full, {"x": x, "cont": cont})
    step, layer1 = make("LSTM", [x[:1], cont[:1]], ["x", "cont"], ["h"])
    for p, q in zip(layer1.params, layer.params):
        p.data.copy_(q.data)
    for t in range(T):
        run(step, {"x": x[t:t + 1], "cont": cont[t:t + 1]})
        np.testing.assert_allclose(step.blobs["h"].data[0], full.blobs["h"].data[t], rtol=1e-12, atol=1e-12)


def test_lstm_unit_alone():
    c_prev, X = RNG.standard_normal((1, 3, D)), RNG.standard_normal((1, 3, 4 * D))
    cont = np.array([[1.0, 0.0, 0.5]])            # 0.5: Caffe scales f by cont
    net, *_ = build_net('type: "LSTMUnit" bottom: "c_prev" bottom: "X" bottom: "cont" top: "c" top: "h"',
                        [c_prev, X, cont])
    net.blobs["c_prev"].data[...], net.blobs["X"].data[...], net.blobs["cont"].data[...] = c_prev, X, cont
    net.forward()
    c, h = np_lstm_unit(c_prev, X, cont)
    np.testing.assert_allclose(net.blobs["c"].data, c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-12, atol=1e-12)
    assert not net.layer_dict["under_test"].params
    # backward: Caffe's closed form, including f (1 - f) with f = cont * sigmoid(f') for a non-binary cont
    dc, dh = RNG.standard_normal(c.shape), RNG.standard_normal(h.shape)
    net.blobs["c"].diff[...], net.blobs["h"].diff[...] = dc, dh
    net.backward()
    dc_prev, dX = np_lstm_unit_backward(c_prev, X, cont, dc, dh)
    np.testing.assert_allclose(net.blobs["c_prev"].diff, dc_prev, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["X"].diff, dX, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(net.blobs["cont"].diff, 0)      # never a gradient to cont


def test_lstm_unit_zero_cont_gives_an_exact_zero_forget_gate():
    c_prev = RNG.standard_normal((1, 2, D))
    X = RNG.standard_normal((1, 2, 4 * D))
    X[..., D:2 * D] = np.nan                      # Caffe: f = (cont == 0) ? 0 : cont * sigmoid(f')
    net, *_ = build_net('type: "LSTMUnit" bottom: "c_prev" bottom: "X" bottom: "cont" top: "c" top: "h"',
                        [c_prev, X, np.zeros((1, 2))])
    net.blobs["c_prev"].data[...], net.blobs["X"].data[...] = c_prev, X
    net.forward()
    X[..., D:2 * D] = 0
    c, h = np_lstm_unit(np.zeros_like(c_prev), X, np.zeros((1, 2)))
    np.testing.assert_allclose(net.blobs["c"].data, c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-12, atol=1e-12)


# -- gradients (float64 finite differences) --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_gradients_x_xstatic_params(kind):
    # cont[0] = 0: every forward of the check starts from the same (reset) state
    x, xs = RNG.uniform(-1, 1, X_SHAPE), RNG.uniform(-1, 1, XS_SHAPE)
    check_layer_gradients(layer_text(kind, ["x", "cont", "xs"], ["y"]), [x, cont_with_reset(), xs],
                          check_bottoms=[0, 2], max_checks=25)


def test_lstm_unit_gradients():
    check_layer_gradients('type: "LSTMUnit" bottom: "c_prev" bottom: "X" bottom: "cont" top: "c" top: "h"',
                          [(1, 3, D), (1, 3, 4 * D), np.array([[1.0, 0.0, 1.0]])], check_bottoms=[0, 1])


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_expose_hidden_gradients_and_no_gradient_into_exposed_state(kind):
    # Caffe shares only the data of h_0/c_0 and h_T/c_T with its unrolled net: x and the params get their
    # gradients; h_0/c_0 get none, and diffs put on h_T/c_T reach nothing.
    states = ["h0"] if kind == "RNN" else ["h0", "c0"]
    tops = ["y"] + [s[0] + "T" for s in states]
    cont = np.ones((T, N))
    cont[1, 0] = 0
    inputs = [RNG.uniform(-1, 1, X_SHAPE), cont] + [RNG.uniform(-1, 1, (1, N, D)) for _ in states]
    text = layer_text(kind, ["x", "cont"] + states, tops, "expose_hidden: true")
    zeros_on_state_tops = [RNG.standard_normal((T, N, D))] + [np.zeros((1, N, D))] * len(states)
    check_layer_gradients(text, inputs, check_bottoms=[0], max_checks=25, top_weights=zeros_on_state_tops)
    net, arrays, tops_, name = build_net(text, inputs)
    run(net, arrays)
    for t in tops_:
        net.blobs[t].diff[...] = 1.0
    net.backward()
    assert np.abs(net.blobs["x"].diff).sum() > 0
    for s in states + ["cont"]:
        np.testing.assert_array_equal(net.blobs[s].diff, 0)
    before = [p.grad.clone() for p in net.layer_dict[name].params]
    net.clear_param_diffs()
    run(net, arrays)
    net.blobs["y"].diff[...] = 1.0
    for t in tops_[1:]:
        net.blobs[t].diff[...] = 123.0            # ignored
    net.backward()
    for b, p in zip(before, net.layer_dict[name].params):
        torch.testing.assert_close(p.grad, b)


# -- Caffe's seeded fill order ------------------------------------------------------------------------------

def _draw_expected(blobs):
    """Fill (shape, filler) in order from the current stream; return the arrays."""
    out = []
    for shape, fp in blobs:
        t = torch.empty(shape, dtype=torch.float32)
        out.append(fill(t, fp).numpy().copy())
    return out


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_seeded_fill_follows_the_unrolled_net(kind):
    wf = caffe_pb2.FillerParameter(type="gaussian", std=0.5)
    bf = caffe_pb2.FillerParameter(type="uniform", min=-0.2, max=0.3)
    G = D if kind == "RNN" else 4 * D
    # unrolled-net layer order: x_transform (W, b), static transform, then one hidden transform per timestep
    # (RNN: W_hh, W_ho, b_o; LSTM: W_hc) whose t = 1 copy is kept
    head = [((G, 6), wf), ((G,), bf), ((G, 6), wf)]
    step = [((D, D), wf), ((D, D), wf), ((D,), bf)] if kind == "RNN" else [((G, D), wf)]
    caffe.set_random_seed(1701)
    expect = _draw_expected(head + step * T)[:len(head) + len(step)]
    after = caffe_rng.get().rand()
    lp = layer_text(kind, ["x", "cont", "xs"], ["y"]).replace(FILLERS, "")
    lp += ' recurrent_param { weight_filler { type: "gaussian" std: 0.5 } ' \
          'bias_filler { type: "uniform" min: -0.2 max: 0.3 } }'
    net_text = (f'layer {{ name: "in" type: "Input" top: "x" top: "cont" top: "xs" input_param {{ '
                f'shape {{ dim: {T} dim: {N} dim: 3 dim: 2 }} shape {{ dim: {T} dim: {N} }} '
                f'shape {{ dim: {N} dim: 2 dim: 3 }} }} }} layer {{ {lp} }}')
    caffe.set_random_seed(1701)
    net = caffe.Net(_net_param(net_text), caffe.TEST)
    got = [b.data for b in net.params["rec"]]
    assert [g.shape for g in got] == [e.shape for e in expect]
    for g, e in zip(got, expect):
        np.testing.assert_array_equal(g, e)
    assert caffe_rng.get().rand() == after     # the stream is where Caffe leaves it after T fills


def _net_param(text):
    from caffessl.io.prototxt import parse_text
    return parse_text(text, caffe_pb2.NetParameter(), "<test>")


# -- whole nets: prototxt, caffemodel round trip ------------------------------------------------------------

NET = """
name: "seq"
layer { name: "data" type: "Input" top: "x" top: "cont" top: "xs"
  input_param { shape { dim: 3 dim: 2 dim: 5 } shape { dim: 3 dim: 2 } shape { dim: 2 dim: 4 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h"
  recurrent_param { num_output: 4 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "rnn" type: "RNN" bottom: "h" bottom: "cont" top: "o"
  recurrent_param { num_output: 3 weight_filler { type: "xavier" } } }
"""


def test_prototxt_net_and_caffemodel_round_trip(tmp_path):
    model = tmp_path / "seq.prototxt"
    model.write_text(NET)
    caffe.set_random_seed(3)
    net = caffe.Net(str(model), caffe.TEST)
    assert [b.data.shape for b in net.params["lstm"]] == [(16, 5), (16,), (16, 4), (16, 4)]
    assert [b.data.shape for b in net.params["rnn"]] == [(3, 4), (3,), (3, 3), (3, 3), (3,)]
    np.testing.assert_array_equal(net.params["lstm"][1].data, np.float32(0.1))
    x, xs = RNG.standard_normal((3, 2, 5)), RNG.standard_normal((2, 4))
    cont = np.array([[0.0, 0.0], [1, 1], [1, 0]])
    out = net.forward(x=x, cont=cont, xs=xs)["o"].copy()
    W = [[b.data.astype(np.float64) for b in net.params[n]] for n in ("lstm", "rnn")]
    W_xc, b_c, W_s, W_hc = W[0]
    h, *_ = np_lstm(x, cont, W_xc, b_c, W_hc, xs=xs, W_s=W_s)
    o, _ = np_rnn(h, cont, *W[1])
    np.testing.assert_allclose(out, o, rtol=1e-5, atol=1e-6)

    weights_path = tmp_path / "seq.caffemodel"
    net.save(str(weights_path))
    caffe.set_random_seed(99)                       # different init: everything must come from the file
    net2 = caffe.Net(str(model), str(weights_path), caffe.TEST)
    for name in ("lstm", "rnn"):
        for a, b in zip(net.params[name], net2.params[name]):
            assert a.data.shape == b.data.shape
            np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(net2.forward(x=x, cont=cont, xs=xs)["o"], out)


# -- errors ----------------------------------------------------------------------------------------------------

def _build(kind, shapes, bottoms, tops, extra=""):
    inp = " ".join(f"shape {{ {' '.join(f'dim: {d}' for d in s)} }}" for s in shapes)
    in_tops = " ".join(f'top: "{b}"' for b in dict.fromkeys(bottoms) if b != "nope")
    text = (f'layer {{ name: "in" type: "Input" {in_tops} input_param {{ {inp} }} }} '
            f'layer {{ {layer_text(kind, bottoms, tops, extra)} }}')
    return caffe.Net(_net_param(text), caffe.TEST)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_bad_inputs_raise_typed_errors(kind):
    ok = [(T, N, 5), (T, N)]
    with pytest.raises(ShapeMismatchError, match="rec.*cont"):
        _build(kind, [(T, N, 5), (T, N + 1)], ["x", "cont"], ["y"])
    with pytest.raises(ShapeMismatchError, match="cont"):
        _build(kind, [(T, N, 5), (T, N, 1)], ["x", "cont"], ["y"])
    with pytest.raises(ShapeMismatchError, match="x_static"):
        _build(kind, ok + [(N + 1, 3)], ["x", "cont", "xs"], ["y"])
    with pytest.raises(ShapeMismatchError, match="at least 3 axes"):
        _build(kind, [(T, N), (T, N)], ["x", "cont"], ["y"])
    with pytest.raises(LayerConfigError, match="rec.*bottom"):
        _build(kind, ok[:1], ["x"], ["y"])
    with pytest.raises(LayerConfigError, match="h_0"):
        _build(kind, ok, ["x", "cont"], ["y", "hT", "cT"][:1 + (kind == "LSTM") + 1], "expose_hidden: true")
    with pytest.raises(LayerConfigError, match="top"):
        _build(kind, ok, ["x", "cont"], ["y", "z"])
    with pytest.raises(LayerConfigError, match="num_output"):
        _build(kind, ok, ["x", "cont"], ["y"], "num_output: 0")
    with pytest.raises(MissingBottomError):
        _build(kind, ok[:1], ["x", "nope"], ["y"])
    states = ["h0"] + (["c0"] if kind == "LSTM" else [])
    with pytest.raises(ShapeMismatchError, match="h_0"):
        _build(kind, ok + [(1, N, D + 1)] * len(states), ["x", "cont"] + states,
               ["y"] + [s[0] + "T" for s in states], "expose_hidden: true")
    # T is fixed at set-up (Caffe: "input number of timesteps changed"); N may change
    net = _build(kind, ok, ["x", "cont"], ["y"])
    net.blobs["x"].reshape(T + 1, N, 5)
    net.blobs["cont"].reshape(T + 1, N)
    with pytest.raises(ShapeMismatchError, match="timesteps changed"):
        net.reshape()
    net.blobs["x"].reshape(T, N + 2, 5)
    net.blobs["cont"].reshape(T, N + 2)
    net.reshape()
    assert net.forward()["y"].shape == (T, N + 2, D)


def test_lstm_unit_bad_shapes():
    def build(shapes):
        inp = " ".join(f"shape {{ {' '.join(f'dim: {d}' for d in s)} }}" for s in shapes)
        text = (f'layer {{ name: "in" type: "Input" top: "c" top: "X" top: "cont" input_param {{ {inp} }} }} '
                'layer { name: "u" type: "LSTMUnit" bottom: "c" bottom: "X" bottom: "cont" top: "c1" top: "h1" }')
        return caffe.Net(_net_param(text), caffe.TEST)
    build([(1, 2, 3), (1, 2, 12), (1, 2)])
    with pytest.raises(ShapeMismatchError, match="4 \\* D"):
        build([(1, 2, 3), (1, 2, 11), (1, 2)])
    with pytest.raises(ShapeMismatchError, match="cont"):
        build([(1, 2, 3), (1, 2, 12), (1, 3)])
    with pytest.raises(ShapeMismatchError, match="c_prev"):
        build([(2, 2, 3), (1, 2, 12), (1, 2)])
