"""Loss layers and Accuracy: golden cases from real Caffe, numpy re-computations of this Caffe version's
formulas, float64 finite-difference gradients, and typed errors."""
from __future__ import annotations

import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import FileMissingError, LayerConfigError, ShapeMismatchError
from caffessl.io.blobproto import write_binaryproto
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from tests.golden import case_names, need_shared, run_layer_case
from tests.layers.gradcheck import build_net, check_layer_gradients

LOSS_TYPES = ("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "ContrastiveLoss",
              "MultinomialLogisticLoss", "InfogainLoss", "Accuracy")


@pytest.mark.parametrize("name", case_names(prefixes=("softmaxloss_", "euclidean_loss", "sigmoid_xent_loss",
                                                      "hinge_loss_", "contrastive_loss", "multinomial_logistic_loss",
                                                      "infogain_loss_source", "accuracy_"), types=LOSS_TYPES))
def test_golden_loss(name, monkeypatch):
    d = need_shared("golden", name)
    monkeypatch.chdir(d)  # Caffe opens infogain_loss_param.source relative to the working directory
    run_layer_case(name)


def test_golden_loss_cases_present():
    need_shared("golden")
    names = set(case_names(types=LOSS_TYPES))
    assert {"hinge_loss_l1", "hinge_loss_l2", "infogain_loss_source", "contrastive_loss", "accuracy_top3",
            "softmaxloss_ignore_valid"} <= names


RNG = np.random.default_rng(5)


def run(layer, inputs, phase=caffe.TEST):
    net, arrays, tops, _ = build_net(layer, [np.asarray(a, dtype=np.float64) for a in inputs], phase)
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    net.forward()
    return [net.blobs[t].data.copy() for t in tops], net, tops


def labels(shape, c, ignore=None, frac=0.3):
    lab = RNG.integers(0, c, size=shape).astype(np.float64)
    if ignore is not None:
        lab[RNG.random(shape) < frac] = ignore
    return lab


def log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# -- SoftmaxWithLoss -------------------------------------------------------------------------------------

def _softmax_loss_ref(x, lab, ignore, mode):
    n, c = x.shape[:2]
    inner = int(np.prod(x.shape[2:]))
    lp = log_softmax(x.reshape(n, c, inner), 1)
    lab = lab.reshape(n, inner).astype(int)
    keep = np.ones_like(lab, bool) if ignore is None else lab != ignore
    picked = np.take_along_axis(lp, np.where(keep, lab, 0)[:, None], 1)[:, 0]
    total = -(picked * keep).sum()
    div = {"FULL": n * inner, "VALID": keep.sum(), "BATCH_SIZE": n, "NONE": 1}[mode]
    return total / max(div, 1)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_normalization_modes(mode, ignore):
    x = RNG.standard_normal((3, 4, 2, 3))
    lab = labels((3, 2, 3), 4, ignore)
    ig = "" if ignore is None else f"ignore_label: {ignore}"
    text = (f'type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" '
            f'loss_param {{ normalization: {mode} {ig} }}')
    (loss,), *_ = run(text, [x, lab])
    np.testing.assert_allclose(loss, _softmax_loss_ref(x, lab, ignore, mode), rtol=1e-12)
    check_layer_gradients(text, [x, lab], check_bottoms=[0])


@pytest.mark.parametrize("normalize,mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    x = RNG.standard_normal((3, 4, 2))
    lab = labels((3, 2), 4, 1)
    (loss,), *_ = run(f'type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" '
                      f'loss_param {{ ignore_label: 1 normalize: {normalize} }}', [x, lab])
    np.testing.assert_allclose(loss, _softmax_loss_ref(x, lab, 1, mode), rtol=1e-12)


def test_softmax_loss_all_ignored_divides_by_one_not_zero():
    x = RNG.standard_normal((2, 3))
    (loss,), net, _ = run('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" '
                          'loss_param { ignore_label: 0 }', [x, np.zeros(2)])
    assert loss == 0 and np.isfinite(loss)


def test_softmax_loss_clamps_like_caffe_but_keeps_the_gradient():
    """Caffe: loss -= log(max(prob[label], FLT_MIN)); its gradient stays prob - 1 (no clamp there)."""
    x = np.array([[0.0, 200.0, 0.0], [1.0, 2.0, 3.0]])
    lab = np.array([0.0, 2.0])
    text = 'type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"'
    (loss,), net, _ = run(text, [x, lab])
    p = np.exp(log_softmax(x.astype(np.float64), 1))
    expected = (-np.log(float(np.finfo(np.float32).tiny)) - np.log(p[1, 2])) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    net.backward()
    grad = p.copy()
    grad[[0, 1], [0, 2]] -= 1
    np.testing.assert_allclose(net.blobs["x"].diff, grad / 2, atol=1e-12)


@pytest.mark.parametrize("bad", [3.0, -1.0, -100.0])
def test_softmax_loss_rejects_labels_out_of_range(bad):
    with pytest.raises(LayerConfigError, match=r"label values must lie in \[0, 3\)"):
        run('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"',
            [RNG.standard_normal((2, 3)), np.array([0.0, bad])])


def test_softmax_loss_with_prob_top_caffe_aborts_we_support_it():
    """Caffe 1.0 (this fork) aborts on a 2-top SoftmaxWithLoss (golden softmaxloss_2d_with_prob_top): its
    internal Softmax inherits the loss_weight list. caffessl supports it: top 0 is the loss, top 1 the
    softmax probabilities (loss_weight 0 by default), and the loss and its gradient equal the 1-top layer's."""
    x = RNG.standard_normal((6, 4))
    lab = labels((6,), 4)
    two = 'type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" top: "prob" loss_weight: 1 loss_weight: 0'
    (loss2, prob), net2, tops2 = run(two, [x, lab])
    (loss1,), net1, tops1 = run('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"', [x, lab])
    np.testing.assert_allclose(loss2, loss1, rtol=1e-14)
    np.testing.assert_allclose(prob, np.exp(log_softmax(x, 1)), rtol=1e-12)
    net1.backward()
    net2.blobs["prob"].diff[...] = 0
    net2.backward()
    np.testing.assert_allclose(net2.blobs["x"].diff, net1.blobs["x"].diff, rtol=1e-12)
    # same without explicit loss weights
    (loss3, prob3), *_ = run('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" top: "prob"', [x, lab])
    np.testing.assert_allclose(loss3, loss1, rtol=1e-14)
    d = need_shared("golden", "softmaxloss_2d_with_prob_top")
    assert "caffe_error" in (d / "case.json").read_text()


# -- other losses ----------------------------------------------------------------------------------------

def test_euclidean_loss():
    a, b = RNG.standard_normal((4, 3, 2)), RNG.standard_normal((4, 6))
    text = 'type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"'
    (loss,), *_ = run(text, [a, b])
    np.testing.assert_allclose(loss, ((a.reshape(4, -1) - b) ** 2).sum() / 4 / 2, rtol=1e-12)
    check_layer_gradients(text, [a, b])  # both bottoms get a gradient


def test_sigmoid_cross_entropy_divides_by_batch_size():
    x, t = RNG.standard_normal((4, 3, 2, 2)) * 3, RNG.random((4, 3, 2, 2))
    text = 'type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss"'
    (loss,), net, _ = run(text, [x, t])
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(loss, -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / 4, rtol=1e-10)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, (p - t) / 4, rtol=1e-10)
    check_layer_gradients(text, [x, t], check_bottoms=[0])


def _hinge_ref(x, lab, p):
    s = np.ones_like(x)
    s[np.arange(len(lab)), lab.astype(int)] = -1
    m = np.maximum(0, 1 + s * x)
    loss = (m ** p).sum() / len(lab)
    grad = (np.sign(s * m) if p == 1 else 2 * s * m) / len(lab)
    return loss, grad


@pytest.mark.parametrize("norm,p", [("L1", 1), ("L2", 2)])
def test_hinge_loss(norm, p):
    x, lab = RNG.standard_normal((6, 4)) * 2, labels((6,), 4)
    text = f'type: "HingeLoss" bottom: "x" bottom: "l" top: "loss" hinge_loss_param {{ norm: {norm} }}'
    (loss,), net, _ = run(text, [x, lab])
    ref_loss, ref_grad = _hinge_ref(x, lab, p)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    net.blobs["loss"].diff[...] = 0.7  # the top diff (loss weight) scales Caffe's closed form
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 0.7 * ref_grad, rtol=1e-12)
    check_layer_gradients(text, [x, lab], check_bottoms=[0])


def test_multinomial_logistic_loss():
    prob = RNG.random((5, 4)) + 0.05
    prob[0, 1] = 0.0  # clamped to 1e-20 (Caffe's kLOG_THRESHOLD)
    lab = np.array([1.0, 0, 3, 2, 1])
    text = 'type: "MultinomialLogisticLoss" bottom: "p" bottom: "l" top: "loss"'
    (loss,), net, _ = run(text, [prob, lab])
    picked = np.maximum(prob[np.arange(5), lab.astype(int)], 1e-20)
    np.testing.assert_allclose(loss, -np.log(picked).sum() / 5, rtol=1e-12)
    net.backward()
    g = np.zeros_like(prob)
    g[np.arange(5), lab.astype(int)] = -1 / picked / 5
    np.testing.assert_allclose(net.blobs["p"].diff, g, rtol=1e-12)
    prob[0, 1] = 0.3
    check_layer_gradients(text, [prob, lab], check_bottoms=[0])


def _infogain_ref(prob, lab, H):
    rows = H[lab.astype(int)]
    pc = np.maximum(prob, 1e-20)
    n = len(lab)
    return -(rows * np.log(pc)).sum() / n, -rows / pc / n


def test_infogain_loss_source_and_third_bottom(tmp_path, monkeypatch):
    prob = RNG.random((5, 3, 1, 1)) + 0.05
    lab = np.array([2.0, 0, 1, 1, 2])
    H = RNG.random((3, 3))
    write_binaryproto(tmp_path / "H.binaryproto", H.reshape(1, 1, 3, 3))
    monkeypatch.chdir(tmp_path)
    text = 'type: "InfogainLoss" bottom: "p" bottom: "l" top: "loss" infogain_loss_param { source: "H.binaryproto" }'
    (loss,), net, _ = run(text, [prob, lab])
    H32 = H.astype(np.float32).astype(np.float64)  # a binaryproto holds float32
    ref_loss, ref_grad = _infogain_ref(prob.reshape(5, 3), lab, H32)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    net.backward()
    np.testing.assert_allclose(net.blobs["p"].diff.reshape(5, 3), ref_grad, rtol=1e-12)
    check_layer_gradients(text, [prob, lab], check_bottoms=[0])
    text3 = 'type: "InfogainLoss" bottom: "p" bottom: "l" bottom: "H" top: "loss"'
    (loss3,), net3, _ = run(text3, [prob, lab, H])
    np.testing.assert_allclose(loss3, _infogain_ref(prob.reshape(5, 3), lab, H)[0], rtol=1e-12)
    check_layer_gradients(text3, [prob, lab, H], check_bottoms=[0])


def _contrastive_ref(a, b, y, margin, legacy):
    n = len(y)
    d = a.reshape(n, -1) - b.reshape(n, -1)
    dsq = (d * d).sum(1)
    dist = np.sqrt(dsq)
    sim = y.astype(int) != 0
    if legacy:
        mdist = margin - dsq
        dis = np.maximum(mdist, 0)
        beta = -np.ones(n)
    else:
        mdist = margin - dist
        dis = np.maximum(mdist, 0) ** 2
        beta = -mdist / (dist + 1e-4)  # Caffe's backward: note the 1e-4
    loss = np.where(sim, dsq, dis).sum() / n / 2
    coef = np.where(sim, 1.0, np.where(mdist > 0, beta, 0.0))
    return loss, coef[:, None] * d / n


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss(legacy):
    a, b = RNG.standard_normal((8, 3, 1, 1)) * 0.7, RNG.standard_normal((8, 3, 1, 1)) * 0.7
    y = np.array([1.0, 0, 0, 1, 0, 0, 1, 0])
    flag = "true" if legacy else "false"
    text = (f'type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss" '
            f'contrastive_loss_param {{ margin: 2.0 legacy_version: {flag} }}')
    (loss,), net, _ = run(text, [a, b, y])
    ref_loss, ref_ga = _contrastive_ref(a, b, y, 2.0, legacy)
    assert (np.where(y == 0, 1, 0) * (np.sqrt(((a - b) ** 2).reshape(8, -1).sum(1)) < 2)).sum() > 0
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff.reshape(8, -1), ref_ga, rtol=1e-12)
    np.testing.assert_allclose(net.blobs["b"].diff.reshape(8, -1), -ref_ga, rtol=1e-12)
    # finite differences: exact for the legacy form; the current form carries Caffe's +1e-4 in the
    # denominator, a relative deviation of 1e-4 / d from the true derivative
    check_layer_gradients(text, [a, b, y], check_bottoms=[0, 1], rel=1e-5 if legacy else 2e-3)


# -- Accuracy --------------------------------------------------------------------------------------------

def _accuracy_ref(x, lab, k, ignore=None):
    n, c = x.shape[:2]
    s = np.moveaxis(x.reshape(n, c, -1), 1, 2).reshape(-1, c)
    lab = lab.reshape(-1).astype(int)
    keep = np.ones_like(lab, bool) if ignore is None else lab != ignore
    s, lab = s[keep], lab[keep]
    true = s[np.arange(len(lab)), lab]
    hit = ((s >= true[:, None]).sum(1) - 1) < k
    per = np.array([hit[lab == j].mean() if (lab == j).any() else 0.0 for j in range(c)])
    return (hit.mean() if len(lab) else 0.0), per


@pytest.mark.parametrize("k,ignore", [(1, None), (2, None), (1, 3), (3, 0)])
def test_accuracy_top_k_ignore_and_per_class(k, ignore):
    x = RNG.standard_normal((5, 4, 2, 3))
    x[0, :, 0, 0] = 1.0  # ties count against the true class (>=)
    lab = labels((5, 2, 3), 4, ignore)
    ig = "" if ignore is None else f"ignore_label: {ignore}"
    (acc, per), net, _ = run(f'type: "Accuracy" bottom: "x" bottom: "l" top: "a" top: "pc" '
                             f'accuracy_param {{ top_k: {k} {ig} }}', [x, lab])
    ref, ref_per = _accuracy_ref(x, lab, k, ignore)
    np.testing.assert_allclose(acc, ref, rtol=1e-12)
    np.testing.assert_allclose(per, ref_per, rtol=1e-12)
    net.blobs["a"].diff[...] = 1
    net.backward()  # no backward: force_backward skips it
    np.testing.assert_array_equal(net.blobs["x"].diff, 0)


# -- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,shapes,err", [
    ('type: "SoftmaxWithLoss" bottom: "x" top: "loss"', [(2, 3)], LayerConfigError),
    ('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"', [(2, 3), (3,)], ShapeMismatchError),
    ('type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2, 4)], ShapeMismatchError),
    ('type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (3, 2)], ShapeMismatchError),
    ('type: "SigmoidCrossEntropyLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2, 4)], ShapeMismatchError),
    ('type: "HingeLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2, 2)], ShapeMismatchError),
    ('type: "MultinomialLogisticLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2, 3)], ShapeMismatchError),
    ('type: "InfogainLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2,)], LayerConfigError),
    ('type: "InfogainLoss" bottom: "a" bottom: "b" bottom: "H" top: "loss"', [(2, 3), (2,), (2, 2)],
     ShapeMismatchError),
    ('type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss"', [(2, 3), (2, 4), (2,)],
     ShapeMismatchError),
    ('type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss"', [(2, 3), (2, 3), (3,)],
     ShapeMismatchError),
    ('type: "ContrastiveLoss" bottom: "a" bottom: "b" top: "loss"', [(2, 3), (2, 3)], LayerConfigError),
    ('type: "Accuracy" bottom: "x" bottom: "l" top: "a" accuracy_param { top_k: 4 }', [(2, 3), (2,)],
     LayerConfigError),
    ('type: "Accuracy" bottom: "x" bottom: "l" top: "a"', [(2, 3, 2), (2,)], ShapeMismatchError),
])
def test_bad_configuration_raises_typed_error(text, shapes, err):
    with pytest.raises(err, match="under_test"):
        build_net(text, shapes)


def test_infogain_axis_of_later_caffe_is_not_implemented():
    with pytest.raises(NotImplementedError, match="axis"):
        build_net('type: "InfogainLoss" bottom: "a" bottom: "b" bottom: "H" top: "loss" '
                  'infogain_loss_param { axis: 1 }', [(2, 3), (2,), (3, 3)])


def test_infogain_missing_source_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileMissingError, match="nope.binaryproto"):
        build_net('type: "InfogainLoss" bottom: "a" bottom: "b" top: "loss" '
                  'infogain_loss_param { source: "nope.binaryproto" }', [(2, 3), (2,)])


@pytest.mark.parametrize("text,inputs", [
    ('type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"', [np.zeros((2, 3)), np.array([0.0, 3.0])]),
    ('type: "HingeLoss" bottom: "x" bottom: "l" top: "loss"', [np.zeros((2, 3)), np.array([0.0, -1.0])]),
    ('type: "MultinomialLogisticLoss" bottom: "x" bottom: "l" top: "loss"', [np.ones((2, 3)), np.array([5.0, 1])]),
    ('type: "Accuracy" bottom: "x" bottom: "l" top: "a"', [np.zeros((2, 3)), np.array([0.0, 7.0])]),
])
def test_label_out_of_range_raises_typed_error(text, inputs):
    with pytest.raises(LayerConfigError, match="under_test"):
        run(text, inputs)


def test_sigmoid_xent_loss_param_is_ignored_as_in_this_caffe(caplog):
    x, t = RNG.standard_normal((4, 3)), RNG.random((4, 3))
    (plain,), *_ = run('type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss"', [x, t])
    with caplog.at_level("WARNING", logger="caffessl"):
        (withp,), *_ = run('type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" '
                           'loss_param { normalization: FULL }', [x, t])
    assert withp == plain
    assert "loss_param is ignored" in caplog.text


def test_loss_weight_scales_gradient():
    net_param = caffe_pb2.NetParameter()
    parse_text('force_backward: true layer { name: "in" type: "Input" top: "a" top: "b" '
               'input_param { shape { dim: 3 dim: 2 } } } '
               'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" loss_weight: 2.5 }',
               net_param, "<test>")
    net = caffe.Net(net_param, caffe.TRAIN)
    a, b = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    net.forward()
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff, 2.5 * (a - b) / 3, rtol=1e-5)
