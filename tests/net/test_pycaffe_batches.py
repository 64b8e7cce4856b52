"""pycaffe's forward_all / forward_backward_all (batches of the net's batch size, the last zero-padded, the
padding dropped) against one big-batch net, and Net::Init's rule that without force_backward only layers that
contribute to a loss run backward."""
import numpy as np

import caffessl as caffe

NET = """name: "t" %s
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %d dim: 5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _net(tmp_path, batch, head=""):
    p = tmp_path / f"net{batch}.prototxt"
    p.write_text(NET % (head, batch))
    net = caffe.Net(str(p), caffe.TEST)
    rs = np.random.RandomState(0)
    net.params["ip"][0].data[...] = rs.randn(3, 5)
    net.params["ip"][1].data[...] = rs.randn(3)
    return net


def test_forward_all_matches_one_big_batch(tmp_path):
    x = np.random.RandomState(1).randn(10, 5).astype(np.float32)
    net = _net(tmp_path, 4)                                       # 10 rows: batches of 4, 4, 2 + 2 padding
    out = net.forward_all(data=x, blobs=["ip"])
    w, b = net.params["ip"][0].data.astype(np.float64), net.params["ip"][1].data.astype(np.float64)
    ip = x @ w.T + b
    prob = np.exp(ip - ip.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    assert set(out) == {"prob", "ip"} and out["prob"].shape == (10, 3)
    np.testing.assert_allclose(out["ip"], ip, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["prob"], prob, rtol=1e-5, atol=1e-6)


def test_forward_backward_all_matches_the_analytic_gradient(tmp_path):
    rs = np.random.RandomState(2)
    x = rs.randn(7, 5).astype(np.float32)
    g = rs.randn(7, 3).astype(np.float32)
    net = _net(tmp_path, 3, "force_backward: true")
    outs, diffs = net.forward_backward_all(data=x, prob=g)
    w, b = net.params["ip"][0].data.astype(np.float64), net.params["ip"][1].data.astype(np.float64)
    ip = x @ w.T + b
    p = np.exp(ip - ip.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dip = p * (g - (g * p).sum(1, keepdims=True))                  # softmax backward
    np.testing.assert_allclose(outs["prob"], p, rtol=1e-5, atol=1e-6)
    assert diffs["data"].shape == (7, 5)
    np.testing.assert_allclose(diffs["data"], dip @ w, rtol=1e-4, atol=1e-5)


def test_without_loss_or_force_backward_backward_computes_nothing(tmp_path):
    # Net::Init: no layer contributes to a loss, so no layer needs backward; output diffs are not used
    net = _net(tmp_path, 2)
    net.forward(data=np.ones((2, 5), np.float32))
    net.blobs["prob"].diff[...] = 1
    net.backward()
    assert not net.params["ip"][0].diff.any() and not net.params["ip"][1].diff.any()
    forced = _net(tmp_path, 2, "force_backward: true")
    forced.forward(data=np.ones((2, 5), np.float32))
    forced.blobs["prob"].diff[:, 0] = 1
    forced.backward()
    assert forced.params["ip"][0].diff.any()


def test_an_output_beside_a_loss_gets_no_backward_without_force(tmp_path):
    # "prob" is an output no loss reads; "loss" reads "ip": only the loss's gradient reaches ip's params
    text = (NET % ("", 2)) + """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    p = tmp_path / "loss.prototxt"
    p.write_text(text)
    nets = [caffe.Net(str(p), caffe.TRAIN) for _ in range(2)]
    for net in nets:
        net.params["ip"][0].data[...] = nets[0].params["ip"][0].data
        net.params["ip"][1].data[...] = nets[0].params["ip"][1].data
        net.forward(data=np.arange(10, dtype=np.float32).reshape(2, 5), label=np.array([0, 2], np.float32))
    nets[1].blobs["prob"].diff[...] = 100                          # ignored: Softmax is not under the loss
    for net in nets:
        net.backward()
    np.testing.assert_array_equal(nets[1].params["ip"][0].diff, nets[0].params["ip"][0].diff)
    assert nets[0].params["ip"][0].diff.any()
