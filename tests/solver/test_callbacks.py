"""pycaffe 1.0's Solver.add_callback (Caffe's Solver::callbacks_): in Solver::Step, every callback's on_start runs
after the optional TestAll and before the forward/backward passes, and on_gradients_ready runs after the loss
display and before ApplyUpdate -- it sees the backward's diffs (no weight decay yet) and what it leaves in
them is what the update applies (how Caffe's multi-GPU P2PSync/NCCL reduce gradients)."""
from __future__ import annotations

import numpy as np
import pytest

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from tests.solver._helpers import capture_log

NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""
LR, WD = 0.1, 0.01


def _solver(extra: str = "", path: str = "plain"):
    display = 1 if path == "display" else 0
    sp = parse_text(f"net_param {{ {NET} }} base_lr: {LR} momentum: 0 weight_decay: {WD} lr_policy: \"fixed\" "
                    f"random_seed: 5 display: {display} max_iter: 3 {extra}", caffe_pb2.SolverParameter())
    return caffe.SGDSolver(sp)


def _backward_by_hand(net):
    """EuclideanLoss over InnerProduct: dp = (p - y) / N, dW = dp^T x, db = sum_n dp."""
    x, y, p = (net.blobs[n].data.astype(np.float64) for n in ("x", "y", "p"))
    dp = (p - y) / x.shape[0]
    return dp.T @ x, dp.sum(axis=0)


def test_callbacks_run_in_caffe_step_order_and_registration_order():
    solver = _solver("test_interval: 2 test_iter: 1 test_initialization: true "
                     "test_net_param { " + NET + " }", path="display")
    events = []
    real_test_all = solver.test_all

    def test_all():
        events.append(("test", solver.iter))
        real_test_all()
    solver.test_all = test_all
    with capture_log() as cap:
        def record(what):
            def cb():
                events.append((what, solver.iter))
                marks.append((what, solver.iter, len(cap.messages)))
            return cb
        marks = []
        solver.add_callback(record("start A"), record("ready A"))
        solver.add_callback(record("start B"), record("ready B"))
        solver.step(3)
    assert events == [("test", 0), ("start A", 0), ("start B", 0), ("ready A", 0), ("ready B", 0),
                      ("start A", 1), ("start B", 1), ("ready A", 1), ("ready B", 1),
                      ("test", 2), ("start A", 2), ("start B", 2), ("ready A", 2), ("ready B", 2)]
    msgs = cap.messages
    for what, it, n in marks:
        if what.startswith("ready"):
            # after the display of this iteration's loss and outputs, before ApplyUpdate's "lr =" line
            before = [m for m in msgs[:n] if m.startswith(f"Iteration {it},")]
            assert any("loss =" in m for m in before), (what, it)
            assert not any("lr =" in m for m in before), (what, it)
            assert any(m.startswith(f"Iteration {it}, lr =") for m in msgs[n:]), (what, it)
        else:
            # after TestAll (its outputs are logged before), before this iteration's loss display
            assert not any(m.startswith(f"Iteration {it}, loss") for m in msgs[:n]), (what, it)
            if it % 2 == 0:
                assert any(m.startswith(f"Iteration {it}, Testing net") for m in msgs[:n]), (what, it)
                assert any("Test net output" in m for m in msgs[:n]), (what, it)
    assert solver.iter == 3


def test_solve_calls_callbacks_once_per_iteration(tmp_path):
    solver = _solver(f'snapshot_prefix: "{tmp_path}/s"')     # solve() ends with a snapshot: not in the cwd
    calls = []
    solver.add_callback(lambda: calls.append("s"), lambda: calls.append("g"))
    solver.solve()
    assert calls == ["s", "g"] * 3


@pytest.mark.parametrize("path", ["plain", "display"])
def test_gradients_ready_sees_backward_diffs_before_the_update(path):
    solver = _solver(path=path)
    net = solver.net
    seen = []

    def on_start():
        seen.append({"iter": solver.iter, "w": [b.data.copy() for b in net.params["ip"]]})

    def on_gradients_ready():
        dw, db = _backward_by_hand(net)
        rec = seen[-1]
        rec["diff"] = [b.diff.copy() for b in net.params["ip"]]
        rec["by_hand"] = [dw, db]
        # nothing has touched the weights since on_start
        for w0, b in zip(rec["w"], net.params["ip"]):
            np.testing.assert_array_equal(b.data, w0)

    solver.add_callback(on_start, on_gradients_ready)
    solver.step(3)
    assert [r["iter"] for r in seen] == [0, 1, 2]
    after = [r["w"] for r in seen[1:]] + [[b.data.copy() for b in net.params["ip"]]]
    for rec, w1 in zip(seen, after):
        for diff, by_hand, w0, w in zip(rec["diff"], rec["by_hand"], rec["w"], w1):
            np.testing.assert_allclose(diff, by_hand, rtol=1e-5, atol=1e-6)   # the backward's, no decay
            # plain SGD, momentum 0: W -= lr * (diff + weight_decay * W), the decay added after the callback
            np.testing.assert_allclose(w, w0 - LR * (diff + WD * w0), rtol=1e-5, atol=1e-7)
        assert not np.allclose(rec["diff"][0], 0)


@pytest.mark.parametrize("path", ["plain", "display"])
def test_gradients_ready_may_rewrite_diffs_before_the_update(path):
    solver = _solver(path=path)
    net = solver.net
    w_before = []
    solver.add_callback(lambda: w_before.append([b.data.copy() for b in net.params["ip"]]),
                        lambda: [b.diff.__setitem__(Ellipsis, 0) for b in net.params["ip"]])
    solver.step(3)
    w_before.append([b.data.copy() for b in net.params["ip"]])
    for w0, w1 in zip(w_before, w_before[1:]):
        # only weight decay moves the weights (bias: decay_mult 1 by default, so it decays too)
        for a, b in zip(w0, w1):
            np.testing.assert_allclose(b, a - LR * WD * a, rtol=1e-6, atol=1e-8)


def test_on_start_may_set_weights_before_the_forward():
    solver = _solver()
    net = solver.net
    outputs = []

    def on_start():
        net.params["ip"][0].data[...] = 0
        net.params["ip"][1].data[...] = 0.25

    solver.add_callback(on_start, lambda: outputs.append(net.blobs["p"].data.copy()))
    solver.step(2)
    for p in outputs:
        np.testing.assert_array_equal(p, np.full((4, 2), 0.25, np.float32))


def test_add_callback_takes_two_callables():
    solver = _solver()
    with pytest.raises(TypeError, match="on_start, on_gradients_ready"):
        solver.add_callback(lambda: None, None)
    solver.step(1)          # no callbacks registered: the loop runs as before
    assert solver.iter == 1
