"""A tiny solver + nets (DummyData, no ../shared) for running every CLI command in a test's folder."""
from __future__ import annotations

import pytest

import caffessl as caffe

TRAIN_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { breadth_decay_mult: 1 } param { }
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
"""
DEPLOY_NET = """name: "tiny_deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
SOLVER = """net: "net.prototxt"
type: "SGD" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 4 display: 2 breadth_decay: 0.001
snapshot: 4 snapshot_prefix: "snap" random_seed: 1 solver_mode: CPU
"""


@pytest.fixture
def tiny(tmp_path):
    """A folder with net.prototxt (train/test), deploy.prototxt, solver.prototxt and w.caffemodel."""
    (tmp_path / "net.prototxt").write_text(TRAIN_NET)
    (tmp_path / "deploy.prototxt").write_text(DEPLOY_NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    caffe.set_random_seed(5)
    caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    return tmp_path


@pytest.fixture
def cli(monkeypatch, capsys):
    from tests.solver._cli import run_cli_inprocess
    return lambda args, cwd: run_cli_inprocess(args, cwd, monkeypatch, capsys)


def one_line_error(rc, err, *needles):
    """A non-zero exit and exactly one stderr line holding every needle; returns the line."""
    lines = err.strip().splitlines()
    assert rc not in (0, None), err
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
