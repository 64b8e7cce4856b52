"""LeNet from models/lenet loads real-Caffe weights and reproduces Caffe's forward and backward."""
import numpy as np

import caffessl as caffe
from tests.golden import REPO, close, need_shared, run_layer_case


def test_golden_lenet_deploy_forward_backward():
    run_layer_case("net_lenet_deploy")


def test_models_lenet_with_caffe_weights_matches_golden_output():
    d = need_shared("golden", "net_lenet_deploy")
    net = caffe.Net(str(REPO / "models/lenet/lenet.prototxt"), str(d / "weights.caffemodel"), caffe.TEST)
    x = np.load(d / "inputs.npz")["data"]
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    out = net.forward(data=x)
    ok, err = close(out["prob"], np.load(d / "outputs.npz")["prob"], 1e-5, 0)
    assert ok, f"prob differs from Caffe by {err}"


def test_real_lenet_caffemodel_loads_and_classifies():
    m = need_shared("models", "lenet")
    net = caffe.Net(str(REPO / "models/lenet/lenet.prototxt"), str(m / "lenet_iter_10000.caffemodel"),
                    caffe.TEST)
    assert net.params["conv1"][0].data.shape == (20, 1, 5, 5)
    assert np.abs(net.params["ip2"][0].data).sum() > 0
