"""Sensitivity analysis: each layer pruned alone at each ratio, the net restored after, table/CSV/plot."""
import numpy as np

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.prune.sensitivity import analyze

NET = """name: "sens"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 16 dim: 1 dim: 8 dim: 8 } shape { dim: 16 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _net():
    caffe.set_random_seed(5)
    return caffe.Net(parse_text(NET, caffe_pb2.NetParameter()), caffe.TEST)


def test_each_layer_alone_and_restored(tmp_path):
    net = _net()
    before = {n: [p.data.copy() for p in ps] for n, ps in net.params.items()}
    res = analyze(net, "reduction-rate", [0.0, 0.5, 0.9], iterations=2, progress=False)
    assert [(l, r) for l, r, _, _ in res.rows] == [(l, r) for l in ("conv1", "conv2") for r in (0.0, 0.5, 0.9)]
    errs = {(l, r): e for l, r, e, _ in res.rows}
    assert errs[("conv1", 0.0)] == errs[("conv2", 0.0)] == res.baseline       # ratio 0 prunes nothing
    kept = {(l, r): k for l, r, _, k in res.rows}
    assert kept[("conv1", 0.5)] == 0.5 and kept[("conv2", 0.5)] == 0.5        # 3 of 6, 2 of 4 filters
    assert kept[("conv1", 0.9)] == 1 / 6 and kept[("conv2", 0.9)] == 1 / 4    # ceil(0.6) = ceil(0.4) = 1
    for n, ps in net.params.items():                                         # the net is restored
        for p, b in zip(ps, before[n]):
            np.testing.assert_array_equal(p.data, b)
    assert "| conv1 |" in res.table() and res.csv().count("\n") == 7
    assert res.plot(tmp_path / "s.png") and (tmp_path / "s.png").stat().st_size > 0


def test_cli_sensitivity(tmp_path, capsys):
    from caffessl.cli import main
    (tmp_path / "n.prototxt").write_text(NET)
    _net().save(str(tmp_path / "w.caffemodel"))
    assert main(["prune", "--model", str(tmp_path / "n.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                 "--sensitivity", "--policy", "reduction-rate", "--ratios", "0.25,0.5", "--test-iters", "1",
                 "--out-dir", str(tmp_path / "s"), "--no-progress"]) == 0
    assert {"sensitivity.md", "sensitivity.csv", "sensitivity.png"} <= set(p.name for p in (tmp_path / "s").iterdir())
    assert main(["prune", "--model", str(tmp_path / "n.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                 "--sensitivity", "--policy", "reduction-rate", "--ratios", "0.5,1.2"]) == 1
    assert "--ratios 1.2" in capsys.readouterr().err
