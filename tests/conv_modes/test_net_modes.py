"""conv_mode on a Net: the prototxt field, the set_conv_mode override, golden Caffe outputs, lazy rebuilds
after weight writes, and Caffe's refusal to train in a sparse format."""
import logging

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.conv_modes import csrmm, mkl, set_conv_mode, parse_mode, active_mode
from caffessl.errors import LayerConfigError, PrototxtParseError, SparseTrainingError
from tests.golden import close, load_case

NET = """name: "t" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 %s
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.3 } } }
"""


def make_net(tmp_path, extra=""):
    p = tmp_path / "net.prototxt"
    p.write_text(NET % extra)
    torch.manual_seed(0)
    net = caffe.Net(str(p), caffe.TEST)
    w = net.params["conv1"][0].data
    w[1] = 0                        # a zero filter
    w[:, 0, 0, :] = 0               # zero columns
    net.params["ip"][0].data[:, :100] = 0
    net.params["ip"][0].data[2] = 0
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((2, 4, 8, 8))
    return net


@pytest.mark.parametrize("mode", ["csrmm", "ccnmm", "auto", "direct_sconv", "LOWERED_CCNMM"])
def test_override_matches_gemm_and_forbids_backward(tmp_path, mode):
    net = make_net(tmp_path)
    ref = {k: v.copy() for k, v in net.forward().items()}
    ref_conv = net.blobs["conv1"].data.copy()
    assert set(set_conv_mode(net, mode)) == {"conv1", "ip"}
    out = net.forward()
    assert np.allclose(out["ip"], ref["ip"], rtol=1e-4, atol=1e-5)
    assert np.allclose(net.blobs["conv1"].data, ref_conv, rtol=1e-4, atol=1e-5)
    if active_mode(net.layer_dict["conv1"]) != "LOWERED_GEMM":
        with pytest.raises(SparseTrainingError, match="Training in sparse format is not supported"):
            net.backward()
    set_conv_mode(net, "gemm")
    net.forward()
    net.backward()                  # dense again: training works


def test_prototxt_field_selects_the_engine_at_weight_load(tmp_path):
    net = make_net(tmp_path, "conv_mode: LOWERED_CCNMM")
    conv = net.layer_dict["conv1"]
    assert conv.conv_mode == parse_mode("ccnmm") and conv.engine is None   # no weights loaded yet: dense
    model = tmp_path / "w.caffemodel"
    net.save(str(model))
    net.copy_from(str(model))
    assert active_mode(conv) == "LOWERED_CCNMM"
    assert active_mode(net.layer_dict["ip"]) == "LOWERED_GEMM"   # InnerProduct has no prototxt field


def test_weight_writes_rebuild_lazily(tmp_path):
    net = make_net(tmp_path)
    set_conv_mode(net, "ccnmm")
    eng = net.layer_dict["conv1"].engine
    net.forward()
    net.forward()
    assert eng.builds == 1                          # built once, not per forward
    net.params["conv1"][0].data[...] = 0            # numpy write through pycaffe
    net.forward()
    assert eng.builds == 2
    assert np.allclose(net.blobs["conv1"].data, net.params["conv1"][1].data.reshape(1, -1, 1, 1))
    with torch.no_grad():
        net.layer_dict["conv1"].params[0].fill_(1.0)   # torch in-place write (a solver step)
    net.forward()
    assert eng.builds == 3
    net.forward()
    assert eng.builds == 3
    x = net.blobs["data"].data
    expect = torch.nn.functional.conv2d(torch.from_numpy(x), torch.ones(6, 2, 3, 3),
                                        torch.from_numpy(net.params["conv1"][1].data), padding=1, groups=2)
    assert np.allclose(net.blobs["conv1"].data, expect.numpy(), rtol=1e-5, atol=1e-5)


def test_csrmm_without_mkl_warns_once_and_uses_torch_csr(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mkl, "load", lambda: None)
    monkeypatch.setattr(csrmm, "_warned", False)
    net = make_net(tmp_path)
    ref = net.forward()["ip"].copy()
    with caplog.at_level(logging.WARNING):
        set_conv_mode(net, "csrmm")
        out = net.forward()["ip"]
        net.params["conv1"][0].data[0] = 0
        net.forward()
    assert net.layer_dict["conv1"].engine.kernel.backend == "torch"
    assert sum("MKL" in r.getMessage() for r in caplog.records) == 1
    assert np.allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_bad_modes_are_errors(tmp_path):
    with pytest.raises(LayerConfigError, match="unknown conv mode"):
        parse_mode("fast")
    for bad in ("conv_mode: LOWERED_FAST", "conv_mode: 9"):
        p = tmp_path / "bad.prototxt"
        p.write_text(NET % bad)
        with pytest.raises(PrototxtParseError):
            caffe.Net(str(p), caffe.TEST)


@pytest.mark.parametrize("mode", ["LOWERED_GEMM", "LOWERED_CCNMM", "LOWERED_CSRMM", "DIRECT_SCONV"])
def test_golden_conv_mode_case(mode):
    """Caffe's GEMM and CCNMM outputs; CSRMM/DIRECT_SCONV aborted in Caffe without MKL, so they must equal
    the GEMM outputs (the fork's contract: every mode gives LOWERED_GEMM's result)."""
    d, meta = load_case("ssl_conv_mode")
    tol = meta["tolerance"]
    net = caffe.Net(str(d / f"net_{mode}.prototxt"), caffe.TEST, weights=str(d / "weights.caffemodel"))
    for k, v in np.load(d / "inputs.npz").items():
        net.blobs[k].data[...] = v
    net.forward()
    refs = [np.load(d / "outputs_LOWERED_GEMM.npz")]
    if (d / f"outputs_{mode}.npz").exists():
        refs.append(np.load(d / f"outputs_{mode}.npz"))
    for ref in refs:
        for k, v in ref.items():
            ok, err = close(net.blobs[k].data, v, tol["abs"], tol["rel"])
            assert ok, f"{mode} {k}: max abs err {err:.3g}"
    expected = {"LOWERED_GEMM": "LOWERED_GEMM", "DIRECT_SCONV": "LOWERED_CSRMM"}.get(mode, mode)
    assert all(active_mode(net.layer_dict[c]) == expected for c in ("conv1", "conv2", "conv3"))
    net.backward()          # no loss, no force_backward: Caffe's Backward runs no layer, so no refusal
    assert all(not net.params[c][0].diff.any() for c in ("conv1", "conv2", "conv3"))
    if mode != "LOWERED_GEMM":   # with force_backward: "Training in sparse format is not supported"
        net.force_backward = True
        net.forward()
        with pytest.raises(SparseTrainingError):
            net.backward()
