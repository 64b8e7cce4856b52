"""Stabilizer (masked update + Zerout) and connectivity masks built on weight load (binary and HDF5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import ShapeMismatchError, SolverConfigError
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.solver.stabilize import Stabilizer, zerout_
from caffessl.weights_matrix import eltwise_mask, groupwise_mask

NET = """
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: 4 dim: 5 dim: 5 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "c" {mode} param {{ {p0} }} param {{ {p1} }}
  convolution_param {{ num_output: 4 kernel_size: 3 group: {group} weight_filler {{ type: "gaussian" std: 1 }}
                      bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "c" top: "y" {mode}
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 1 }} }} }}
"""


def make_net(mode="", p0="", p1="", group=1):
    return caffe.Net(parse_text(NET.format(mode=mode, p0=p0, p1=p1, group=group), caffe_pb2.NetParameter()),
                     caffe.TRAIN)


def sp(text=""):
    return parse_text(text, caffe_pb2.SolverParameter())


def test_zerout_is_strict_and_exact():
    t = torch.tensor([1e-4, -1e-4, 9.9e-5, -9.9e-5, 0.0, 0.5, float(np.float32(1e-4) * 0.999)])
    zerout_(t, float(np.float32(1e-4)))
    assert t.tolist()[:2] == [pytest.approx(1e-4), pytest.approx(-1e-4)]   # exactly +-threshold is kept
    assert t.tolist()[2:5] == [0.0, 0.0, 0.0] and t[5] == 0.5 and t[6] == 0


def test_default_scope_zeroes_every_param_and_reads_schema_defaults():
    net = make_net()
    st = Stabilizer(net, sp())
    assert set(st.thresholds.values()) == {caffe_pb2.SSLStabilizeParameter().zerout_threshold}
    for info in net.learnable_params:
        with torch.no_grad():
            info.tensor.fill_(5e-5)
        st.update(info, torch.zeros_like(info.tensor))
        assert (info.tensor == 0).all(), info           # biases too (the fork's Net::Update)


@pytest.mark.parametrize("scope,expect_bias_zero", [("WEIGHTS_ONLY", False), ("NONE", False),
                                                      ("ALL_PARAMS", True)])
def test_zerout_scope_and_param_override(scope, expect_bias_zero):
    net = make_net(p0="zerout_threshold: 0.01")
    st = Stabilizer(net, sp(f"ssl_stabilize_param {{ zerout_scope: {scope} zerout_threshold: 1e-3 }}"))
    for info in net.learnable_params:
        with torch.no_grad():
            info.tensor.fill_(5e-4)
        st.update(info, torch.zeros_like(info.tensor))
    conv = net.layer_dict["conv"].params
    assert (conv[0] == 0).all()                                    # its own 0.01 threshold wins
    assert bool((conv[1] == 0).all()) == expect_bias_zero
    assert bool((net.layer_dict["ip"].params[0] == 0).all()) == (scope != "NONE")
    with pytest.raises(SolverConfigError):
        Stabilizer(net, sp("ssl_stabilize_param { zerout_threshold: -1 }"))


def test_update_subtracts_the_value():
    net = make_net()
    info = net.learnable_params[0]
    before = info.tensor.detach().clone()
    upd = torch.full_like(before, 0.25)
    Stabilizer(net, sp("ssl_stabilize_param { zerout_scope: NONE }")).update(info, upd)
    torch.testing.assert_close(info.tensor.detach(), before - 0.25)


def _sparse_weights(net):
    with torch.no_grad():
        w = net.layer_dict["conv"].params[0]            # (4, 4/g, 3, 3)
        m = w.view(4, -1)
        m[2, :] = 0                                     # an all-zero filter
        m[:, 1] = 0                                     # an all-zero column
        m[0, 5] = 0                                     # an isolated zero
        m[3, 7] = 3e-5                                  # below the threshold: zeroed on load
        net.layer_dict["ip"].params[0][0, ::2] = 0


def numpy_grpwise(w, g):
    r = w.shape[0]
    m = w.reshape(r, -1)
    mask = np.zeros_like(m)
    for gi in range(g):
        sub = m[gi * r // g:(gi + 1) * r // g]
        rows = (sub != 0).any(axis=1)
        cols = (sub != 0).any(axis=0)
        mask[gi * r // g:(gi + 1) * r // g] = np.outer(rows, cols)
    return mask.reshape(w.shape)


@pytest.mark.parametrize("fmt", ["binary", "hdf5"])
@pytest.mark.parametrize("mode,group", [("DISCONNECTED_ELTWISE", 1), ("DISCONNECTED_GRPWISE", 1),
                                        ("DISCONNECTED_GRPWISE", 2)])
def test_masks_built_on_load_freeze_weights(tmp_path, fmt, mode, group):
    src = make_net(group=group)
    _sparse_weights(src)
    path = str(tmp_path / ("w.caffemodel" + (".h5" if fmt == "hdf5" else "")))
    src.save_hdf5(path) if fmt == "hdf5" else src.save(path)
    net = make_net(mode=f"connectivity_mode: {mode}", group=group)
    assert all(l.mask is None for l in net.layers)                # filler init: no masks
    net.copy_from(path)
    w = net.layer_dict["conv"].params[0].detach().numpy()
    assert w.reshape(4, -1)[3, 7] == 0                            # Zerout first
    mask = net.layer_dict["conv"].mask.numpy()
    if mode == "DISCONNECTED_ELTWISE":
        np.testing.assert_array_equal(mask, (w != 0).astype(np.float32))
    else:
        np.testing.assert_array_equal(mask, numpy_grpwise(w, group))
        assert mask.reshape(4, -1)[0, 5] == (1 if group == 1 else mask.reshape(4, -1)[0, 5])
    assert net.layer_dict["conv"].mask is not None and net.layer_dict["ip"].mask is not None
    st = Stabilizer(net, sp("ssl_stabilize_param { zerout_scope: NONE }"))
    info = net.learnable_params[0]
    before = info.tensor.detach().clone()
    st.update(info, torch.ones_like(before))
    after = info.tensor.detach()
    frozen = torch.from_numpy(mask) == 0
    assert (after[frozen] == before[frozen]).all() and (after[frozen] == 0).all()
    torch.testing.assert_close(after[~frozen], before[~frozen] - 1)
    bias = net.learnable_params[1]
    b0 = bias.tensor.detach().clone()
    st.update(bias, torch.ones_like(b0))                          # biases never get a mask
    torch.testing.assert_close(bias.tensor.detach(), b0 - 1)


def test_connected_reload_drops_mask_and_mask_helper(tmp_path):
    w = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    m = groupwise_mask(w, 1)
    np.testing.assert_array_equal(m.numpy(), [[1, 1, 0], [0, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(eltwise_mask(w).numpy(), [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    # the mask belongs to the layer: a CONNECTED layer's reload drops one set by hand
    src = make_net()
    _sparse_weights(src)
    path = str(tmp_path / "w.caffemodel")
    src.save(path)
    net = make_net()
    conv = net.layer_dict["conv"]
    conv.set_mask(np.ones(tuple(conv.params[0].shape), np.float32))
    assert conv.mask is not None and conv.mask.dtype == conv.params[0].dtype
    net.copy_from(path)
    assert conv.mask is None


def test_set_mask_freezes_entries_and_checks_shape():
    net = make_net()
    conv = net.layer_dict["conv"]
    w = conv.params[0]
    mask = torch.ones_like(w)
    mask.view(4, -1)[1] = 0
    conv.set_mask(mask)
    info = net.learnable_params[0]
    before = w.detach().clone()
    Stabilizer(net, sp("ssl_stabilize_param { zerout_scope: NONE }")).update(info, torch.ones_like(before))
    frozen = mask == 0
    assert torch.equal(w.detach()[frozen], before[frozen])
    torch.testing.assert_close(w.detach()[~frozen], before[~frozen] - 1)
    with pytest.raises(ShapeMismatchError):
        conv.set_mask(torch.ones(3))
    conv.set_mask(None)
    assert conv.mask is None
