"""`caffessl test --conv-mode` and the Python-layer opt-in for training nets."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import LayerConfigError
from tests.golden import REPO

NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 }
                           data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _loss_line(stderr):
    return [l for l in stderr.splitlines() if "Loss: " in l][-1].split("Loss: ")[1]


def test_test_command_conv_mode_override_gives_the_dense_loss(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    net = caffe.Net(str(model), caffe.TEST)
    w = net.params["conv1"][0].data
    w[:2] = 0            # two zero filters
    w[:, 1] = 0          # one zero input channel
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    losses = {}
    for mode in ("gemm", "ccnmm", "csrmm"):
        r = subprocess.run([sys.executable, "-m", "caffessl.cli", "test", f"--model={model}",
                            f"--weights={weights}", "--iterations=1", f"--conv-mode={mode}"],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
        assert f"conv_mode of conv1: LOWERED_{mode.upper()}" in r.stderr
        losses[mode] = float(_loss_line(r.stderr))
    assert losses["ccnmm"] == pytest.approx(losses["gemm"], rel=1e-5)
    assert losses["csrmm"] == pytest.approx(losses["gemm"], rel=1e-5)


PY_LAYER = '''
import caffessl as caffe


class Double(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


def test_solver_python_layers_need_the_opt_in(tmp_path, monkeypatch):
    (tmp_path / "ssl_user_layers.py").write_text(textwrap.dedent(PY_LAYER))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = NET.replace('bottom: "conv1" top: "ip"', 'bottom: "dbl" top: "ip"').replace(
        'layer { name: "ip"', 'layer { name: "dbl" type: "Python" bottom: "conv1" top: "dbl" '
        'python_param { module: "ssl_user_layers" layer: "Double" } }\nlayer { name: "ip"')
    (tmp_path / "net.prototxt").write_text(net)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 2\n'
                      'display: 0\nsnapshot_after_train: false\n')
    with pytest.raises(LayerConfigError, match="allow"):
        caffe.get_solver(str(solver))
    s = caffe.get_solver(str(solver), allow_python=True)
    before = s.net.params["conv1"][0].data.copy()
    s.step(2)
    assert s.iter == 2 and not np.array_equal(before, s.net.params["conv1"][0].data)
