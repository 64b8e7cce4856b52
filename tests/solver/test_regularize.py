"""Regularizer: weight decay (L1/L2, local type, decay_proto) and SSL group Lasso, checked against
independent numpy formulas, finite differences and the block equivalents of breadth / kernel-shape decay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import FileMissingError, ShapeMismatchError, SolverConfigError
from caffessl.io.blobproto import write_binaryproto
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.solver.regularize import Regularizer

NET = """
name: "t"
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 4 dim: 6 dim: 6 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "c" {conv_extra}
  param {{ {p0} }} param {{ {p1} }}
  convolution_param {{ num_output: 6 kernel_size: 3 group: {group} weight_filler {{ type: "gaussian" std: 0.5 }}
                      bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "c" top: "y" param {{ {p2} }}
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
"""


def make_net(p0="", p1="", p2="", group=1, dtype=torch.float32, conv_extra=""):
    np_ = parse_text(NET.format(p0=p0, p1=p1, p2=p2, group=group, conv_extra=conv_extra),
                     caffe_pb2.NetParameter())
    return caffe.Net(np_, caffe.TRAIN, dtype=dtype)


def solver(text=""):
    return parse_text(text, caffe_pb2.SolverParameter())


def run(net, sp):
    reg = Regularizer(net, sp)
    for info in net.learnable_params:
        info.tensor.grad = torch.zeros_like(info.tensor)
    term = reg.apply_all()
    return term, {(i.layer_name, i.index): i.tensor.grad.detach().cpu().numpy().copy()
                  for i in net.learnable_params}


def W(net, layer, i=0):
    return net.layer_dict[layer].params[i].detach().cpu().numpy().astype(np.float64)


def zero_some_groups(net):
    """Make a whole row, a whole column and one 2x3 tile of conv exactly zero (the zero-norm rule)."""
    with torch.no_grad():
        w = net.layer_dict["conv"].params[0].view(6, -1)
        w[1, :] = 0
        w[:, 4] = 0
        w[4:6, 6:9] = 0


def block_ref(w, y, x):
    """Independent numpy: (grad, term) of sum of tile norms with the zero-norm rule."""
    r = w.shape[0]
    m = w.reshape(r, -1)
    c = m.shape[1]
    g = np.zeros_like(m)
    term = 0.0
    for by in range(r // y):
        for bx in range(c // x):
            blk = m[by * y:(by + 1) * y, bx * x:(bx + 1) * x]
            n = np.sqrt((blk ** 2).sum())
            term += n
            if n > 0:
                g[by * y:(by + 1) * y, bx * x:(bx + 1) * x] = blk / n
    return g.reshape(w.shape), term


# -- weight decay ---------------------------------------------------------------------------------------

def test_l2_and_l1_weight_decay_with_local_override_and_sign0():
    net = make_net(p0='regularization_type: "L1" decay_mult: 2', p1="decay_mult: 0")
    with torch.no_grad():
        net.layer_dict["conv"].params[0].view(-1)[:5] = 0
    term, g = run(net, solver("weight_decay: 0.01"))
    wc, wi = W(net, "conv"), W(net, "ip")
    np.testing.assert_allclose(g[("conv", 0)], 0.02 * np.sign(wc), rtol=1e-6)
    assert (g[("conv", 0)].reshape(-1)[:5] == 0).all()          # sign(0) = 0
    np.testing.assert_array_equal(g[("conv", 1)], 0)             # decay_mult 0
    np.testing.assert_allclose(g[("ip", 0)], 0.01 * wi, rtol=1e-6)
    ref = 0.02 * np.abs(wc).sum() + 0.01 / 2 * (wi ** 2).sum() + 0.01 / 2 * (W(net, "ip", 1) ** 2).sum()
    assert term == pytest.approx(ref, rel=1e-5)


def test_decay_proto_multiplies_elementwise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = make_net(p0='decay_proto: "d.binaryproto"', p2='regularization_type: "L1" decay_proto: "e.binaryproto"')
    d = np.random.RandomState(0).uniform(0, 3, (6, 4, 3, 3)).astype(np.float32)
    e = np.random.RandomState(1).uniform(0, 3, (3, 6 * 4 * 4)).astype(np.float32)
    write_binaryproto("d.binaryproto", d)
    write_binaryproto("e.binaryproto", e)
    term, g = run(net, solver("weight_decay: 0.1"))
    wc, wi = W(net, "conv"), W(net, "ip")
    np.testing.assert_allclose(g[("conv", 0)], 0.1 * wc * d, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g[("ip", 0)], 0.1 * np.sign(wi) * e, rtol=1e-5, atol=1e-7)
    ref = 0.05 * (d * wc ** 2).sum() + 0.1 * np.abs(wi * e).sum() + 0.05 * (W(net, "conv", 1) ** 2).sum() \
        + 0.05 * (W(net, "ip", 1) ** 2).sum()
    assert term == pytest.approx(ref, rel=1e-5)


# -- group lasso against numpy ----------------------------------------------------------------------------

@pytest.mark.parametrize("y,x", [(2, 3), (1, 36), (6, 1), (3, 9), (6, 36), (1, 1)])
def test_block_group_lasso_matches_numpy_with_zero_groups(y, x):
    net = make_net(p0=f"block_group_lasso {{ xdimen: {x} ydimen: {y} block_decay_mult: 1.5 }}")
    zero_some_groups(net)
    term, g = run(net, solver("block_group_decay: 0.2"))
    gref, tref = block_ref(W(net, "conv"), y, x)
    np.testing.assert_allclose(g[("conv", 0)], 0.3 * gref, rtol=1e-5, atol=1e-7)
    assert term == pytest.approx(0.3 * tref, rel=1e-5)


def test_several_block_specs_add_up_in_order():
    net = make_net(p0="block_group_lasso { xdimen: 36 ydimen: 1 } block_group_lasso { xdimen: 1 ydimen: 6 "
                      "block_decay_mult: 0.5 }")
    zero_some_groups(net)
    term, g = run(net, solver("block_group_decay: 0.1"))
    g1, t1 = block_ref(W(net, "conv"), 1, 36)
    g2, t2 = block_ref(W(net, "conv"), 6, 1)
    np.testing.assert_allclose(g[("conv", 0)], 0.1 * g1 + 0.05 * g2, rtol=1e-5, atol=1e-7)
    assert term == pytest.approx(0.1 * t1 + 0.05 * t2, rel=1e-5)


def test_kernel_shape_decay_is_per_conv_group_and_breadth_per_row():
    net = make_net(p0="kernel_shape_decay_mult: 2 breadth_decay_mult: 3", group=2)
    zero_some_groups(net)
    term, g = run(net, solver("kernel_shape_decay: 0.1 breadth_decay: 0.01"))
    w = W(net, "conv")        # (6, 2, 3, 3), 2 conv groups of 3 filters
    gk, tk = block_ref(w, 3, 1)
    gb, tb = block_ref(w, 1, 18)
    np.testing.assert_allclose(g[("conv", 0)], 0.2 * gk + 0.03 * gb, rtol=1e-5, atol=1e-7)
    assert term == pytest.approx(0.2 * tk + 0.03 * tb, rel=1e-5)
    np.testing.assert_array_equal(g[("conv", 1)], 0)   # bias mults default to 0


@pytest.mark.parametrize("mult", [1.0, 0.7])
def test_breadth_and_kernel_shape_equal_their_block_equivalents(mult):
    a = make_net(p0=f"breadth_decay_mult: {mult}", p2=f"kernel_shape_decay_mult: {mult}")
    b = make_net(p0=f"block_group_lasso {{ xdimen: 36 ydimen: 1 block_decay_mult: {mult} }}",
                 p2=f"block_group_lasso {{ xdimen: 1 ydimen: 3 block_decay_mult: {mult} }}")
    for la, lb in zip(a.layers, b.layers):
        for pa, pb in zip(la.params, lb.params):
            with torch.no_grad():
                pb.copy_(pa)
    zero_some_groups(a)
    zero_some_groups(b)
    ta, ga = run(a, solver("breadth_decay: 0.05 kernel_shape_decay: 0.05"))
    tb, gb = run(b, solver("block_group_decay: 0.05"))
    for k in ga:
        np.testing.assert_allclose(ga[k], gb[k], rtol=1e-6, atol=1e-8)
    assert ta == pytest.approx(tb, rel=1e-6)


# -- finite differences (float64) -------------------------------------------------------------------------

@pytest.mark.parametrize("p0,sp", [
    ("breadth_decay_mult: 1", "breadth_decay: 0.3"),
    ("kernel_shape_decay_mult: 1", "kernel_shape_decay: 0.3"),
    ("block_group_lasso { xdimen: 9 ydimen: 2 }", "block_group_decay: 0.3"),
    ("block_group_lasso { xdimen: 18 ydimen: 6 }", "block_group_decay: 0.3"),
    ('regularization_type: "L1"', "weight_decay: 0.3"),
    ("", "weight_decay: 0.3"),
])
def test_gradient_is_the_derivative_of_the_term(p0, sp):
    net = make_net(p0=p0 + " decay_mult: 1", p1="decay_mult: 0", group=2, dtype=torch.float64)
    for info in net.learnable_params:
        if info.layer_name == "ip":
            info.decay_mult = 0.0
    sp = solver(sp)
    reg = Regularizer(net, sp)
    conv = next(i for i in net.learnable_params if i.layer_name == "conv" and i.index == 0)
    conv.tensor.grad = torch.zeros_like(conv.tensor)
    reg.apply(conv)
    analytic = conv.tensor.grad.clone().view(-1)
    w = conv.tensor.detach().view(-1)
    rng = np.random.RandomState(3)
    eps = 1e-6
    for j in rng.choice(w.numel(), 25, replace=False):
        vals = []
        for s in (+1, -1):
            with torch.no_grad():
                w[j] += s * eps
            conv.tensor.grad = torch.zeros_like(conv.tensor)
            vals.append(reg.apply(conv))
            with torch.no_grad():
                w[j] -= s * eps
        num = (vals[0] - vals[1]) / (2 * eps)
        assert num == pytest.approx(float(analytic[j]), rel=1e-5, abs=1e-8), j


def test_zero_group_contributes_nothing_and_frozen_param_still_counts():
    net = make_net(p0="lr_mult: 0 breadth_decay_mult: 1")
    with torch.no_grad():
        net.layer_dict["conv"].params[0].zero_()
    reg = Regularizer(net, solver("breadth_decay: 1"))
    conv = next(i for i in net.learnable_params if i.layer_name == "conv" and i.index == 0)
    assert conv.tensor.grad is None
    assert reg.apply(conv) == 0.0                        # all-zero rows: no NaN, no term
    with torch.no_grad():
        net.layer_dict["conv"].params[0].fill_(0.5)
    assert reg.apply(conv) == pytest.approx(6 * 0.5 * 6, rel=1e-6)   # 6 rows of 36 x 0.5


# -- set-up validation ------------------------------------------------------------------------------------

def test_unknown_regularization_type_only_fails_with_nonzero_decay():
    net = make_net(p0='regularization_type: "L3"')
    Regularizer(net, solver("weight_decay: 0"))
    with pytest.raises(SolverConfigError, match=r"layer 'conv' param 0.*'L3'"):
        Regularizer(net, solver("weight_decay: 0.1"))
    with pytest.raises(SolverConfigError, match="'l2'"):
        Regularizer(make_net(), solver('weight_decay: 0.1 regularization_type: "l2"'))


def test_decay_proto_missing_or_wrong_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = make_net(p0='decay_proto: "nope.binaryproto"')
    with pytest.raises(FileMissingError, match="layer 'conv' param 0.*nope.binaryproto"):
        Regularizer(net, solver())
    write_binaryproto("bad.binaryproto", np.ones((6, 4, 3, 2), np.float32))
    net = make_net(p0='decay_proto: "bad.binaryproto"')
    with pytest.raises(ShapeMismatchError, match=r"\(6, 4, 3, 2\).*\(6, 4, 3, 3\)"):
        Regularizer(net, solver())


@pytest.mark.parametrize("blk", ["xdimen: 0 ydimen: 1", "xdimen: 5 ydimen: 1", "xdimen: 1 ydimen: 4",
                                 "xdimen: 72 ydimen: 1"])
def test_block_that_does_not_tile_is_refused_at_setup(blk):
    net = make_net(p0=f"block_group_lasso {{ {blk} }}")
    with pytest.raises(SolverConfigError, match=r"layer 'conv' param 0.*" + ("positive" if "0 " in blk
                                                                              else r"6x36")):
        Regularizer(net, solver("block_group_decay: 0 display: 5"))   # at lambda 0 too: the fork's display


def test_block_that_does_not_tile_at_lambda_0_without_display_is_left_alone():
    # the fork CHECKs a spec only in its regularizer (lambda != 0) and its sparsity display (display > 0)
    net = make_net(p0="block_group_lasso { xdimen: 5 ydimen: 1 }")
    term, grads = run(net, solver("block_group_decay: 0 display: 0"))
    assert term == 0
    with pytest.raises(SolverConfigError, match=r"layer 'conv' param 0.*6x36"):
        Regularizer(net, solver("block_group_decay: 0.1 display: 0"))


def test_golden_nondivisible_case_is_a_setup_error(monkeypatch):
    from tests.golden import need_shared
    from caffessl.io.prototxt import read_solver_prototxt
    d = need_shared("golden", "ssl_block_group_lasso_nondivisible")
    monkeypatch.chdir(d)
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    with pytest.raises(SolverConfigError, match=r"layer 'conv1'.*xdimen=4 ydimen=3.*8x18"):
        Regularizer(net, read_solver_prototxt(str(d / "solver.prototxt")))


# -- shipped SSL models and solvers -----------------------------------------------------------------------

from tests.golden import REPO  # noqa: E402

SSL_SOLVERS = sorted(p.name for p in (REPO / "solvers").glob("*.prototxt")
                     if "ssl" in p.name)


def input_substituted(net_path, batch=2):
    """The net with every Data layer replaced by an Input layer of the shape its source would give."""
    from caffessl.io.prototxt import read_net_prototxt
    npar = read_net_prototxt(str(net_path))
    for lp in npar.layer:
        if lp.type != "Data":
            continue
        src, crop = lp.data_param.source, lp.transform_param.crop_size
        shape = (3, crop, crop) if crop else (1, 28, 28) if "mnist" in src else (3, 32, 32)
        tops = list(lp.top)
        include = [type(r)() for r in lp.include]
        for a, b in zip(include, lp.include):
            a.CopyFrom(b)
        lp.Clear()
        lp.name, lp.type = "data", "Input"
        lp.top.extend(tops)
        for r in include:
            lp.include.add().CopyFrom(r)
        lp.input_param.shape.add().dim.extend((batch,) + shape)
        lp.input_param.shape.add().dim.extend((batch,))
    return npar


@pytest.mark.parametrize("solver_name", SSL_SOLVERS)
def test_shipped_ssl_model_parses_builds_and_sets_up(solver_name):
    from caffessl.io.prototxt import read_solver_prototxt
    from caffessl.solver.stabilize import Stabilizer
    sp = read_solver_prototxt(str(REPO / "solvers" / solver_name))
    npar = input_substituted(REPO / sp.net)
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(npar, phase)
        assert net.learnable_params
        if phase == caffe.TRAIN:
            reg = Regularizer(net, sp)
            Stabilizer(net, sp)
            if sp.breadth_decay or sp.kernel_shape_decay or sp.block_group_decay:
                assert any(p.blocks for p in reg.plans.values()), "an SSL solver with no active group"
            elif "finetune" in solver_name:
                assert any(l.param.connectivity_mode for l in net.layers)


@pytest.mark.parametrize("solver_name", ["lenet_ssl_solver.prototxt", "mnist_mlp_ssl_solver.prototxt",
                                         "ssl_block_forms_solver.prototxt"])
def test_small_ssl_models_train_a_few_iterations(solver_name):
    from caffessl.io.prototxt import read_solver_prototxt
    from caffessl.solver.stabilize import Stabilizer
    from caffessl.solver.updates import sgd
    sp = read_solver_prototxt(str(REPO / "solvers" / solver_name))
    net = caffe.Net(input_substituted(REPO / sp.net, batch=4), caffe.TRAIN)
    rng = np.random.RandomState(0)
    for name in net.inputs:
        shape = net.blobs[name].data.shape
        net.blobs[name].data[...] = rng.randint(0, 4, shape) if name == "label" else rng.rand(*shape)
    reg, st = Regularizer(net, sp), Stabilizer(net, sp)
    before = [i.tensor.detach().clone() for i in net.learnable_params]
    hist = [torch.zeros_like(b) for b in before]
    for _ in range(3):
        net.clear_param_diffs()
        loss = net.forward_backward()
        assert np.isfinite(loss)
        term = 0.0
        for info, h in zip(net.learnable_params, hist):
            if info.tensor.grad is None:
                continue
            term += reg.apply(info)
            st.update(info, sgd([info.tensor.grad], [[h]], local_rate=sp.base_lr * info.lr_mult,
                                momentum=sp.momentum)[0])
        assert term > 0
    assert any(not torch.equal(b, i.tensor) for b, i in zip(before, net.learnable_params))


def test_lenet_finetune_net_freezes_zero_groups_of_ssl_weights(tmp_path):
    from caffessl.io.prototxt import read_solver_prototxt
    ssl = caffe.Net(input_substituted(REPO / "models/lenet/lenet_train_test_ssl.prototxt"), caffe.TRAIN)
    with torch.no_grad():
        ssl.layer_dict["conv1"].params[0][3:] = 0           # 17 of 20 filters removed
        ssl.layer_dict["conv2"].params[0].view(50, -1)[:, ::2] = 0
    ssl.save(str(tmp_path / "ssl.caffemodel"))
    sp = read_solver_prototxt(str(REPO / "solvers/lenet_ssl_finetune_solver.prototxt"))
    ft = caffe.Net(input_substituted(REPO / sp.net), caffe.TRAIN, weights=str(tmp_path / "ssl.caffemodel"))
    m1, m2 = ft.layer_dict["conv1"].mask, ft.layer_dict["conv2"].mask
    assert (m1[3:] == 0).all() and (m1[:3] == 1).all()
    assert (m2.view(50, -1)[:, ::2] == 0).all() and (m2.view(50, -1)[:, 1::2] == 1).all()
