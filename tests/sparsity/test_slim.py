"""Slimming (caffessl.sparsity.slim, `caffessl slim`): which channels go, and that the slimmed net computes
what the original net computes (the original's forward is the reference: it is checked against Caffe's by the
golden layer and net cases)."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main as cli_main
from caffessl.sparsity.slim import slim, write
from tests.golden import need_shared
from tests.sparsity.slim_nets import outputs_of_both

GOLDEN_DEPLOY = """name: "tiny_lenet_deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 2 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1" inner_product_param { num_output: 4 } }
"""


def _net(tmp_path, text, arrays=None, name="net.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    net = caffe.Net(str(p), caffe.TEST)
    for layer, blobs in (arrays or {}).items():
        for i, a in enumerate(blobs):
            net.params[layer][i].data[...] = a
    return net, p


def _randomize(net, seed=3):
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.data.shape)


def _reload(tmp_path, result):
    m, w = tmp_path / "slim.prototxt", tmp_path / "slim.caffemodel"
    write(result, m, w)
    return caffe.Net(str(m), str(w), caffe.TEST)


def _same_outputs(a, b, seed=0, atol=1e-5):
    ra, rb = outputs_of_both(a, b, seed)
    for k in ra:
        np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, atol=atol, err_msg=k)


def test_golden_ssl_run_200_slims_exactly(tmp_path):
    """Caffe's 200-iteration SSL run: conv1 keeps only the channels conv2 reads, conv2's zero filters go into
    ip1's bias; the output is unchanged."""
    d = np.load(need_shared("golden", "ssl_long_run_200", "weights_iter200.npz"))
    arrays = {}
    for k, v in d.items():
        layer, i = k.split("/")
        arrays.setdefault(layer, [None, None])[int(i)] = v
    net, _ = _net(tmp_path, GOLDEN_DEPLOY, arrays)
    w1, w2, w3 = arrays["conv1"][0], arrays["conv2"][0], arrays["ip1"][0]
    # independent expectations from the weights
    read_by_conv2 = (w2 != 0).any(axis=(0, 2, 3))                  # (8,) conv1 channels conv2 uses
    zero1 = ~(w1.reshape(8, -1) != 0).any(1)
    keep1 = read_by_conv2 & ~zero1          # (a zero conv1 filter read by the unpadded conv2 would be folded)
    zero2 = ~(w2.reshape(6, -1) != 0).any(1)
    assert zero2.sum() == 2 and (~read_by_conv2).sum() >= 7   # what the golden README states for this run

    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert (rep["conv1"].before, rep["conv1"].after) == (8, int(keep1.sum()) or 1)
    assert rep["conv2"].after == 4 and rep["conv2"].folded == 2 and rep["conv2"].unused == 0
    assert rep["ip1"].after == 4 and "net output" in rep["ip1"].blocked_by
    small = _reload(tmp_path, result)
    assert small.params["conv1"][0].data.shape[0] == rep["conv1"].after
    assert small.params["conv2"][0].data.shape == (4, rep["conv1"].after, 3, 3)
    assert small.params["ip1"][0].data.shape == (4, 4 * 9)
    # folded bias: ip1's bias gains sum over conv2's zero filters f of relu(b2[f]) * sum_j W3[:, f, j]
    b2 = arrays["conv2"][1]
    fold = (w3.reshape(4, 6, 9)[:, zero2].sum(2) * np.maximum(b2[zero2], 0)).sum(1)
    np.testing.assert_allclose(small.params["ip1"][1].data, arrays["ip1"][1] + fold, rtol=1e-6, atol=1e-7)
    _same_outputs(net, small)


CHAIN = """name: "chain"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "drop2" type: "Dropout" bottom: "conv2" top: "conv2" }
layer { name: "flat" type: "Flatten" bottom: "conv2" top: "flat" }
layer { name: "ip1" type: "InnerProduct" bottom: "flat" top: "ip1" inner_product_param { num_output: 7 } }
layer { name: "relu3" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 bias_term: false } }
"""


def _chain_weights(seed=1):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w1, b1 = r(6, 3, 3, 3), r(6)
    w1[[0, 1, 2]] = 0
    b1[0] = -5.0            # BN/Scale below make channel 0's constant negative: ReLU -> 0, removable
    b1[1] = 5.0             # positive constant into the padded conv2: must stay
    w2, b2 = r(5, 6, 3, 3), r(5)
    w2[:, 2] = 0            # conv1's channel 2 (a zero filter too) and ...
    w2[:, 4] = 0            # ... channel 4 (a nonzero filter) are read by nobody
    w2[3] = 0               # conv2 filter 3: a constant through PReLU/Dropout/Flatten into ip1: folded
    w3, b3 = r(7, 5 * 4 * 4), r(7)     # conv2's output is 5 x 4 x 4
    w3[4] = 0
    b3[4] = -1.0            # ReLU(-1) = 0: removable though ip2 has no bias
    w3[5] = 0
    b3[5] = 2.0             # ReLU(2) = 2 read by the bias-less ip2: must stay
    w4 = r(3, 7)
    bn = [np.zeros(6, np.float32), np.ones(6, np.float32), np.ones(1, np.float32)]
    bn[0][:] = r(6) * 0.1
    bn[1][:] = 1 + np.abs(r(6))
    sc = [1 + np.abs(r(6)), r(6) * 0.1]
    return {"conv1": [w1, b1], "bn1": bn, "sc1": sc, "conv2": [w2, b2], "prelu2": [np.abs(r(5)) * 0.3],
            "ip1": [w3, b3], "ip2": [w4]}


def test_chain_through_per_channel_layers(tmp_path):
    arrays = _chain_weights()
    net, _ = _net(tmp_path, CHAIN, arrays)
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    # conv1: channels 2 and 4 unused, channel 0 folded (constant 0), channel 1 kept (positive constant, pad 1)
    assert (rep["conv1"].after, rep["conv1"].unused, rep["conv1"].folded, rep["conv1"].kept_zero) == (3, 2, 1, 1)
    assert (rep["conv2"].after, rep["conv2"].folded) == (4, 1)
    assert (rep["ip1"].after, rep["ip1"].folded, rep["ip1"].kept_zero) == (6, 1, 1)
    assert rep["ip2"].blocked_by
    small = _reload(tmp_path, result)
    assert [b.data.shape for b in small.params["bn1"]] == [(3,), (3,), (1,)]
    assert [b.data.shape for b in small.params["sc1"]] == [(3,), (3,)]
    assert small.params["prelu2"][0].data.shape == (4,)
    assert small.params["ip1"][0].data.shape == (6, 4 * 16)
    assert small.params["ip2"][0].data.shape == (3, 6)
    _same_outputs(net, small)


def test_ave_pooling_with_padding_keeps_nonzero_constants(tmp_path):
    text = CHAIN.replace("pool: MAX kernel_size: 2 stride: 2 pad: 1", "pool: AVE kernel_size: 3 stride: 2 pad: 1") \
        .replace("kernel_size: 3 pad: 1 }", "kernel_size: 3 }")        # conv2 unpadded: only the pooling pads
    arrays = _chain_weights()
    arrays["ip1"][0] = np.random.default_rng(2).standard_normal((7, 5 * 2 * 2)).astype(np.float32)
    arrays["ip1"][0][4:6] = 0
    net, _ = _net(tmp_path, text, arrays)
    rep = {r.layer: r for r in slim(net).producers}
    # channel 1's positive constant is averaged with padding zeros at the border: no longer a constant
    assert rep["conv1"].kept_zero == 1 and rep["conv1"].folded == 1
    _same_outputs(net, _reload(tmp_path, slim(net)))


MIX = """name: "b"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 6 dim: 6 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "conv1b" type: "Convolution" bottom: "data" top: "conv1b" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
{reader}
layer {{ name: "ip" type: "InnerProduct" bottom: "cat" top: "ip" inner_product_param {{ num_output: 2 }} }}
"""


def test_lrn_across_channels_blocks(tmp_path):
    net, _ = _net(tmp_path, MIX.format(reader='layer { name: "lrn" type: "LRN" bottom: "conv1" top: "cat" }'))
    _randomize(net)
    net.params["conv1"][0].data[1] = 0
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert rep["conv1"].after == 4 and rep["conv1"].blocked_by == "LRN layer 'lrn'"
    assert rep["conv1"].kept_why == {"LRN layer 'lrn'": 4}
    assert result.removed == 0


def test_concat_input_zero_filter_folds_through_the_offset(tmp_path):
    """conv1's zero filter 1 is channel 1 of the Concat: its constant goes into ip's bias through the offset;
    conv1b's zero filter 2 is Concat channel 6."""
    net, _ = _net(tmp_path, MIX.format(reader='layer { name: "cat" type: "Concat" bottom: "conv1" '
                                              'bottom: "conv1b" top: "cat" }'))
    _randomize(net)
    net.params["conv1"][0].data[1] = 0
    net.params["conv1b"][0].data[2] = 0
    w = net.params["ip"][0].data.reshape(2, 8, 36).copy()
    b1, b1b = net.params["conv1"][1].data.copy(), net.params["conv1b"][1].data.copy()
    fold = w[:, 1].sum(1) * b1[1] + w[:, 6].sum(1) * b1b[2]
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert (rep["conv1"].after, rep["conv1"].folded, rep["conv1b"].after, rep["conv1b"].folded) == (3, 1, 3, 1)
    small = _reload(tmp_path, result)
    assert small.params["ip"][0].data.shape == (2, 6 * 36)
    np.testing.assert_allclose(small.params["ip"][0].data.reshape(2, 6, 36), w[:, [0, 2, 3, 4, 5, 7]])
    np.testing.assert_allclose(small.params["ip"][1].data, net.params["ip"][1].data + fold, rtol=1e-5)
    _same_outputs(net, small, atol=1e-4)


def test_eltwise_channel_live_in_the_other_input_stays(tmp_path):
    net, _ = _net(tmp_path, MIX.format(reader='layer { name: "sum" type: "Eltwise" bottom: "conv1" '
                                              'bottom: "conv1b" top: "cat" }'))
    _randomize(net)
    net.params["conv1"][0].data[1] = 0          # zero here, live in conv1b: the sum is not a constant
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert rep["conv1"].after == 4 and result.removed == 0
    assert rep["conv1"].kept_zero == 1 and any("conv1b" in w for w in rep["conv1"].kept_why)
    net.params["ip"][0].data.reshape(2, 4, 36)[:, 1] = 0     # no reader uses channel 1: it goes in both
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert (rep["conv1"].after, rep["conv1b"].after, rep["conv1"].unused) == (3, 3, 1)
    _same_outputs(net, _reload(tmp_path, result))


def test_a_reader_outside_the_phase_blocks(tmp_path):
    text = GOLDEN_DEPLOY + ('layer { name: "aux" type: "InnerProduct" bottom: "conv1" top: "aux" '
                            'inner_product_param { num_output: 2 } include { phase: TRAIN } }\n')
    net, _ = _net(tmp_path, text)
    _randomize(net)
    net.params["conv2"][0].data[:, 0] = 0       # conv1's channel 0 unused in the TEST net
    rep = {r.layer: r for r in slim(net).producers}
    assert rep["conv1"].after == 8 and "aux" in rep["conv1"].blocked_by


def test_grouped_conv_keeps_equal_channels_per_group(tmp_path):
    text = GOLDEN_DEPLOY.replace("num_output: 6 kernel_size: 3", "num_output: 6 kernel_size: 3 group: 2")
    net, _ = _net(tmp_path, text)
    _randomize(net)
    net.params["conv1"][0].data[0] = 0
    net.params["conv2"][0].data[:3, 0] = 0         # conv2's group 0 does not read conv1's channel 0
    rep = {r.layer: r for r in slim(net).producers}
    assert rep["conv1"].after == 8 and rep["conv1"].kept_why["equal channel counts per group in 'conv2'"] == 1
    net.params["conv2"][0].data[3:, 2] = 0         # group 1 drops its channel 2 (conv1's channel 6)
    result = slim(net)
    rep = {r.layer: r for r in result.producers}
    assert rep["conv1"].after == 6 and rep["conv1"].unused == 2
    small = _reload(tmp_path, result)
    w = net.params["conv2"][0].data
    want = np.concatenate([w[:3, [1, 2, 3]], w[3:, [0, 1, 3]]])
    np.testing.assert_array_equal(small.params["conv2"][0].data, want)
    _same_outputs(net, small)


def test_cli_slim_writes_checked_files(tmp_path, capsys):
    arrays = _chain_weights()
    net, model = _net(tmp_path, CHAIN, arrays)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    out_m, out_w = tmp_path / "s.prototxt", tmp_path / "s.caffemodel"
    rc = cli_main(["slim", "--model", str(model), "--weights", str(weights), "--out-model", str(out_m),
                   "--out-weights", str(out_w)])
    text = capsys.readouterr().out
    assert rc == 0 and "channels removed: 5" in text and "check (max |slimmed - original|" in text
    small = caffe.Net(str(out_m), str(out_w), caffe.TEST)
    _same_outputs(net, small)


def test_cli_slim_bad_weights_is_one_line(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text(GOLDEN_DEPLOY)
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\x05trunc")
    rc = cli_main(["slim", "--model", str(model), "--weights", str(bad), "--out-model", str(tmp_path / "a"),
                   "--out-weights", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("caffessl slim: error:") and "\n" not in err
    assert not (tmp_path / "a").exists()


def test_block_specs_that_stop_tiling_are_reported(tmp_path):
    text = GOLDEN_DEPLOY.replace(
        'top: "conv2" convolution_param', 'top: "conv2" param { block_group_lasso { xdimen: 72 ydimen: 1 } } '
        'param { } convolution_param')                       # a whole-row block: 8 channels x 9
    net, _ = _net(tmp_path, text)
    _randomize(net)
    net.params["conv2"][0].data[:, 0] = 0
    result = slim(net)
    assert result.removed == 1
    assert len(result.warnings) == 1 and "'conv2' param 0" in result.warnings[0] and "63" in result.warnings[0]


def _resnet20_deploy(tmp_path):
    """The shipped depth-SSL ResNet-20 with its data layers replaced by an Input and its loss/accuracy
    dropped, random weights (BatchNorm statistics positive)."""
    from caffessl.io.prototxt import read_net_prototxt, to_text
    from tests.golden import REPO
    p = read_net_prototxt(REPO / "models" / "resnet20_cifar10" / "resnet20_depth_ssl.prototxt")
    layers = [lp for lp in p.layer if lp.type not in ("Data", "Accuracy", "SoftmaxWithLoss")]
    del p.layer[:]
    inp = p.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add(dim=[2, 3, 32, 32])
    p.layer.extend(layers)
    net, model = _net(tmp_path, to_text(p), name="resnet20.prototxt")
    rng = np.random.default_rng(5)
    for layer in net.layers:
        for b in net.params.get(layer.name, []):
            b.data[...] = rng.standard_normal(b.data.shape) * (0.1 if b.data.ndim > 1 else 0.5)
        if layer.type == "BatchNorm":
            net.params[layer.name][1].data[...] = 1 + np.abs(net.params[layer.name][1].data)
            net.params[layer.name][2].data[...] = 1.0
    return net, model


def test_depth_zero_residual_branches_become_bias_layers(tmp_path):
    net, _ = _resnet20_deploy(tmp_path)
    net.params["res2b_branch2a"][0].data[...] = 0      # a whole block zeroed by depth SSL
    net.params["res2b_branch2b"][0].data[...] = 0
    net.params["res3b_branch2b"][0].data[...] = 0      # only the second conv: the first is then dead
    result = slim(net)
    assert [(b.eltwise, b.producer) for b in result.branches] == [("res2b", "res2b_branch2b"),
                                                                  ("res3b", "res3b_branch2b")]
    gone = set(result.removed_layers)
    for block in ("res2b", "res3b"):
        assert {f"{block}_branch2{s}{t}" for s in "ab" for t in ("", "_bn", "_scale")} <= gone
        assert f"{block}_branch2a_relu" in gone and f"{block}" not in gone
    assert len(gone) == 14 and not any(n.startswith(("res2a", "res2c", "res3a", "res3c")) for n in gone)
    small = _reload(tmp_path, result)
    assert small.layer_type("res2b") == "Bias" and small.params["res2b"][0].data.shape == (16,)
    # the constant: BatchNorm then Scale of a zero conv output (bias_term false): gamma*(0-mean)/sqrt(var+eps)+beta
    m, v, s = (net.params["res2b_branch2b_bn"][i].data for i in range(3))
    g, beta = (net.params["res2b_branch2b_scale"][i].data for i in range(2))
    expect = g * (0 - m / s[0]) / np.sqrt(v / s[0] + 1e-5) + beta
    np.testing.assert_allclose(small.params["res2b"][0].data, expect, rtol=1e-5, atol=1e-6)
    assert len(small.layers) == len(net.layers) - 14
    _same_outputs(net, small, atol=1e-4)


def test_depth_branch_read_elsewhere_stays(tmp_path):
    net, model = _resnet20_deploy(tmp_path)
    text = model.read_text() + ('layer { name: "aux" type: "InnerProduct" bottom: "res2b_branch2b" top: "aux" '
                                'inner_product_param { num_output: 2 } include { phase: TRAIN } }\n')
    net2, _ = _net(tmp_path, text, name="resnet20_aux.prototxt")
    for layer in net.layers:
        for a, b in zip(net2.params.get(layer.name, []), net.params.get(layer.name, [])):
            a.data[...] = b.data
    net2.params["res2b_branch2b"][0].data[...] = 0
    assert slim(net2).branches == []                   # the TRAIN-only 'aux' reads the branch
    net.params["res2b_branch2b"][0].data[...] = 0
    assert [b.eltwise for b in slim(net).branches] == ["res2b"]
    assert slim(net, depth=False).branches == []
