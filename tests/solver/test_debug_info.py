"""debug_info: Caffe's per-layer [Forward]/[Backward] lines and the all-params norms, checked against the same
quantities computed in numpy from the blobs and weights (an independent forward and backward of the net)."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import caffessl

DUMMY = '''
layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
'''
BODY = '''
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { name: "w1" } param { lr_mult: 2 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.7 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "z" param { lr_mult: 1 } param { lr_mult: 0 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.7 } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
'''
NET = DUMMY + BODY
LINE = re.compile(r"\[(Forward|Backward)\] (?:Layer (\S+), (top blob|param blob|bottom blob) (\S+) (data|diff): (\S+)|"
                  r"All net params \(data, diff\): L1 norm = \((\S+), (\S+)\); L2 norm = \((\S+), (\S+)\))")


def _lines(caplog):
    return [m.groups() for r in caplog.records if (m := LINE.search(r.getMessage()))]


def _numpy_net(x, y, w1, b1, w2, b2):
    """The net by hand: tops, then the gradients Caffe's backward computes (SoftmaxWithLoss normalized by N)."""
    h_pre = x @ w1.T + b1
    h = np.maximum(h_pre, 0)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    dh = dz @ w2
    dh_pre = dh * (h_pre > 0)
    return dict(h_pre=h_pre, h=h, z=z, loss=loss, dz=dz, dh=dh, dh_pre=dh_pre,
                dw2=dz.T @ h, dw1=dh_pre.T @ x, db1=dh_pre.sum(0))


def _m(a):
    return float(np.abs(a).mean())


@pytest.fixture
def solver(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nweight_decay: 0.01\nlr_policy: "fixed"\n'
        f'max_iter: 10\ndisplay: 2\ndebug_info: true\nsnapshot_after_train: false\n')
    return caffessl.SGDSolver(str(tmp_path / "solver.prototxt"))


def test_solver_debug_info_lines_match_numpy(solver, caplog):
    net = solver.net
    w = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    with caplog.at_level(logging.INFO, logger="caffessl"):
        solver.step(1)                                            # iteration 0: a display iteration
    x, y = net.blobs["x"].data.astype(np.float64), net.blobs["y"].data.astype(int)
    r = _numpy_net(x, y, *[a.astype(np.float64) for a in w["ip1"] + w["ip2"]])
    want = [
        ("Forward", "x", "top blob", "x", "data", _m(x)), ("Forward", "x", "top blob", "y", "data", _m(y)),
        ("Forward", "ip1", "top blob", "h", "data", _m(r["h_pre"])),
        ("Forward", "ip1", "param blob", "w1", "data", _m(w["ip1"][0])),
        ("Forward", "ip1", "param blob", "1", "data", _m(w["ip1"][1])),
        ("Forward", "relu", "top blob", "h", "data", _m(r["h"])),
        ("Forward", "ip2", "top blob", "z", "data", _m(r["z"])),
        ("Forward", "ip2", "param blob", "0", "data", _m(w["ip2"][0])),
        ("Forward", "ip2", "param blob", "1", "data", _m(w["ip2"][1])),
        ("Forward", "loss", "top blob", "loss", "data", r["loss"]),
        ("Backward", "loss", "bottom blob", "z", "diff", _m(r["dz"])),
        ("Backward", "ip2", "bottom blob", "h", "diff", _m(r["dh"])),
        ("Backward", "ip2", "param blob", "0", "diff", _m(r["dw2"])),            # the bias has lr_mult 0
        ("Backward", "relu", "bottom blob", "h", "diff", _m(r["dh_pre"])),
        ("Backward", "ip1", "param blob", "0", "diff", _m(r["dw1"])),            # x (data) needs no diff
        ("Backward", "ip1", "param blob", "1", "diff", _m(r["db1"])),
    ]
    got = _lines(caplog)
    assert [g[:5] for g in got[:-1]] == [wnt[:5] for wnt in want]
    for g, wnt in zip(got, want):
        assert float(g[5]) == pytest.approx(wnt[5], rel=2e-5, abs=1e-9), g
    params = w["ip1"] + w["ip2"]
    diffs = [r["dw1"], r["db1"], r["dw2"], np.zeros_like(w["ip2"][1])]
    norms = [float(v) for v in got[-1][6:]]
    assert got[-1][0] == "Backward" and norms == pytest.approx(
        [sum(np.abs(a).sum() for a in params), sum(np.abs(a).sum() for a in diffs),
         np.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in params)), np.sqrt(sum((a ** 2).sum() for a in diffs))],
        rel=2e-5)
    assert [r.levelname for r in caplog.records if "All net params" in r.getMessage()] == ["ERROR"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="caffessl"):
        solver.step(1)                                            # iteration 1: not a display iteration
    assert _lines(caplog) == []


def test_debug_info_backward_leaves_the_plain_backwards_diffs(tmp_path):
    """The layer-by-layer backward of a debug iteration accumulates the same param diffs as the one-call one."""
    (tmp_path / "net.prototxt").write_text('layer { name: "x" type: "Input" top: "x" top: "y" input_param { '
                                           'shape { dim: 4 dim: 3 } shape { dim: 4 } } }' + BODY)
    rs = np.random.RandomState(3)
    x, y = rs.randn(4, 3), np.array([0, 1, 1, 0])
    nets = []
    for debug in (False, True):
        net = caffessl.Net(str(tmp_path / "net.prototxt"), caffessl.TRAIN)
        if nets:
            for k, v in nets[0].params.items():
                for i, b in enumerate(v):
                    net.params[k][i].data[...] = b.data
        net.blobs["x"].data[...], net.blobs["y"].data[...] = x, y
        net.debug_info = debug
        nets.append(net)
    a, b = nets
    assert a.forward_backward() == pytest.approx(b.forward_backward(), rel=1e-6)
    for k in a.params:
        for i in range(len(a.params[k])):
            np.testing.assert_allclose(b.params[k][i].diff, a.params[k][i].diff, rtol=1e-5, atol=1e-8)


def test_net_debug_info_from_the_prototxt_logs_pycaffe_forward_and_backward(tmp_path, caplog):
    (tmp_path / "net.prototxt").write_text("debug_info: true\n" + NET)
    net = caffessl.Net(str(tmp_path / "net.prototxt"), caffessl.TRAIN)
    assert net.debug_info
    with caplog.at_level(logging.INFO, logger="caffessl"):
        net.forward()
        net.backward()
    got = _lines(caplog)
    assert sum(g[0] == "Forward" for g in got) == 10 and got[-1][6] is not None
    dz = [float(g[5]) for g in got if g[1] == "loss" and g[2] == "bottom blob"]
    assert dz == pytest.approx([_m(net.blobs["z"].diff)], rel=1e-5)
    w1 = [float(g[5]) for g in got if g[1] == "ip1" and g[2] == "param blob" and g[4] == "diff"]
    assert w1 == pytest.approx([_m(net.params["ip1"][0].diff), _m(net.params["ip1"][1].diff)], rel=1e-5)
