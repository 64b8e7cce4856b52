"""ONNX export: exported graphs pass onnx.checker and run in onnxruntime with caffessl's forward results."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.cli import main as cli_main
from caffessl.errors import ExportError
from caffessl.export.onnx import export
from tests.golden import REPO, need_shared

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run_onnx(path, feeds):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def _check(net, tmp_path, x, blobs):
    path = tmp_path / "net.onnx"
    export(net, path, outputs=blobs)
    onnx.checker.check_model(onnx.load(str(path)))
    got = _run_onnx(path, {net.inputs[0]: x})
    net.forward(**{net.inputs[0]: x})
    for b in blobs:
        want = net.blobs[b].data
        assert got[b].shape == want.shape, b
        err = np.abs(got[b] - want) - (1e-5 + 1e-4 * np.abs(want))
        assert err.max() <= 0, f"{b}: max abs err {np.abs(got[b] - want).max():.3g}"


def _randomize(net, seed=0):
    rng = np.random.RandomState(seed)
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            if net.layer_type(name) == "BatchNorm":
                # Caffe's three blobs: mean sum, variance sum, scale factor
                b.data[...] = [rng.randn(*b.shape), rng.rand(*b.shape) + 0.5, np.full(b.shape, 2.0)][i]
            elif net.layer_type(name) == "Scale":
                b.data[...] = rng.rand(*b.shape) + 0.5
            else:
                b.data[...] = rng.randn(*b.shape) * 0.3


def test_lenet(tmp_path):
    w = need_shared("models", "lenet", "lenet_iter_10000.caffemodel")
    net = caffe.Net(str(REPO / "models" / "lenet" / "lenet.prototxt"), str(w), caffe.TEST)
    x = np.random.RandomState(1).rand(*net.blobs["data"].shape).astype(np.float32)
    _check(net, tmp_path, x, ["pool1", "pool2", "ip1", "ip2", "prob"])


def test_cifar10_quick(tmp_path):
    d = need_shared("models", "cifar10_quick")
    net = caffe.Net(str(d / "cifar10_quick.prototxt"), str(d / "cifar10_quick_iter_5000.caffemodel"), caffe.TEST)
    x = (np.random.RandomState(2).rand(*net.blobs["data"].shape).astype(np.float32) - 0.5) * 100
    # pool2/pool3 are AVE k3 s2 on even sizes: Caffe's ceil overhang and divisor
    _check(net, tmp_path, x, ["pool1", "pool2", "pool3", "ip1", "ip2", "prob"])


def test_batchnorm_scale_net(tmp_path):
    net = caffe.Net(str(REPO / "models" / "onnx_checks" / "bn_scale.prototxt"), caffe.TEST)
    _randomize(net)
    x = np.random.RandomState(3).randn(*net.blobs["data"].shape).astype(np.float32)
    _check(net, tmp_path, x, ["conv1", "dw", "pool", "fc", "prob"])


def test_residual_net(tmp_path):
    net = caffe.Net(str(REPO / "models" / "onnx_checks" / "residual.prototxt"), caffe.TEST)
    _randomize(net, 4)
    x = np.random.RandomState(5).randn(*net.blobs["data"].shape).astype(np.float32)
    _check(net, tmp_path, x, ["res", "prod", "emax", "lrn", "mpool", "apool", "deconv", "crop", "exp", "log",
                              "gpool", "ip", "rs", "ip3", "bnll", "sm"])


def _net(tmp_path, body):
    p = tmp_path / "n.prototxt"
    p.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }\n'
                 + body)
    return caffe.Net(str(p), caffe.TEST)


def test_unexportable_layers_name_themselves(tmp_path):
    net = _net(tmp_path, 'layer { name: "spp" type: "SPP" bottom: "data" top: "s" spp_param { pyramid_height: 2 } }')
    with pytest.raises(ExportError, match="'spp' \\(SPP\\)"):
        export(net, tmp_path / "x.onnx")
    net = _net(tmp_path, 'layer { name: "lrnw" type: "LRN" bottom: "data" top: "l" '
                         'lrn_param { norm_region: WITHIN_CHANNEL } }')
    with pytest.raises(ExportError, match="lrnw.*WITHIN_CHANNEL"):
        export(net, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_cli(tmp_path, capsys):
    w = need_shared("models", "lenet", "lenet_iter_10000.caffemodel")
    out = tmp_path / "lenet.onnx"
    assert cli_main(["export", "onnx", "--model", str(REPO / "models" / "lenet" / "lenet.prototxt"),
                     "--weights", str(w), "--out", str(out)]) == 0
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version >= 13 and [o.name for o in m.graph.output] == ["prob"]
