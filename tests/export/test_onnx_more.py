"""ONNX export of Embed, ArgMax, Tile, Reduction, MVN, Threshold, Silence, LSTMUnit, RNN and LSTM: each
exported graph, run in onnxruntime, gives caffessl's forward results (Caffe's semantics: gate order, cont
resetting the state mid-sequence, static input, exposed hidden state, ArgMax's tie order)."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import ExportError
from caffessl.export.onnx import export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MAX_ERR = {}   # blob -> max abs difference seen (printed with -s; the report quotes them)


def _net(tmp_path, inputs, body):
    """A TEST net: one Input layer with ``inputs`` {top: shape}, then ``body``; params seeded at random."""
    tops = "".join(f'top: "{t}" ' for t in inputs)
    shapes = "".join("shape { " + "".join(f"dim: {d} " for d in s) + "} " for s in inputs.values())
    p = tmp_path / "n.prototxt"
    p.write_text(f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes}}} }}\n' + body)
    net = caffe.Net(str(p), caffe.TEST)
    rng = np.random.RandomState(7)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.randn(*b.shape) * 0.5
    return net


def _check(net, tmp_path, feeds, blobs, exact=False):
    path = tmp_path / "net.onnx"
    export(net, path, outputs=blobs)
    onnx.checker.check_model(onnx.load(str(path)))
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in s.get_outputs()],
                   s.run(None, {k: np.asarray(v, np.float32) for k, v in feeds.items()})))
    net.forward(**feeds)
    for b in blobs:
        want = net.blobs[b].data
        assert got[b].shape == want.shape, (b, got[b].shape, want.shape)
        diff = np.abs(got[b].astype(np.float64) - want)
        MAX_ERR[b] = max(MAX_ERR.get(b, 0.0), float(diff.max()) if diff.size else 0.0)
        if exact:
            np.testing.assert_array_equal(got[b], want, err_msg=b)
        else:
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5, err_msg=b)
    return got


def _rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# -- simple layers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_embed_gathers_rows_plus_bias(tmp_path, bias):
    net = _net(tmp_path, {"idx": (3, 4)},
               f'layer {{ name: "emb" type: "Embed" bottom: "idx" top: "emb" embed_param {{ num_output: 5 '
               f'input_dim: 7 bias_term: {str(bias).lower()} }} }}')
    idx = np.random.RandomState(1).randint(0, 7, size=(3, 4)).astype(np.float32)
    idx[0, 0], idx[2, 3] = 0, 6
    _check(net, tmp_path, {"idx": idx}, ["emb"], exact=True)


@pytest.mark.parametrize("param", [
    "",                                              # (N, 1, 1) indices over the flattened item
    "top_k: 3",
    "top_k: 4 out_max_val: true",                    # (N, 2, k): indices then values
    "axis: 1",
    "axis: 1 top_k: 2 out_max_val: true",            # values along the axis
    "axis: -1 top_k: 3",
    "axis: 2 top_k: 5",
])
def test_argmax_layouts_and_caffe_tie_order(tmp_path, param):
    net = _net(tmp_path, {"data": (2, 3, 5, 4)},
               f'layer {{ name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param {{ {param} }} }}')
    # few distinct values: many ties, which Caffe orders larger index first
    x = np.random.RandomState(2).randint(-2, 3, size=(2, 3, 5, 4)).astype(np.float32)
    _check(net, tmp_path, {"data": x}, ["am"], exact=True)


def test_argmax_two_axis_input_pads_to_three_axes(tmp_path):
    net = _net(tmp_path, {"data": (3, 6)},
               'layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { top_k: 2 '
               'out_max_val: true } }')
    x = np.random.RandomState(3).randint(0, 3, size=(3, 6)).astype(np.float32)
    got = _check(net, tmp_path, {"data": x}, ["am"], exact=True)
    assert got["am"].shape == (3, 2, 2)


@pytest.mark.parametrize("axis,tiles", [(0, 2), (1, 3), (-1, 2), (2, 1)])
def test_tile(tmp_path, axis, tiles):
    net = _net(tmp_path, {"data": (2, 3, 4)},
               f'layer {{ name: "t" type: "Tile" bottom: "data" top: "t" '
               f'tile_param {{ axis: {axis} tiles: {tiles} }} }}')
    _check(net, tmp_path, {"data": _rand(2, 3, 4)}, ["t"], exact=True)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -0.5), (2, 2.0), (-1, 1.0)])
def test_reduction(tmp_path, op, axis, coeff):
    net = _net(tmp_path, {"data": (2, 3, 4, 5)},
               f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" reduction_param {{ operation: {op} '
               f'axis: {axis} coeff: {coeff} }} }}')
    _check(net, tmp_path, {"data": _rand(2, 3, 4, 5, seed=4)}, ["r"])


@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("ac", [True, False])
def test_mvn(tmp_path, nv, ac):
    net = _net(tmp_path, {"data": (2, 3, 4, 5)},
               f'layer {{ name: "mvn" type: "MVN" bottom: "data" top: "mvn" mvn_param {{ normalize_variance: '
               f'{str(nv).lower()} across_channels: {str(ac).lower()} eps: 0.1 }} }}')
    # eps is added to the std after the sqrt: a large eps on a small-variance input shows the placement
    x = _rand(2, 3, 4, 5, seed=5) * 0.2 + 3
    _check(net, tmp_path, {"data": x}, ["mvn"])


def test_threshold_and_silence(tmp_path):
    net = _net(tmp_path, {"data": (2, 3, 4), "unused": (2, 2)},
               'layer { name: "th" type: "Threshold" bottom: "data" top: "th" threshold_param { threshold: 0.25 } }\n'
               'layer { name: "quiet" type: "Silence" bottom: "unused" }')
    x = _rand(2, 3, 4, seed=6)
    x[0, 0, :2] = 0.25                                   # equal to the threshold: 0 (strictly greater)
    path = tmp_path / "s.onnx"
    m = export(net, path, outputs=["th"])
    assert [n.op_type for n in m.graph.node] == ["Greater", "Cast"]
    _check(net, tmp_path, {"data": x, "unused": np.zeros((2, 2), np.float32)}, ["th"], exact=True)


# -- recurrent layers -------------------------------------------------------------------------------------

T, N = 5, 3
# a 0 in the middle of each stream's sequence: the state resets there (stream 1 at t = 2, stream 2 at t = 4)
CONT = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 1, 0]], np.float32)


def _recurrent_net(tmp_path, kind, static=False, expose=False, D=4, x_shape=(T, N, 2, 3)):
    inputs = {"x": x_shape, "cont": tuple(x_shape[:2])}
    bottoms = 'bottom: "x" bottom: "cont" '
    tops = 'top: "out" '
    if static:
        inputs["xs"] = (N, 5)
        bottoms += 'bottom: "xs" '
    states = ["h", "c"] if kind == "LSTM" else ["h"]
    if expose:
        for s in states:
            inputs[f"{s}0"] = (1, N, D)
            bottoms += f'bottom: "{s}0" '
            tops += f'top: "{s}T" '
    return _net(tmp_path, inputs,
                f'layer {{ name: "rec" type: "{kind}" {bottoms}{tops}recurrent_param {{ num_output: {D} '
                f'expose_hidden: {str(expose).lower()} }} }}'), inputs


def _feeds(inputs, cont=CONT, seed=8):
    rng = np.random.RandomState(seed)
    f = {k: rng.randn(*s).astype(np.float32) for k, s in inputs.items()}
    f["cont"] = cont
    return f


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, False), (False, True), (True, True)])
def test_recurrent_unrolled_with_cont_reset(tmp_path, kind, static, expose):
    net, inputs = _recurrent_net(tmp_path, kind, static, expose)
    blobs = ["out"] + (["hT", "cT"][:2 if kind == "LSTM" else 1] if expose else [])
    _check(net, tmp_path, _feeds(inputs), blobs)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_cont_reset_matters(tmp_path, kind):
    # the same x with the mid-sequence 0 removed gives a different output after it: the graph does reset
    net, inputs = _recurrent_net(tmp_path, kind)
    feeds = _feeds(inputs)
    a = _check(net, tmp_path, feeds, ["out"])["out"]
    cont = CONT.copy()
    cont[2, 1] = 1
    net2, _ = _recurrent_net(tmp_path, kind)
    b = _check(net2, tmp_path, dict(feeds, cont=cont), ["out"])["out"]
    np.testing.assert_array_equal(a[:2], b[:2])
    assert np.abs(a[2:, 1] - b[2:, 1]).max() > 1e-3


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_fractional_cont_and_single_step(tmp_path, kind):
    net, inputs = _recurrent_net(tmp_path, kind, expose=True)
    cont = CONT.copy()
    cont[3] = [0.5, 2.0, -1.0]                           # caffessl multiplies by cont whatever its value
    _check(net, tmp_path, _feeds(inputs, cont, seed=9), ["out", "hT"])
    net, inputs = _recurrent_net(tmp_path, kind, x_shape=(1, N, 6))
    _check(net, tmp_path, _feeds(inputs, np.array([[0, 1, 1]], np.float32)), ["out"])


def test_recurrent_after_reset_matches_fresh_graph(tmp_path):
    # the graph starts from zeros: caffessl's state after loading or reset(), whatever an earlier forward left
    net, inputs = _recurrent_net(tmp_path, "LSTM")
    feeds = _feeds(inputs, np.ones((T, N), np.float32))
    net.forward(**feeds)
    net.layers[-1].reset()
    _check(net, tmp_path, feeds, ["out"])


def test_lstm_unit(tmp_path):
    D = 4
    net = _net(tmp_path, {"c_prev": (1, N, D), "gates": (1, N, 4 * D), "cont": (1, N)},
               'layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" '
               'top: "c" top: "h" }')
    feeds = {"c_prev": _rand(1, N, D, seed=10), "gates": _rand(1, N, 4 * D, seed=11) * 2,
             "cont": np.array([[1, 0, 0.5]], np.float32)}
    feeds["gates"][0, 1, D:2 * D] = np.nan    # f' of a stream with cont 0: f is an exact 0 (Caffe's ternary)
    _check(net, tmp_path, feeds, ["c", "h"])


def test_max_differences_recorded():
    # runs last in this module: the measured differences, for `pytest -s`
    print("\nmax |onnxruntime - caffessl| per blob:", {k: f"{v:.3g}" for k, v in sorted(MAX_ERR.items())})


# -- refusals ---------------------------------------------------------------------------------------------

def test_data_dependent_layers_refuse_naming_themselves(tmp_path):
    net = _net(tmp_path, {"data": (4, 3), "sel": (4,)},
               'layer { name: "keep" type: "Filter" bottom: "data" bottom: "sel" top: "kept" }')
    with pytest.raises(ExportError, match="'keep' \\(Filter\\)"):
        export(net, tmp_path / "x.onnx", outputs=["kept"])
    net = _net(tmp_path, {"data": (2, 3, 4), "s": (2, 3)},
               'layer { name: "sc" type: "Scale" bottom: "data" bottom: "s" top: "y" scale_param { axis: 0 } }')
    with pytest.raises(ExportError, match="'sc' \\(Scale\\).*second bottom"):
        export(net, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
