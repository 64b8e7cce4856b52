"""The guardrail's depth removal: a layer a policy would empty inside a residual branch goes with its branch
(``prune(..., depth=True)`` / ``--depth``), and ``slim`` turns the branch into a Bias. Expected outputs are
computed independently with numpy from the planted weights."""
import numpy as np
import pytest

from caffessl.errors import PruneGuardrailError
from caffessl.prune import prune
from caffessl.prune.core import residual_tail
from caffessl.sparsity.slim import slim
from caffessl.proto import caffe_pb2
from tests.prune.helpers import PLAIN_NET, make_net, rows

CONNECTED = caffe_pb2.LayerParameter.CONNECTED

# conv0 (4, 1x1) -> ReLU -> { conv_a (4, 3x3 pad 1) -> mask_a (Scale, no bias) -> ReLU -> conv_b (4, 3x3 pad 1) }
#                            + shortcut -> Eltwise SUM -> ip (3)
RES_NET = """
name: "tiny_res"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 5 dim: 2 dim: 6 dim: 6 } shape { dim: 5 dim: 3 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "conv0"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu0" type: "ReLU" bottom: "conv0" top: "conv0" }
layer { name: "conv_a" type: "Convolution" bottom: "conv0" top: "conv_a"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "mask_a" type: "Scale" bottom: "conv_a" top: "conv_a" scale_param { bias_term: false } }
layer { name: "relu_a" type: "ReLU" bottom: "conv_a" top: "conv_a" }
layer { name: "conv_b" type: "Convolution" bottom: "conv_a" top: "conv_b"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sum" type: "Eltwise" bottom: "conv_b" bottom: "conv0" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def _by_hand(net, x):
    """ip(relu(conv0(x)) + b_b): the net once the branch adds conv_b's bias only (numpy, float64)."""
    w0 = net.params["conv0"][0].data.astype(np.float64)[:, :, 0, 0]
    b0 = net.params["conv0"][1].data.astype(np.float64)
    h = np.maximum(np.einsum("oc,nchw->nohw", w0, x) + b0[None, :, None, None], 0)
    h = h + net.params["conv_b"][1].data.astype(np.float64)[None, :, None, None]
    wi = net.params["ip"][0].data.astype(np.float64)
    return h.reshape(len(x), -1) @ wi.T + net.params["ip"][1].data.astype(np.float64)


def _run(net, x):
    net.blobs["data"].data[...] = x
    net.forward(start="conv0")
    return np.array(net.blobs["ip"].data, np.float64)


def test_residual_tail_finds_the_branch_end():
    net = make_net(RES_NET)
    idx = {l.name: i for i, l in enumerate(net.layers)}
    assert net.layers[residual_tail(net, idx["conv_a"])].name == "conv_b"
    assert net.layers[residual_tail(net, idx["conv_b"])].name == "conv_b"
    assert residual_tail(net, idx["conv0"]) is None         # the shortcut's source is read twice
    assert residual_tail(net, idx["ip"]) is None
    plain = make_net(PLAIN_NET)
    assert residual_tail(plain, 1) is None


@pytest.mark.parametrize("policy, amount, plant", [
    ("zeros", 0.0, lambda n: n.params["conv_a"][0].data.__setitem__(Ellipsis, 0)),
    ("magnitude", 50.0, lambda n: None),                       # q = 50 std: every weight of the layer goes
    ("mask-threshold", 0.5, lambda n: n.params["mask_a"][0].data.__setitem__(Ellipsis, [0.1, 0.2, 0.3, 0.4])),
])
def test_depth_removes_the_branch_and_slim_makes_it_a_bias(policy, amount, plant):
    net = make_net(RES_NET)
    plant(net)
    layers = None if policy == "mask-threshold" else ["conv_a"]
    with pytest.raises(PruneGuardrailError, match="layer 'conv_a'.*--depth to remove its residual branch"):
        prune(net, policy, amount, layers=layers)
    res = prune(net, policy, amount, layers=layers, depth=True, clamp=True)      # depth wins over clamp here
    assert not rows(net, "conv_a").any() and not rows(net, "conv_b").any()
    notes = {r.layer: r.note for r in res.layers}
    assert "residual branch is removed" in notes["conv_a"] and "removed residual branch" in notes["conv_b"]
    modes = {lp.name: lp.connectivity_mode for lp in res.ft_param.layer}
    assert modes["conv_a"] != CONNECTED and modes["conv_b"] != CONNECTED      # frozen while fine-tuning
    x = np.random.default_rng(3).normal(size=(5, 2, 6, 6))
    want = _by_hand(net, x)
    np.testing.assert_allclose(_run(net, x), want, rtol=1e-4, atol=1e-5)
    result = slim(net)
    names = [lp.name for lp in result.net_param.layer]
    assert "conv_a" not in names and "conv_b" not in names
    assert next(lp for lp in result.net_param.layer if lp.name == "sum").type == "Bias"


def test_depth_notes_when_every_layer_is_pruned():
    """No --layers: conv_b (zeroed as the branch's end) is reached again by the loop; its note stays."""
    net = make_net(RES_NET)
    net.params["conv_a"][0].data[...] = 0
    res = prune(net, "zeros", 1e-4, depth=True)
    notes = {r.layer: r.note for r in res.layers}
    assert notes["conv_a"].startswith("emptied") and notes["conv_b"].startswith("zeroed: the end of conv_a")
    assert not rows(net, "conv_b").any() and rows(net, "ip").any()


def test_depth_does_not_cut_a_plain_chain():
    net = make_net(PLAIN_NET)
    with pytest.raises(PruneGuardrailError, match="layer 'conv1'") as e:
        prune(net, "magnitude", 100.0, layers=["conv1"], depth=True)
    assert "--depth" not in str(e.value)
    assert np.abs(rows(net, "conv1")).sum() > 0
    prune(net, "magnitude", 100.0, layers=["conv1"], depth=True, clamp=True)   # no branch: clamp keeps one
    assert (np.abs(rows(net, "conv1")).sum(1) > 0).sum() == 1
