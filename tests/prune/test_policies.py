"""The five pruning policies on small nets with planted values: exactly the expected structures go (expected
sets worked out by hand in the comments), absorbed masks and folded constants leave the outputs unchanged,
guardrails and bad input are typed one-line errors."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import PruneError, PruneGuardrailError
from caffessl.proto import caffe_pb2
from caffessl.prune import insert_masks, prune
from caffessl.prune.policies import keep_count
from tests.prune.helpers import BN_NET, PLAIN_NET, fixed_data, make_net, outputs, rows

GRPWISE = caffe_pb2.LayerParameter.DISCONNECTED_GRPWISE
ELTWISE = caffe_pb2.LayerParameter.DISCONNECTED_ELTWISE


def _plant_norms(net, layer, norms):
    """Filter i gets L2 norm norms[i] (every weight of the filter equal)."""
    w = net.params[layer][0].data
    per = int(np.prod(w.shape[1:]))
    for i, n in enumerate(norms):
        w[i] = n / np.sqrt(per)


def test_keep_count_by_hand():
    assert keep_count(4, 0.5) == 2            # ceil(0.5 * 4)
    assert keep_count(4, 0.25) == 3           # ceil(0.75 * 4)
    assert keep_count(50, 0.25) == 38         # ceil(37.5)
    assert keep_count(20, 0.5, round_to=8) == 16
    assert keep_count(20, 0.0, round_to=8) == 20      # never more than C
    assert keep_count(10, 0.7) == 3           # 0.3 * 10 is 3.0000000000000004 in floats: still 3


def test_reduction_rate_removes_the_weakest_filters_and_their_columns():
    net = make_net()
    _plant_norms(net, "conv1", [3.0, 1.0, 2.0, 0.5])
    _plant_norms(net, "conv2", [1.0, 4.0, 3.0, 2.0])
    res = prune(net, "reduction-rate", 0.5)
    # conv1 keeps filters 0 and 2 (norms 3, 2); conv2 keeps 1 and 2 (4, 3)
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [True, False, True, False]
    assert (np.abs(rows(net, "conv2")).sum(1) > 0).tolist() == [False, True, True, False]
    assert net.params["conv1"][1].data[[1, 3]].tolist() == [0, 0]
    assert not net.params["conv2"][0].data[:, [1, 3]].any()           # conv2's columns of removed channels
    ip = net.params["ip"][0].data.reshape(3, 4, -1)
    assert not ip[:, [0, 3]].any() and ip[:, [1, 2]].all()
    rep = {r.layer: r for r in res.layers}
    assert (rep["conv1"].kept, rep["conv2"].kept, rep["ip"].kept) == (2, 2, 3)
    assert rep["ip"].note == "inputs of conv2's removed channels"      # its own outputs go to the loss
    assert rep["conv2"].note == "2 filter(s) removed; inputs of conv1's removed channels"
    modes = {lp.name: lp.connectivity_mode for lp in res.ft_param.layer}
    assert modes["conv1"] == modes["conv2"] == modes["ip"] == GRPWISE


def test_per_layer_amounts_and_round_to():
    net = make_net()
    _plant_norms(net, "conv1", [3.0, 1.0, 2.0, 0.5])
    prune(net, "reduction-rate", 0.0, layers="conv1=0.75")      # ceil(0.25 * 4) = 1: only filter 0 stays
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [True, False, False, False]
    assert (np.abs(rows(net, "conv2")).sum(1) > 0).all()        # not named: untouched
    net = make_net()
    _plant_norms(net, "conv1", [3.0, 1.0, 2.0, 0.5])
    prune(net, "reduction-rate", 0.75, layers=["conv1"], round_to=2)   # 1 rounded up to 2: filters 0, 2
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [True, False, True, False]


def test_folded_constant_keeps_the_output():
    """A zero filter with bias 0.7 outputs relu(0.7) = 0.7 everywhere: conv2 (no padding) folds
    0.7 * sum(its weights on that channel) into its bias, so the pruned net computes the same."""
    net = make_net()
    x = fixed_data(net)
    net.params["conv1"][0].data[2] = 0
    net.params["conv1"][1].data[2] = 0.7
    want = outputs(net, data=x)
    cols = net.params["conv2"][0].data[:, 2].reshape(4, -1).sum(1).astype(np.float64)
    b2 = net.params["conv2"][1].data.astype(np.float64).copy()
    prune(net, "reduction-rate", 0.25, layers=["conv1"])            # 3 of 4 kept: the zero filter goes
    assert not net.params["conv2"][0].data[:, 2].any() and net.params["conv1"][1].data[2] == 0
    np.testing.assert_allclose(net.params["conv2"][1].data, b2 + 0.7 * cols, rtol=1e-6)
    got = outputs(net, data=x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_bn_gamma_global_percentile_and_exact_fold():
    net = make_net(BN_NET)
    x = fixed_data(net)
    net.params["scale1"][0].data[...] = [0.9, 0.0, 0.5, 0.05]
    net.params["scale2"][0].data[...] = [0.0, 0.7, 0.2, 0.3]
    net.params["scale1"][1].data[...] = [0.1, 0.4, -0.2, 0.3]        # channel 1's shift: a constant 0.4
    net.params["scale2"][1].data[...] = [-0.3, 0.1, 0.2, 0.1]        # channel 0: relu(-0.3) = 0
    # all |gamma|: 0 0 .05 .2 .3 .5 .7 .9 -> the 0.25-quantile (linear) is .05 + .75 * 0 = 0.0375... by hand:
    # position 0.25 * 7 = 1.75 -> 0 + 0.75 * (0.05 - 0) = 0.0375: removed are gamma 0 (scale1 ch1, scale2 ch0)
    q = 0.25
    assert np.quantile([0, 0, .05, .2, .3, .5, .7, .9], q) == pytest.approx(0.0375)
    want = outputs(net, data=x)
    prune(net, "bn-gamma", q)
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [True, False, True, True]
    assert (np.abs(rows(net, "conv2")).sum(1) > 0).tolist() == [False, True, True, True]
    assert net.params["scale1"][1].data[1] == 0 and net.params["scale2"][1].data[0] == 0
    got = outputs(net, data=x)          # gamma 0 removed exactly: 0.4 folded into conv2's bias, relu(-.3) = 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # p = 0.5: median of the 8 is (.2 + .3) / 2 = .25: gamma 0, 0, .05, .2 go
    net = make_net(BN_NET)
    net.params["scale1"][0].data[...] = [0.9, 0.0, 0.5, 0.05]
    net.params["scale2"][0].data[...] = [0.0, 0.7, 0.2, 0.3]
    prune(net, "bn-gamma", 0.5)
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [True, False, True, False]
    assert (np.abs(rows(net, "conv2")).sum(1) > 0).tolist() == [False, True, False, True]


def test_bn_gamma_removes_zero_gammas_when_the_quantile_is_zero():
    """Sparsity training leaves most gammas exactly 0 (L1 + Zerout): the 0.5-quantile of
    0 0 0 0 0 .4 .6 .8 is 0 and no |gamma| is under it -- the five zero channels still go (each carries a
    constant, folded exactly), the others stay."""
    net = make_net(BN_NET)
    x = fixed_data(net)
    net.params["scale1"][0].data[...] = [0.0, 0.4, 0.0, 0.6]
    net.params["scale2"][0].data[...] = [0.0, 0.0, 0.8, 0.0]
    assert np.quantile([0, 0, 0, 0, 0, .4, .6, .8], 0.5) == 0
    want = outputs(net, data=x)
    res = prune(net, "bn-gamma", 0.5)
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [False, True, False, True]
    assert (np.abs(rows(net, "conv2")).sum(1) > 0).tolist() == [False, False, True, False]
    assert [r.kept for r in res.layers if r.layer in ("conv1", "conv2")] == [2, 1]
    np.testing.assert_allclose(outputs(net, data=x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_mask_threshold_absorbs_masks_exactly(tmp_path):
    net = make_net()
    x = fixed_data(net)
    param, arrays, producers = insert_masks(net)
    assert producers == ["conv1", "conv2"]
    mask = next(lp for lp in param.layer if lp.name == "conv1_mask")
    assert mask.type == "Scale" and mask.param[0].regularization_type == "L1" and not mask.scale_param.bias_term
    assert arrays["conv1_mask"][0].tolist() == [1, 1, 1, 1]
    masked = caffe.Net(param, caffe.TEST)
    for name, arrs in arrays.items():
        for i, a in enumerate(arrs):
            masked.params[name][i].data[...] = a
    masked.params["conv1_mask"][0].data[...] = [1.5, 0.0, 0.8, -0.5]
    masked.params["conv2_mask"][0].data[...] = [0.004, 1.0, 2.0, 0.3]
    want = outputs(masked, data=x)
    res = prune(masked, "mask-threshold", 0.005)        # |m| <= 0.005: conv1 ch1 (0), conv2 ch0 (0.004)
    assert sorted(res.removed_layers) == ["conv1_mask", "conv2_mask"]
    assert (np.abs(rows(masked, "conv1")).sum(1) > 0).tolist() == [True, False, True, True]
    assert (np.abs(rows(masked, "conv2")).sum(1) > 0).tolist() == [False, True, True, True]
    # the fine-tuning net has no mask layers; with the saved weights it computes the masked net's output,
    # except for conv2 ch0 (mask 0.004 -> removed): compare with that channel's mask set to 0 instead
    from caffessl.prune import save
    save(res, masked, str(tmp_path / "p.caffemodel"), str(tmp_path / "p_ft.prototxt"))
    ft = caffe.Net(str(tmp_path / "p_ft.prototxt"), caffe.TEST, weights=str(tmp_path / "p.caffemodel"))
    assert "conv1_mask" not in ft.layer_dict
    ref = caffe.Net(param, caffe.TEST)
    for name, arrs in arrays.items():
        for i, a in enumerate(arrs):
            ref.params[name][i].data[...] = a
    ref.params["conv1_mask"][0].data[...] = [1.5, 0.0, 0.8, -0.5]
    ref.params["conv2_mask"][0].data[...] = [0.0, 1.0, 2.0, 0.3]
    want0 = outputs(ref, data=x)
    got = outputs(ft, data=x)
    np.testing.assert_allclose(got, want0, rtol=1e-4, atol=1e-4 * np.abs(want0).max())
    assert np.abs(want - want0).max() > 0                   # the 0.004 channel did contribute before


def test_magnitude_threshold_by_hand():
    net = make_net()
    w = net.params["ip"][0].data
    w[...] = 0
    w[0, :4] = [1, -1, 3, -3]
    w[1, :2] = [2, -2]
    # non-zero weights 1 -1 3 -3 2 -2: mean 0, std = sqrt(28 / 6) = 2.160; q = 1 keeps |w| >= 2.160: 3, -3
    res = prune(net, "magnitude", 1.0, layers=["ip"])
    assert np.flatnonzero(w.reshape(-1)).tolist() == [2, 3] and w[0, 2] == 3 and w[0, 3] == -3
    rep = {r.layer: r for r in res.layers}
    assert (rep["ip"].nonzero_before, rep["ip"].nonzero_after) == (6, 2)
    assert {lp.name: lp.connectivity_mode for lp in res.ft_param.layer}["ip"] == ELTWISE
    assert rep["conv1"].note == "not pruned"
    w[0, :4] = [1, -1, 3, -3]
    w[1, :2] = [2, -2]
    prune(net, "magnitude", 0.9, layers=["ip"])       # 0.9 * 2.160 = 1.944: 2 and -2 stay too
    assert np.flatnonzero(w.reshape(-1)).tolist() == [2, 3, w.shape[1], w.shape[1] + 1]
    # a second round sees only the survivors 3 -3 2 -2: std sqrt(26 / 4) = 2.55 -> q = 0.9 gives 2.29
    prune(net, "magnitude", 0.9, layers=["ip"])
    assert np.flatnonzero(w.reshape(-1)).tolist() == [2, 3]


def test_zeros_policy_threshold_and_mode():
    net = make_net()
    w = net.params["conv1"][0].data
    w[0] = 5e-5                          # a whole filter under 1e-4: gone
    w[1, 0, 0, 0] = -2e-5
    res = prune(net, "zeros")
    assert not w[0].any() and w[1, 0, 0, 0] == 0 and w[1].any()
    assert net.params["conv1"][1].data[0] != 0          # the bias stays (slim folds the constant)
    assert {r.layer: r.kept for r in res.layers}["conv1"] == 3
    assert {lp.name: lp.connectivity_mode for lp in res.ft_param.layer}["conv1"] == GRPWISE
    net = make_net()
    net.params["conv2"][0].data[...] = 0.01
    prune(net, "zeros", 0.02, layers=["conv1"], min_channels=1)   # conv2 not named: kept
    assert net.params["conv2"][0].data.all()


def test_guardrail_stops_unless_relaxed():
    net = make_net()
    with pytest.raises(PruneGuardrailError, match="layer 'conv1'.*--clamp"):
        prune(net, "magnitude", 100.0, layers=["conv1"])
    assert np.abs(rows(net, "conv1")).sum() > 0          # nothing changed
    norms = np.linalg.norm(rows(net, "conv1"), axis=1)
    prune(net, "magnitude", 100.0, layers=["conv1"], clamp=True)
    alive = np.abs(rows(net, "conv1")).sum(1) > 0
    assert alive.sum() == 1 and alive[np.argmax(norms)]
    net = make_net()
    prune(net, "magnitude", 100.0, layers=["conv1"], min_channels=0)
    assert not rows(net, "conv1").any()
    net = make_net(BN_NET)
    net.params["scale1"][0].data[...] = [0.01, 0.02, 0.03, 0.04]
    net.params["scale2"][0].data[...] = [1, 2, 3, 4]
    with pytest.raises(PruneGuardrailError, match="0 of 4 filters of layer 'conv1'"):
        prune(net, "bn-gamma", 0.5)
    prune(net, "bn-gamma", 0.5, clamp=True, min_channels=2)
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).tolist() == [False, False, True, True]


@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="prunning", amount=0.5), "unknown pruning policy 'prunning'"),
    (dict(policy="reduction-rate", amount=1.0), r"must be in \[0, 1\)"),
    (dict(policy="bn-gamma", amount=-0.1), r"must be in \[0, 1\)"),
    (dict(policy="reduction-rate", amount=0.5, layers="conv9"), "no layer named 'conv9'.*did you mean 'conv[12]'"),
    (dict(policy="reduction-rate", amount=0.5, layers="ip"), "layer 'ip': its channels cannot be removed"),
    (dict(policy="reduction-rate", amount=0.5, layers="relu1"), "'relu1' is a ReLU layer"),
    (dict(policy="magnitude", amount=0), "q must be > 0"),
    (dict(policy="reduction-rate"), "needs --amount"),
    (dict(policy="mask-threshold", amount=0.1), "no layer .* has channels it can remove"),
])
def test_bad_input_is_a_typed_error(kwargs, message):
    net = make_net()
    with pytest.raises(PruneError, match=message):
        prune(net, kwargs.pop("policy"), kwargs.pop("amount", None), **kwargs)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from caffessl.cli import main
    from caffessl.io.prototxt import write_prototxt
    from tests.prune.helpers import net_param
    model = tmp_path / "net.prototxt"
    write_prototxt(str(model), net_param(PLAIN_NET))
    net = make_net()
    net.save(str(tmp_path / "w.caffemodel"))
    base = ["prune", "--model", str(model), "--weights", str(tmp_path / "w.caffemodel"),
            "--out-weights", str(tmp_path / "o.caffemodel")]
    for extra, msg in ((["--policy", "reduction-rate", "--amount", "1.5"], "must be in [0, 1)"),
                       (["--policy", "nope"], "unknown pruning policy"),
                       (["--policy", "reduction-rate", "--amount", "0.5", "--layers", "convX"], "no layer named")):
        assert main(base + extra) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err and "Traceback" not in err
    assert main(base + ["--policy", "reduction-rate", "--amount", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "| conv1 | Convolution | 2/4 |" in out
    ft = caffe.Net(str(tmp_path / "o_ft.prototxt"), caffe.TEST, weights=str(tmp_path / "o.caffemodel"))
    assert ft.params["conv1"][0].data.reshape(4, -1).any(axis=1).sum() == 2
