"""Slimming the architectures people compress: planted zero filters / columns / whole residual branches in
CaffeNet (grouped convolutions), ResNet-20, a ResNet-50-style bottleneck net, an Inception module, a DenseNet
block, MobileNet v1/v2 (depthwise) and SqueezeNet (Concat). Each test states the slim net's blob shapes by
hand from the planted zeros; ``verify`` checks them, the parameter count, the outputs against the original
(TEST phase, three seeds, 1e-4 relative) and the ONNX export in onnxruntime."""
import numpy as np
import pytest

from caffessl.sparsity.slim import slim
from tests.golden import REPO, need_shared
from tests.sparsity.slim_nets import (bn, bottleneck_net, build, deploy, densenet_net, inception_net,  # noqa: F401
                                      one_thread, sc, table, verify)

pytest.importorskip("onnxruntime")


def _reports(result):
    return {r.layer: r for r in result.producers}


def test_caffenet_grouped_convolutions(tmp_path):
    net = build(tmp_path, deploy(REPO / "models" / "caffenet" / "train_val_ssl.prototxt", [2, 3, 67, 67], 8))
    P = net.params
    assert P["conv4"][0].data.shape == (48, 24, 3, 3) and P["conv5"][0].data.shape == (32, 24, 3, 3)
    P["conv2"][0].data[0] = 0                      # behind LRN across channels: stays
    for f in (1, 30):                              # conv3: one zero filter in each of conv4's input groups,
        P["conv3"][0].data[f], P["conv3"][1].data[f] = 0, -1.0      # ReLU -> 0: folds into padded conv4
    P["conv4"][0].data[2], P["conv4"][1].data[2] = 0, -1.0          # group 0: folds (0 through ReLU)
    P["conv4"][0].data[40], P["conv4"][1].data[40] = 0, 1.0         # group 1: 1.0 into padded conv5: stays
    P["conv5"][0].data[:16, 10] = 0                # conv4's channel 10 unused by conv5 (group 0)
    P["conv5"][0].data[16:, 6] = 0                 # conv4's channel 30 unused by conv5 (group 1)
    P["fc6"][0].data[:, [0, 20]] = 0               # conv5's channels 0 and 20 (one per group) unused
    P["fc6"][0].data[5], P["fc6"][1].data[5] = 0, -1.0
    P["fc7"][0].data[7], P["fc7"][1].data[7] = 0, 0.5               # ReLU(0.5) into fc8's bias
    result = slim(net)
    rep = _reports(result)
    assert rep["conv2"].after == 32 and rep["conv2"].blocked_by == "LRN layer 'norm2'"
    assert rep["conv1"].blocked_by == "LRN layer 'norm1'"
    # conv4: group 0 could lose 2 and 10, group 1 only 30: one per group goes, one stays for the balance
    assert (rep["conv3"].after, rep["conv4"].after, rep["conv5"].after) == (46, 46, 30)
    assert rep["conv4"].kept_why["equal channel counts per group in 'conv4'"] == 1
    assert rep["conv4"].kept_why["read by Convolution 'conv5' (constant, but the convolution is padded)"] == 1
    assert (rep["fc6"].after, rep["fc6"].folded, rep["fc7"].after, rep["fc7"].folded) == (511, 1, 511, 1)
    expected = table(net, {"conv3": [(46, 32, 3, 3), (46,)], "conv4": [(46, 23, 3, 3), (46,)],
                           "conv5": [(30, 23, 3, 3), (30,)], "fc6": [(511, 30), (511,)],
                           "fc7": [(511, 511), (511,)], "fc8": [(125, 511), (125,)]})
    small = verify(net, result, tmp_path, expected)
    assert small.layers[list(small._layer_names).index("conv4")].group == 2


def _resnet20(tmp_path):
    return build(tmp_path, deploy(REPO / "models" / "resnet20_cifar10" / "resnet20_depth_ssl.prototxt",
                                  [2, 3, 16, 16]))


def test_resnet20_stage_channels_inner_channels_and_a_zero_block(tmp_path):
    net = _resnet20(tmp_path)
    P = net.params
    for name in ("res2a_branch2a", "res2b_branch2a", "res2c_branch2a", "res3a_branch2a", "res3a_branch1"):
        P[name][0].data[:, 5] = 0                  # stage-1 channel 5: no reader uses it
    P["res2b_branch2b"][0].data[:, 3] = 0          # res2b_branch2a's filter 3 unused
    P["res2c_branch2b"][0].data[7] = 0             # zero in this branch, live in conv1 and the others: stays
    for name in ("res4b_branch2a", "res4c_branch2a", "fc10"):
        P[name][0].data[:, 9] = 0                  # stage-3 channel 9, through the global pooling
    P["res3b_branch2a"][0].data[...] = 0           # a whole block: the depth rule makes res3b a Bias
    P["res3b_branch2b"][0].data[...] = 0
    result = slim(net)
    assert [b.eltwise for b in result.branches] == ["res3b"]
    rep = _reports(result)
    assert rep["res2c_branch2b"].after == 15 and rep["res2c_branch2b"].kept_zero == 1
    assert any("live filter in 'conv1'" in w for w in rep["res2c_branch2b"].kept_why)
    ch = {}
    for s in ("2a", "2b", "2c"):
        ch[f"res{s}_branch2b"] = [(15, 15 if s == "2b" else 16, 3, 3)]
        ch[f"res{s}_branch2b_bn"], ch[f"res{s}_branch2b_scale"] = bn(15), sc(15)
        ch[f"res{s}_branch2a"] = [(15 if s == "2b" else 16, 15, 3, 3)]
    ch["res2b_branch2a_bn"], ch["res2b_branch2a_scale"] = bn(15), sc(15)
    ch.update({"conv1": [(15, 3, 3, 3)], "conv1_bn": bn(15), "conv1_scale": sc(15),
               "res3a_branch2a": [(32, 15, 3, 3)], "res3a_branch1": [(32, 15, 1, 1)], "res3b": [(32,)],
               "res4a_branch1": [(63, 32, 1, 1)], "res4a_branch1_bn": bn(63), "res4a_branch1_scale": sc(63),
               "fc10": [(10, 63), (10,)]})
    for b in ("4a", "4b", "4c"):
        ch[f"res{b}_branch2b"] = [(63, 64, 3, 3)]
        ch[f"res{b}_branch2b_bn"], ch[f"res{b}_branch2b_scale"] = bn(63), sc(63)
    ch["res4b_branch2a"] = ch["res4c_branch2a"] = [(64, 63, 3, 3)]
    gone = [f"res3b_branch2{x}{y}" for x in "ab" for y in ("", "_bn", "_scale")]
    verify(net, result, tmp_path, table(net, ch, gone))


def test_bottleneck_resnet(tmp_path):
    net = build(tmp_path, bottleneck_net())
    P = net.params
    P["res2b_branch2c"][0].data[...] = 0           # depth: res2b becomes a Bias, its 2a/2b go as dead
    P["res2a_branch2a"][0].data[1] = 0             # BN/Scale/ReLU of a zero filter with beta -50: 0, folds
    P["res2a_branch2a_scale"][1].data[1] = -50.0   # into the padded 3x3 (a zero constant)
    P["res3a_branch2c"][0].data[:, 2] = 0          # res3a_branch2b's filter 2 unused
    P["res3b_branch2a"][0].data[:, 10] = 0         # stage-2 channel 10: unused by res3b and the classifier
    P["fc"][0].data[:, 10] = 0
    P["res2a_branch2c"][0].data[4] = 0             # zero here, live in the projection shortcut: stays
    result = slim(net)
    assert [b.eltwise for b in result.branches] == ["res2b"]
    rep = _reports(result)
    assert rep["res2a_branch2c"].after == 16 and rep["res2a_branch2c"].kept_zero == 1
    assert any("live filter in 'res2a_branch1'" in w for w in rep["res2a_branch2c"].kept_why)
    assert rep["res2a_branch2a"].folded == 1 and rep["res3a_branch2b"].unused == 1
    ch = {"res2a_branch2a": [(3, 8, 1, 1)], "res2a_branch2a_bn": bn(3), "res2a_branch2a_scale": sc(3),
          "res2a_branch2b": [(4, 3, 3, 3)], "res2b": [(16,)],
          "res3a_branch2b": [(7, 8, 3, 3)], "res3a_branch2b_bn": bn(7), "res3a_branch2b_scale": sc(7),
          "res3a_branch1": [(31, 16, 1, 1)], "res3a_branch1_bn": bn(31), "res3a_branch1_scale": sc(31),
          "res3a_branch2c": [(31, 7, 1, 1)], "res3a_branch2c_bn": bn(31), "res3a_branch2c_scale": sc(31),
          "res3b_branch2c": [(31, 8, 1, 1)], "res3b_branch2c_bn": bn(31), "res3b_branch2c_scale": sc(31),
          "res3b_branch2a": [(8, 31, 1, 1)], "fc": [(10, 31), (10,)]}
    gone = [f"res2b_branch2{x}{y}" for x in "abc" for y in ("", "_bn", "_scale")]
    verify(net, result, tmp_path, table(net, ch, gone))


def test_inception_module_concat_offsets(tmp_path):
    net = build(tmp_path, inception_net())
    P = net.params
    P["inc/1x1"][0].data[2], P["inc/1x1"][1].data[2] = 0, -1.0      # Concat channel 2: ReLU -> 0
    P["inc/3x3"][0].data[4], P["inc/3x3"][1].data[4] = 0, 0.7       # channel 8: 0.7 into conv_after's bias
    P["conv_after"][0].data[:, 11] = 0                             # channel 11 = inc/5x5's filter 1: unused
    P["inc/pool_proj"][0].data[0], P["inc/pool_proj"][1].data[0] = 0, 0.3     # channel 13: folds
    P["inc/3x3_reduce"][0].data[1], P["inc/3x3_reduce"][1].data[1] = 0, 0.5   # 0.5 into a padded 3x3: stays
    b = P["conv_after"][1].data.copy()
    w = P["conv_after"][0].data[:, :, 0, 0].copy()
    fold = w[:, 8] * 0.7 + w[:, 13] * 0.3
    result = slim(net)
    rep = _reports(result)
    assert rep["inc/3x3_reduce"].after == 4 and rep["inc/3x3_reduce"].kept_zero == 1
    assert rep["inc/3x3"].folded == 1 and rep["inc/5x5"].unused == 1
    small = verify(net, result, tmp_path, table(net, {
        "inc/1x1": [(3, 8, 1, 1), (3,)], "inc/3x3": [(5, 4, 3, 3), (5,)], "inc/5x5": [(2, 2, 5, 5), (2,)],
        "inc/pool_proj": [(2, 8, 1, 1), (2,)], "conv_after": [(8, 12, 1, 1), (8,)]}))
    np.testing.assert_allclose(small.params["conv_after"][1].data, b + fold, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(small.params["conv_after"][0].data[:, :, 0, 0],
                                  w[:, [0, 1, 3, 4, 5, 6, 7, 9, 10, 12, 14, 15]])


def test_concat_input_read_by_softmax_stays(tmp_path):
    text = inception_net().split('layer { name: "conv_after"')[0] + \
        'layer { name: "prob" type: "Softmax" bottom: "inc/output" top: "prob" }\n'
    net = build(tmp_path, text)
    net.params["inc/1x1"][0].data[2] = 0
    rep = _reports(slim(net))
    assert rep["inc/1x1"].after == 4 and rep["inc/1x1"].blocked_by == "Softmax layer 'prob'"
    assert rep["inc/1x1"].kept_why == {"Softmax layer 'prob'": 4}


def test_densenet_block(tmp_path):
    net = build(tmp_path, densenet_net())
    P = net.params
    for name in ("conv1", "conv2", "transition"):
        P[name][0].data[:, 2] = 0                  # conv0's channel 2, in both Concats: unused
    P["conv2"][0].data[1] = 0                      # Concat2 channel 11: a constant into the 1x1 transition
    P["conv1"][0].data[3], P["conv1"][1].data[3] = 0, 5.0     # Concat1 channel 9: a positive constant
    P["scale2"][0].data[9], P["scale2"][1].data[9] = 1.0, 0.0  # (through bn2/scale2/relu2) into the padded
    result = slim(net)
    rep = _reports(result)                         # conv2: stays
    assert (rep["conv0"].unused, rep["conv2"].folded, rep["conv1"].kept_zero) == (1, 1, 1)
    assert any("padded" in w for w in rep["conv1"].kept_why)
    verify(net, result, tmp_path, table(net, {
        "conv0": [(5, 3, 3, 3), (5,)], "bn1": bn(5), "scale1": sc(5), "conv1": [(4, 5, 3, 3), (4,)],
        "bn2": bn(9), "scale2": sc(9), "conv2": [(3, 9, 3, 3), (3,)], "bn3": bn(12), "scale3": sc(12),
        "transition": [(7, 12, 1, 1), (7,)]}))


def test_mobilenet_v1_depthwise(tmp_path):
    path = need_shared("models", "prototxt_only", "mobilenet", "mobilenet_deploy.prototxt")
    net = build(tmp_path, deploy(path, [2, 3, 32, 32], 4))
    P = net.params
    assert P["conv2_2/dw"][0].data.shape == (16, 1, 3, 3)
    P["conv2_2/sep"][0].data[:, 3] = 0             # conv2_1/sep's filter 3 and conv2_2/dw's channel 3 go
    P["conv3_1/dw"][0].data[5] = 0                 # a zero depthwise filter, beta -50: ReLU 0, and the
    P["conv3_1/dw/scale"][1].data[5] = -50.0       # live conv2_2/sep filter 5 feeding only it goes too
    P["conv4_1/dw"][0].data[0] = 0                 # a positive constant into the bias-less 1x1: stays
    P["conv4_1/dw/scale"][1].data[0] = 2.0
    result = slim(net)
    rep = _reports(result)
    assert rep["conv4_1/dw"].after == 64 and any("no bias term" in w for w in rep["conv4_1/dw"].kept_why)
    ch = {"conv2_1/sep": [(15, 8, 1, 1)], "conv2_1/sep/bn": bn(15), "conv2_1/sep/scale": sc(15),
          "conv2_2/dw": [(15, 1, 3, 3)], "conv2_2/dw/bn": bn(15), "conv2_2/dw/scale": sc(15),
          "conv2_2/sep": [(31, 15, 1, 1)], "conv2_2/sep/bn": bn(31), "conv2_2/sep/scale": sc(31),
          "conv3_1/dw": [(31, 1, 3, 3)], "conv3_1/dw/bn": bn(31), "conv3_1/dw/scale": sc(31),
          "conv3_1/sep": [(32, 31, 1, 1)]}
    small = verify(net, result, tmp_path, table(net, ch))
    assert small.layers[list(small._layer_names).index("conv3_1/dw")].group == 31


def test_mobilenet_v2_residual_depthwise_and_a_zero_block(tmp_path):
    path = need_shared("models", "prototxt_only", "mobilenet", "mobilenet_v2_deploy.prototxt")
    net = build(tmp_path, deploy(path, [2, 3, 32, 32], 4))
    P = net.params
    assert P["conv3_1/linear"][0].data.shape == (6, 36, 1, 1) and P["conv4_1/linear"][0].data.shape[0] == 8
    for name in ("conv3_1/expand", "conv3_2/expand"):
        P[name][0].data[:, 4] = 0                  # channel 4 of the 6-channel residual stage
    for name in ("conv4_1/expand", "conv4_3/expand"):
        P[name][0].data[:, 1] = 0                  # channel 1 of the 8-channel stage (through the Bias)
    P["conv4_2/linear"][0].data[...] = 0           # depth: block_4_2 becomes a Bias layer
    result = slim(net)
    assert [b.eltwise for b in result.branches] == ["block_4_2"]
    ch = {"conv2_2/linear": [(5, 24, 1, 1)], "conv2_2/linear/bn": bn(5), "conv2_2/linear/scale": sc(5),
          "conv3_1/linear": [(5, 36, 1, 1)], "conv3_1/linear/bn": bn(5), "conv3_1/linear/scale": sc(5),
          "conv3_1/expand": [(36, 5, 1, 1)], "conv3_2/expand": [(36, 5, 1, 1)],
          "conv3_2/linear": [(7, 36, 1, 1)], "conv3_2/linear/bn": bn(7), "conv3_2/linear/scale": sc(7),
          "conv4_1/linear": [(7, 48, 1, 1)], "conv4_1/linear/bn": bn(7), "conv4_1/linear/scale": sc(7),
          "block_4_2": [(7,)], "conv4_1/expand": [(48, 7, 1, 1)], "conv4_3/expand": [(48, 7, 1, 1)]}
    gone = [f"conv4_2/{a}{b}" for a in ("expand", "dwise", "linear") for b in ("", "/bn", "/scale")]
    verify(net, result, tmp_path, table(net, ch, gone))


def test_squeezenet_fire_concat(tmp_path):
    path = need_shared("models", "prototxt_only", "squeezenet_v1.1", "deploy.prototxt")
    net = build(tmp_path, deploy(path, [2, 3, 64, 64], 4))
    P = net.params
    assert P["fire2/expand3x3"][0].data.shape == (16, 4, 3, 3)
    P["fire2/squeeze1x1"][0].data[3], P["fire2/squeeze1x1"][1].data[3] = 0, -1.0   # 0 into both expands
    P["fire3/squeeze1x1"][0].data[:, 18] = 0       # fire2/concat channel 18 = expand3x3's filter 2
    P["fire3/squeeze1x1"][0].data[0], P["fire3/squeeze1x1"][1].data[0] = 0, 1.0    # into a padded 3x3: stays
    result = slim(net)
    rep = _reports(result)
    assert rep["fire3/squeeze1x1"].after == 4 and rep["fire3/squeeze1x1"].kept_zero == 1
    assert rep["fire2/squeeze1x1"].folded == 1 and rep["fire2/expand3x3"].unused == 1
    verify(net, result, tmp_path, table(net, {
        "fire2/squeeze1x1": [(3, 16, 1, 1), (3,)], "fire2/expand1x1": [(16, 3, 1, 1), (16,)],
        "fire2/expand3x3": [(15, 3, 3, 3), (15,)], "fire3/squeeze1x1": [(4, 31, 1, 1), (4,)]}))


def _plant_random(net, rng, rate=0.3):
    """Zero a fraction of every producer's filters (biases of either sign, Scale betas too) and of every
    reader's input channels, at random."""
    for name, blobs in net.params.items():
        t = net.layer_type(name)
        w = blobs[0].data
        if t == "Scale":
            blobs[1].data[...] = rng.standard_normal(w.shape)
        elif t in ("Convolution", "InnerProduct") and w.ndim >= 2:
            rows = rng.random(w.shape[0]) < rate
            w[rows] = 0
            if len(blobs) > 1:
                blobs[1].data[rows] = rng.standard_normal(int(rows.sum()))
            if w.shape[1] > 1 and w.ndim == 4:
                w[:, rng.random(w.shape[1]) < rate] = 0


@pytest.mark.parametrize("make", [bottleneck_net, inception_net, densenet_net])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_zeros_stay_exact(tmp_path, make, seed):
    """Whatever zeros are planted, the slim net computes the same outputs and exports exactly."""
    from tests.sparsity.slim_nets import reload, same_in_onnxruntime, same_outputs
    net = build(tmp_path, make(), seed=seed)
    _plant_random(net, np.random.default_rng(seed))
    result = slim(net)
    assert result.removed > 0
    small = reload(tmp_path, result)
    same_outputs(net, small)
    same_in_onnxruntime(small, tmp_path)
