"""caffessl features: planted dead features are counted exactly, selectivity equals a hand computation, memory
stays flat while streaming 1,000 batches, and the CLI writes its table, JSON and plots."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from caffessl.io.prototxt import parse_text
from caffessl.net import TEST, Net
from caffessl.proto import caffe_pb2
from caffessl.study.features import feature_report, features, probes

PLANTED = """
name: "planted"
layer { name: "d" type: "DummyData" top: "x"
  dummy_data_param { shape { dim: 16 dim: 3 dim: 8 dim: 8 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "sc1" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "constant" value: 0 } } }
layer { name: "relu2" type: "ReLU" bottom: "c2" top: "r2" }
layer { name: "ip" type: "InnerProduct" bottom: "r2" top: "p"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def _planted(tmp_path):
    net_param = parse_text(PLANTED, caffe_pb2.NetParameter())
    net = Net(net_param, TEST)
    p = net.params
    mean, var, factor = p["bn1"]
    mean.data[...] = 0
    var.data[...] = 1
    factor.data[...] = 1
    gamma, beta = p["sc1"]
    gamma.data[...] = 1
    beta.data[...] = 0
    gamma.data[2] = 0            # gamma = 0 (beta 0): inactive by gamma AND by activation
    gamma.data[5] = 1e-4         # tiny gamma: inactive by gamma, still active (values > 1e-12)
    p["conv2"][0].data[0] = 0    # a zero filter (bias 0): inactive, zero filter
    p["conv2"][0].data[3] = -1   # driven negative: inputs >= 0 after relu1, bias -0.1 -> always < 0 before relu2
    p["conv2"][1].data[3] = -0.1
    p["ip"][0].data[1] = 0       # a zero filter with a bias: no ReLU follows, so it stays active
    p["ip"][1].data[1] = 0.5
    path = str(tmp_path / "planted.caffemodel")
    net.save(path)
    return net_param, path


def test_probes_follow_bn_scale_relu_chains():
    net = Net(parse_text(PLANTED, caffe_pb2.NetParameter()), TEST)
    got = {p.layer: (p.after, p.blob, p.scale_layer) for p in probes(net)}
    assert got == {"conv1": ("relu1", "c1", "sc1"), "conv2": ("relu2", "r2", None), "ip": ("ip", "p", None)}


def test_planted_dead_features_are_counted_exactly(tmp_path):
    model, weights = _planted(tmp_path)
    rep = features(model, weights, iterations=3)
    by = {l.layer: l for l in rep.layers}
    assert rep.samples == 48 and rep.passes_agree
    assert by["conv1"].inactive_act == [2]
    assert by["conv1"].inactive_gamma == [2, 5]
    assert by["conv1"].zero_filters == []
    assert by["conv2"].inactive_act == [0, 3]
    assert by["conv2"].inactive_gamma is None
    assert by["conv2"].zero_filters == [0]
    assert by["ip"].inactive_act == [] and by["ip"].zero_filters == [1]
    d = {l["layer"]: l for l in rep.to_dict()["layers"]}
    assert (d["conv2"]["zero_and_inactive"], d["conv2"]["inactive_not_zero"]) == (1, 1)
    assert d["ip"]["zero_but_active"] == 1
    t = rep.totals()
    assert t["inactive_by_activation"] == 3 and t["features"] == 19
    assert t["inactive_by_gamma"] == 2 and t["features_with_gamma"] == 8
    assert np.isnan(by["conv1"].selectivity[2]) and not np.isnan(by["conv1"].selectivity[5])


def test_thresholds_are_configurable(tmp_path):
    model, weights = _planted(tmp_path)
    rep = features(model, weights, iterations=1, gamma_threshold=1e-5, act_threshold=0.0)
    by = {l.layer: l for l in rep.layers}
    assert by["conv1"].inactive_gamma == [2]
    assert by["conv1"].inactive_act == []        # nothing is < 0


HAND = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
"""


def _identity_net():
    net = Net(parse_text(HAND, caffe_pb2.NetParameter()), TEST)
    net.params["ip"][0].data[...] = np.eye(3)
    net.params["ip"][1].data[...] = 0
    return net


def test_selectivity_equals_a_hand_computation():
    b1 = np.array([[1, 0, 5], [2, 0.001, 0]], np.float32)
    b2 = np.array([[4, 0, -1], [0.5, 0, 2]], np.float32)
    rep = feature_report(_identity_net, 2, batches=lambda: iter([{"x": b1}, {"x": b2}]))
    (l,) = rep.layers
    # feature 0: 1, 2, 4, 0.5 / max 4 -> no sample <= 1e-3 -> 0
    # feature 1: 0, 0.001, 0, 0 / max 0.001 -> 0, 1, 0, 0 -> 3 of 4 do not activate it -> 0.75
    # feature 2: 5, 0, relu(-1) = 0, 2 / max 5 -> 1, 0, 0, 0.4 -> 2 of 4 -> 0.5
    assert l.selectivity == pytest.approx([0.0, 0.75, 0.5])
    assert l.corpus_max == pytest.approx([4.0, 0.001, 5.0])
    assert l.mean_selectivity == pytest.approx((0.0 + 0.75 + 0.5) / 3)
    assert l.inactive_act == [] and rep.samples == 4
    assert l.histogram() == [1, 0, 0, 0, 0, 1, 0, 1, 0, 0]


WIDE = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 50 dim: 64 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 256 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "o"
  inner_product_param { num_output: 128 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux) for the RSS")
def test_memory_stays_flat_over_1000_batches():
    """Keeping every sample's pooled value would grow by 1000 x 50 x 384 x 4 B = 77 MB; the streaming
    report keeps O(features)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    rss = {}

    def batches():
        for k in range(1000):
            if k in (100, 999):
                rss.setdefault(k, []).append(_rss_bytes())
            yield {"x": x}

    net_param = parse_text(WIDE, caffe_pb2.NetParameter())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # 2,000 small forwards: intra-op threads only add contention
    try:
        rep = feature_report(lambda: Net(net_param, TEST), 1000, batches=batches)
    finally:
        torch.set_num_threads(threads)
    assert rep.samples == 50_000
    for early, late in zip(rss[100], rss[999]):       # both passes
        assert late - early < 16 * 2 ** 20, f"RSS grew by {(late - early) / 2 ** 20:.1f} MB over 900 batches"


def test_cli_table_json_and_plots(tmp_path, capsys):
    from caffessl.cli import main
    model, weights = _planted(tmp_path)
    proto = tmp_path / "planted.prototxt"
    proto.write_text(PLANTED)
    out = tmp_path / "f.json"
    rc = main(["features", "--model", str(proto), "--weights", weights, "--iterations", "2", "--json", str(out),
               "--plot", str(tmp_path / "plots")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "conv2" in text and "relu2" in text
    d = json.loads(out.read_text())
    assert d["totals"]["inactive_by_activation"] == 3
    assert os.path.getsize(tmp_path / "plots" / "features.png") > 1000
    assert os.path.getsize(tmp_path / "plots" / "selectivity.png") > 1000


def test_cli_bad_iterations_is_one_line(tmp_path, capsys):
    from caffessl.cli import main
    proto = tmp_path / "planted.prototxt"
    proto.write_text(PLANTED)
    assert main(["features", "--model", str(proto), "--iterations", "0"]) == 1
    err = capsys.readouterr().err
    assert "iterations must be >= 1" in err and len(err.strip().splitlines()) == 1


def test_a_deploy_net_is_refused_with_the_reason():
    from caffessl.errors import LayerConfigError
    with pytest.raises(LayerConfigError, match="Input blob"):
        feature_report(_identity_net, 1)
