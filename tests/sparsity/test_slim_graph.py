"""Slimming through Slice and the Eltwise operations, what stops it (a layer it does not know), and the
``caffessl slim`` command's JSON report, one-line errors and refusal to write a net that fails the check."""
import json

import numpy as np
import pytest

import caffessl.sparsity.slim as slim_mod
from caffessl.cli import main as cli_main
from caffessl.sparsity.slim import slim
from tests.sparsity.slim_nets import build, one_thread, randomize, table, verify  # noqa: F401

HEAD = 'name: "g"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }\n'


def _reports(result):
    return {r.layer: r for r in result.producers}


SLICE = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "slice" type: "Slice" bottom: "conv1" top: "s1" top: "s2" slice_param { slice_point: 3 } }
layer { name: "conv_a" type: "Convolution" bottom: "s1" top: "conv_a" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv_b" type: "Convolution" bottom: "s2" top: "conv_b" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "conv_a" bottom: "conv_b" top: "cat" }
layer { name: "ip" type: "InnerProduct" bottom: "cat" top: "ip" inner_product_param { num_output: 3 } }
"""


def test_slice_outputs_follow_their_offsets(tmp_path):
    net = build(tmp_path, SLICE)
    net.params["conv_a"][0].data[:, 1] = 0         # slice output 1's channel 1 = conv1's channel 1
    net.params["conv_b"][0].data[:, 2] = 0         # slice output 2's channel 2 = conv1's channel 5
    net.params["conv_b"][0].data[3] = 0            # conv_b's zero filter: Concat channel 7 into ip's bias
    result = slim(net)
    rep = _reports(result)
    assert (rep["conv1"].after, rep["conv1"].unused, rep["conv_b"].folded) == (6, 2, 1)
    small = verify(net, result, tmp_path, table(net, {
        "conv1": [(6, 3, 1, 1), (6,)], "conv_a": [(4, 2, 3, 3), (4,)], "conv_b": [(3, 4, 1, 1), (3,)],
        "ip": [(3, 7 * 36), (3,)]}))
    assert small.layer_dict["slice"].param.slice_param.slice_point == [2]


ELTWISE = """layer {{ name: "ca" type: "Convolution" bottom: "data" top: "ca" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "cb" type: "Convolution" bottom: "data" top: "cb" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "e" type: "Eltwise" bottom: "ca" bottom: "cb" top: "e" eltwise_param {{ {op} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "e" top: "ip" inner_product_param {{ num_output: 3 }} }}
"""


@pytest.mark.parametrize("op,zero_a,zero_b,value,removed", [
    ("operation: SUM coeff: 2 coeff: -1", {1: 0.5}, {1: 0.25}, 2 * 0.5 - 0.25, [1]),
    ("operation: PROD", {2: 0.0}, {}, 0.0, [2]),              # 0 times anything: 0, though cb's filter is live
    ("operation: MAX", {0: 1.0, 3: 0.5}, {0: 2.0}, 2.0, [0]),  # channel 3 is live in cb: stays
])
def test_eltwise_constants(tmp_path, op, zero_a, zero_b, value, removed):
    net = build(tmp_path, HEAD + ELTWISE.format(op=op))
    for name, zeros in (("ca", zero_a), ("cb", zero_b)):
        for c, b in zeros.items():
            net.params[name][0].data[c], net.params[name][1].data[c] = 0, b
    w = net.params["ip"][0].data.reshape(3, 4, 36).copy()
    want_bias = net.params["ip"][1].data + value * w[:, removed[0]].sum(1)
    result = slim(net)
    rep = _reports(result)
    assert rep["ca"].after == rep["cb"].after == 3
    small = verify(net, result, tmp_path, table(net, {"ca": [(3, 3, 1, 1), (3,)], "cb": [(3, 3, 1, 1), (3,)],
                                                      "ip": [(3, 3 * 36), (3,)]}))
    np.testing.assert_allclose(small.params["ip"][1].data, want_bias, rtol=1e-5, atol=1e-6)
    if 3 in zero_a:
        assert rep["ca"].kept_zero == 1 and any("live filter in 'cb'" in k for k in rep["ca"].kept_why)


UNKNOWN = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "r" type: "Reshape" bottom: "conv1" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "r" top: "ip" inner_product_param { num_output: 3 } }
"""


def test_a_layer_the_slimmer_does_not_know_keeps_the_producer_and_is_named(tmp_path):
    net = build(tmp_path, UNKNOWN)
    net.params["conv1"][0].data[1] = 0
    net.params["ip"][0].data.reshape(3, 4, 36)[:, 2] = 0       # channel 2 unused, but only seen through 'r'
    result = slim(net)
    rep = _reports(result)
    assert rep["conv1"].after == 4 and rep["conv1"].blocked_by == "Reshape layer 'r'"
    assert rep["conv1"].kept_why == {"Reshape layer 'r'": 4} and result.removed == 0


def _files(tmp_path, text, net):
    model, weights = tmp_path / "m.prototxt", tmp_path / "w.caffemodel"
    model.write_text(text)
    net.save(str(weights))
    return model, weights


def _cli(model, weights, out, *extra):
    return cli_main(["slim", "--model", str(model), "--weights", str(weights), "--out-model", str(out / "s.prototxt"),
                     "--out-weights", str(out / "s.caffemodel"), *extra])


def test_cli_json_report(tmp_path, capsys):
    net = build(tmp_path, SLICE)
    net.params["conv_a"][0].data[:, 1] = 0
    model, weights = _files(tmp_path, SLICE, net)
    assert _cli(model, weights, tmp_path, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    rep = {p["layer"]: p for p in data["producers"]}
    assert data["channels_removed"] == 1 and rep["conv1"]["after"] == 7 and rep["conv1"]["unused"] == 1
    assert rep["conv1"]["kept_why"] == {"read by Convolution 'conv_a' (not constant)": 2,
                                        "read by Convolution 'conv_b' (not constant)": 5}
    assert data["params_before"] - data["params_after"] == 3 + 1 + 4 * 9   # conv1's row + bias, conv_a's column
    assert max(data["check"]["max_abs_diff"].values()) < 1e-4 and (tmp_path / "s.caffemodel").exists()


def test_cli_malformed_net_is_one_line_and_writes_nothing(tmp_path, capsys):
    net = build(tmp_path, SLICE)
    model, weights = _files(tmp_path, SLICE, net)
    model.write_text(SLICE.replace('top: "s2"', 'top: "s2" bogus_field: 1'))
    assert _cli(model, weights, tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("caffessl slim: error:") and "\n" not in err and "bogus_field" in err
    assert not (tmp_path / "s.prototxt").exists() and not (tmp_path / "s.caffemodel").exists()


def test_cli_failed_check_writes_nothing(tmp_path, capsys, monkeypatch):
    net = build(tmp_path, SLICE)
    net.params["conv_a"][0].data[:, 1] = 0
    model, weights = _files(tmp_path, SLICE, net)
    real = slim_mod.rewrite

    def broken(cg, remove):                        # a rewrite that gets one bias wrong
        param, arrays = real(cg, remove)
        arrays["ip"][1] = arrays["ip"][1] + 1.0
        return param, arrays
    monkeypatch.setattr(slim_mod, "rewrite", broken)
    assert _cli(model, weights, tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert "nothing written" in err and "\n" not in err
    assert not (tmp_path / "s.prototxt").exists() and not (tmp_path / "s.caffemodel").exists()


def test_the_output_of_a_blocking_layer_keeps_its_channels(tmp_path):
    """An LRN across channels neither lets its input shrink nor its output: a column of the convolution
    after it that is all zero stays (the LRN still produces that channel)."""
    text = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "norm" type: "LRN" bottom: "conv1" top: "norm" lrn_param { local_size: 3 } }
layer { name: "conv2" type: "Convolution" bottom: "norm" top: "conv2" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip" inner_product_param { num_output: 2 } }
"""
    net = build(tmp_path, text)
    net.params["conv2"][0].data[:, 1] = 0
    result = slim(net)
    assert result.removed == 0 and result.arrays["conv2"][0].shape == (3, 4, 1, 1)
    assert _reports(result)["conv1"].kept_why == {"LRN layer 'norm'": 4}


def test_transposed_inner_product_reader_and_producer(tmp_path):
    text = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 transpose: true } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 transpose: true } }
"""
    net = build(tmp_path, text)
    assert net.params["ip1"][0].data.shape == (4 * 36, 5)
    net.params["conv1"][0].data[2] = 0                        # a constant into ip1's bias
    net.params["ip1"][0].data[:, 3] = 0                       # ip1's output 3: a constant into ip2's bias
    result = slim(net)
    assert (_reports(result)["conv1"].folded, _reports(result)["ip1"].folded) == (1, 1)
    verify(net, result, tmp_path, table(net, {"conv1": [(3, 3, 1, 1), (3,)], "ip1": [(3 * 36, 4), (4,)],
                                              "ip2": [(4, 2), (2,)]}))


DEPTHWISE = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "dw" type: "Convolution" bottom: "conv1" top: "dw" convolution_param { num_output: 8 group: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "dw" top: "dw" }
layer { name: "conv2" type: "Convolution" bottom: "dw" top: "conv2" convolution_param { num_output: 3 kernel_size: 1 } }
"""


def test_depthwise_with_a_channel_multiplier(tmp_path):
    """Input channel c of a depthwise convolution with 2 outputs per channel goes with both outputs."""
    net = build(tmp_path, DEPTHWISE)
    net.params["conv2"][0].data[:, [2, 3, 4]] = 0     # channel 1's two outputs unused; channel 2's output 4 only
    result = slim(net)
    rep = _reports(result)
    assert (rep["conv1"].after, rep["dw"].after, rep["dw"].unused) == (3, 6, 2)
    assert rep["dw"].kept_why["read by Convolution 'conv2' (not constant; live filter in 'conv1')"] == 6
    small = verify(net, result, tmp_path, table(net, {"conv1": [(3, 3, 1, 1), (3,)], "dw": [(6, 1, 3, 3), (6,)],
                                                      "conv2": [(3, 6, 1, 1), (3,)]}))
    assert small.layer_dict["dw"].group == 3


def test_write_checked_refuses_a_wrong_result(tmp_path):
    from caffessl.sparsity.slim import SlimCheckError, write_checked
    net = build(tmp_path, SLICE)
    net.params["conv_a"][0].data[:, 1] = 0
    result = slim(net)
    report = write_checked(net, result, tmp_path / "a.prototxt", tmp_path / "a.caffemodel")
    assert report["ok"] and (tmp_path / "a.caffemodel").exists()
    result.arrays["conv_b"][1] += 1.0
    with pytest.raises(SlimCheckError, match="nothing written"):
        write_checked(net, result, tmp_path / "b.prototxt", tmp_path / "b.caffemodel")
    assert not (tmp_path / "b.prototxt").exists() and not (tmp_path / "b.caffemodel").exists()


def test_shared_weights_keep_the_layer_and_say_so(tmp_path):
    text = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { name: "w" } param { name: "b" } convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" param { name: "w" } param { name: "b" } convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip" inner_product_param { num_output: 2 } }
"""
    net = build(tmp_path, text)
    net.params["ip"][0].data.reshape(2, 4, 36)[:, 1] = 0
    result = slim(net)
    rep = _reports(result)
    assert result.removed == 0 and rep["conv1"].after == 4
    assert rep["conv1"].blocked_by.startswith("Convolution layer 'conv1' (shared weights")


def test_a_silenced_blob_does_not_keep_channels(tmp_path):
    text = SLICE.replace('layer { name: "ip"', 'layer { name: "quiet" type: "Silence" bottom: "conv1" }\nlayer { name: "ip"')
    net = build(tmp_path, text)
    net.params["conv_a"][0].data[:, 1] = 0
    assert _reports(slim(net))["conv1"].after == 7


GAMMA = HEAD + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""


def test_a_zero_scale_makes_the_channel_its_bias(tmp_path):
    """Network Slimming's pruned channel: Scale gamma 0 outputs beta whatever the (live) filter computes;
    ReLU(-0.3) = 0 folds even into the padded conv2, ReLU(0.5) does not."""
    net = build(tmp_path, GAMMA)
    net.params["scale1"][0].data[[1, 2]] = 0
    net.params["scale1"][1].data[[1, 2]] = [-0.3, 0.5]
    result = slim(net)
    rep = _reports(result)["conv1"]
    assert (rep.after, rep.folded, rep.kept_zero) == (3, 1, 0)
    assert any("padded" in w for w in rep.kept_why)
    verify(net, result, tmp_path, table(net, {"conv1": [(3, 3, 3, 3), (3,)], "bn1": [(3,), (3,), (1,)],
                                              "scale1": [(3,), (3,)], "conv2": [(3, 3, 3, 3), (3,)]}))


TRAIN_NET = """name: "t"
layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
  shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_cli_train_phase_with_batch_statistics(tmp_path, capsys):
    """TRAIN: BatchNorm uses the batch's statistics, so a zero filter is no known constant there (it stays),
    but a channel no reader uses goes; the check runs on the data layer's batch."""
    import caffessl as caffe
    model = tmp_path / "train.prototxt"
    model.write_text(TRAIN_NET)
    net = caffe.Net(str(model), caffe.TRAIN)
    randomize(net, 0)
    net.params["conv1"][0].data[1] = 0                       # constant only at TEST
    net.params["ip"][0].data.reshape(3, 4, 36)[:, 2] = 0     # unused in both phases
    net.save(str(tmp_path / "w.caffemodel"))
    assert _cli(model, tmp_path / "w.caffemodel", tmp_path, "--phase", "TRAIN", "--json") == 0
    rep = {p["layer"]: p for p in json.loads(capsys.readouterr().out)["producers"]}
    assert (rep["conv1"]["after"], rep["conv1"]["unused"], rep["conv1"]["kept_zero"]) == (3, 1, 1)
    small = caffe.Net(str(tmp_path / "s.prototxt"), str(tmp_path / "s.caffemodel"), caffe.TRAIN)
    assert small.params["bn1"][0].data.shape == (3,) and small.params["ip"][0].data.shape == (3, 3 * 36)
    # with a Dropout the TRAIN outputs are random: the check cannot pass, and says why
    model.write_text(TRAIN_NET.replace('layer { name: "ip"', 'layer { name: "drop1" type: "Dropout" '
                                       'bottom: "conv1" top: "conv1" }\nlayer { name: "ip"'))
    (tmp_path / "s.prototxt").unlink()
    assert _cli(model, tmp_path / "w.caffemodel", tmp_path, "--phase", "TRAIN") == 1
    err = capsys.readouterr().err
    assert "Dropout layer 'drop1' draws random masks" in err and "--no-check" in err
    assert not (tmp_path / "s.prototxt").exists()
