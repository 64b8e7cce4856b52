"""Every model in ../shared/models loads; prototxt-only nets infer their known output shapes; the CIFAR-10
quick net classifies its dog; the golden cifar10_quick deploy net matches Caffe."""
import json
import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main as cli_main
from caffessl.errors import ShapeMismatchError
from tests.golden import REPO, SHARED, need_shared, run_layer_case

# (folder, prototxt) -> (input shape, {output: shape}) of the published nets
PROTOTXT_ONLY = {
    ("squeezenet_v1.0", "deploy.prototxt"): ((10, 3, 227, 227), {"prob": (10, 1000, 1, 1)}),
    ("squeezenet_v1.1", "deploy.prototxt"): ((10, 3, 227, 227), {"prob": (10, 1000, 1, 1)}),
    ("mobilenet", "mobilenet_deploy.prototxt"): ((1, 3, 224, 224), {"prob": (1, 1000, 1, 1)}),
    ("mobilenet", "mobilenet_v2_deploy.prototxt"): ((1, 3, 224, 224), {"prob": (1, 1000, 1, 1)}),
}


@pytest.mark.parametrize("folder,name", sorted(PROTOTXT_ONLY))
def test_prototxt_only_nets_infer_shapes(folder, name):
    p = need_shared("models", "prototxt_only", folder, name)
    net = caffe.Net(str(p), caffe.TEST)   # filler-initialised weights
    in_shape, outs = PROTOTXT_ONLY[(folder, name)]
    assert net.blobs[net.inputs[0]].shape == in_shape
    assert {o: net.blobs[o].shape for o in net.outputs} == outs
    if folder == "mobilenet":  # depthwise convolutions: group == channels
        dw = [l for l in net.layers if l.type == "Convolution" and l.param.convolution_param.group > 1]
        assert dw and all(l.param.convolution_param.group == net.blobs[l.param.bottom[0]].shape[1] for l in dw)


CIFAR = ("models", "cifar10_quick")


def _cifar():
    d = need_shared(*CIFAR)
    return d, d / "cifar10_quick.prototxt", d / "cifar10_quick_iter_5000.caffemodel"


def test_trained_models_load_every_param():
    for model, weights in [(REPO / "models" / "lenet" / "lenet.prototxt",
                            need_shared("models", "lenet", "lenet_iter_10000.caffemodel")),
                           _cifar()[1:],
                           (need_shared("models", "legacy_v1_lenet", "lenet.prototxt"),
                            SHARED / "models" / "legacy_v1_lenet" / "lenet_iter_10000.caffemodel")]:
        net = caffe.Net(str(model), caffe.TEST)
        report = net.copy_from(str(weights), strict=False)
        assert set(report["loaded"]) >= {l.name for l in net.layers if l.params}


def test_cifar10_quick_classifies_dog():
    d, model, weights = _cifar()
    from caffessl.io import load_image, load_mean
    clf = caffe.Classifier(str(model), str(weights), mean=load_mean(d / "mean.binaryproto"), raw_scale=255,
                           channel_swap=(2, 1, 0))
    im = load_image(d / "dog4.png")
    for over in (True, False):
        p = clf.predict([im, im[:, ::-1]], oversample=over)
        assert p.shape == (2, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
        assert list(p.argmax(1)) == [5, 5]   # CIFAR-10 class 5 = dog


def test_classifier_center_crop_equals_direct_forward():
    d, model, weights = _cifar()
    from caffessl.io import load_image, load_mean
    mean = load_mean(d / "mean.binaryproto")
    im = load_image(d / "dog4.png")
    clf = caffe.Classifier(str(model), str(weights), mean=mean, raw_scale=255, channel_swap=(2, 1, 0))
    p = clf.predict([im], oversample=False)
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    x = (im.transpose(2, 0, 1)[::-1] * 255 - mean)[None]
    want = net.forward(data=x)["prob"]
    assert np.allclose(p, want.reshape(1, -1), atol=1e-6)


def test_classifier_wrong_mean_shape():
    d, model, weights = _cifar()
    with pytest.raises(ShapeMismatchError, match=r"\(3, 32, 32\)"):
        caffe.Classifier(str(model), str(weights), mean=np.zeros((3, 256, 256), np.float32))


def test_classify_cli_text_and_json(capsys, tmp_path):
    d, model, weights = _cifar()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                 "ship", "truck"]) + "\n")
    args = ["classify", "--model", str(model), "--weights", str(weights), "--mean", str(d / "mean.binaryproto"),
            "--labels", str(labels), "--top-k", "3", str(d / "dog4.png")]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[-1] == "dog"
    assert cli_main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    top = res[0]["top_k"]
    assert len(top) == 3 and top[0]["label"] == "dog" and top[0]["class"] == 5
    assert top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
    # a .npy mean gives the same answer
    from caffessl.io import load_mean
    np.save(tmp_path / "mean.npy", load_mean(d / "mean.binaryproto"))
    assert cli_main(args[:5] + ["--mean", str(tmp_path / "mean.npy")] + args[7:] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top_k"] == top


def test_classify_cli_errors_are_one_line(tmp_path, capsys):
    d, model, weights = _cifar()
    np.save(tmp_path / "bad_mean.npy", np.zeros((3, 8, 8), np.float32))
    cases = [["--weights", str(tmp_path / "none.caffemodel")],
             ["--weights", str(model)],                                    # a prototxt as weights
             ["--weights", str(weights), "--mean", str(tmp_path / "bad_mean.npy")]]
    for extra in cases:
        assert cli_main(["classify", "--model", str(model), *extra, str(d / "dog4.png")]) == 1
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("caffessl classify: error:"), err


def test_cifar10_quick_deploy_golden():
    need_shared("golden", "net_cifar10_quick_deploy")
    run_layer_case("net_cifar10_quick_deploy")
