"""`caffessl time`: caffe's log lines, the per-layer FLOP / sparsity table, and the --conv-mode override."""
import pytest

from caffessl.cli import main
from tests.golden import need_shared


@pytest.mark.parametrize("mode", [None, "ccnmm", "auto"])
def test_time_prints_caffe_lines_and_sparsity_table(capsys, mode):
    d = need_shared("golden", "ssl_conv_mode")
    argv = ["time", "--model", str(d / "net_LOWERED_GEMM.prototxt"), "--weights", str(d / "weights.caffemodel"),
            "--iterations", "2"] + (["--conv-mode", mode] if mode else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Average Forward pass:" in out and "*** Benchmark ends ***" in out
    assert "conv2\tforward:" in out
    table = {line.split()[0]: line.split() for line in out.splitlines()[-4:]}
    expect = {None: {"LOWERED_GEMM"}, "ccnmm": {"LOWERED_CCNMM"}}.get(mode, {"LOWERED_GEMM", "LOWERED_CCNMM",
                                                                             "LOWERED_CSRMM"})
    assert table["conv2"][1] in expect
    # zero filters, and zero columns counted per group (Caffe's CCNMM column mask is per group): an
    # independent count from the golden case.json is 1 zero row; 3 columns are zero in both groups
    assert table["conv2"][-2] == "1" and int(table["conv2"][-1]) >= 2 * 3


TRAIN_NET = """
name: "t"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 3 dim: 12 dim: 12 } shape { dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_time_with_a_loss_prints_per_layer_backward_like_caffe(tmp_path, capsys):
    model = tmp_path / "train.prototxt"
    model.write_text(TRAIN_NET)
    assert main(["time", "--model", str(model), "--iterations", "3"]) == 0
    out = capsys.readouterr().out
    assert "Performing Forward" in out and "Initial loss: " in out and "Performing Backward" in out
    per_layer = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] == "backward:":
            per_layer[parts[0]] = float(parts[2])
    assert list(per_layer) == ["data", "conv", "relu", "pool", "ip", "loss"]
    assert per_layer["data"] == 0.0 and all(per_layer[n] > 0 for n in ("conv", "relu", "pool", "ip", "loss"))
    total = float(next(l for l in out.splitlines() if l.startswith("Average Backward pass:")).split()[3])
    assert sum(per_layer.values()) <= total      # the per-layer calls are the backward pass, plus bookkeeping


def test_timed_backward_gives_the_whole_backward_gradients(tmp_path):
    """The layer-by-layer pass computes what Net.backward computes (checked on the input gradient)."""
    import numpy as np
    import torch

    import caffessl as caffe
    from caffessl.commands import time as time_cmd
    model = tmp_path / "train.prototxt"
    model.write_text("force_backward: true\n" + TRAIN_NET)
    net = caffe.Net(str(model), caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((8, 3, 12, 12))
    net.blobs["label"].data[...] = np.arange(8) % 3
    net.forward()
    want = net.backward()["data"].copy()
    seen = {}
    orig = torch.autograd.grad

    def spy(outputs, inputs, *a, **k):
        res = orig(outputs, inputs, *a, **k)
        for t, g in zip(inputs, res):
            seen[id(t)] = g
        return res
    torch.autograd.grad = spy
    try:
        time_cmd.timed_backward(net)
    finally:
        torch.autograd.grad = orig
    first_data = net._last.first["data"]
    np.testing.assert_allclose(seen[id(first_data)].numpy(), want, rtol=1e-5, atol=1e-7)
