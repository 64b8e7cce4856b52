"""caffessl sweep: study files are validated with line numbers, the shipped MNIST study runs in reduced form
(2 x 2 grid), a failing run is marked failed without stopping the others, and a sweep interrupted with Ctrl-C
resumes without rerunning finished runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from caffessl.study.config import StudyFileError, load_study
from caffessl.study.sweep import csv_text, rows, sweep, write_outputs
from tests.golden import need_shared

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "models" / "implicit_sparsity" / "study_mnist.yaml"

TINY_NET = """
name: "tiny"
layer { name: "d" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 1 dim: 6 dim: 6 } shape { dim: 8 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "fc" type: "InnerProduct" bottom: "c1" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include { phase: TEST } }
"""


def _write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,line,what", [
    ("net: n\nout: o\nrunz: []\n", 3, "unknown key 'runz' in the study file"),
    ("net: n\nout: o\nruns:\n  - {type: SGD}\n  - type: Adam\n    stength: 1e-4\n", 6,
     "unknown key 'stength' in a run"),
    ("net: n\nout: o\ngrid:\n  type: [SGD]\n  lr: [0.1]\n", 5, "unknown key 'lr' in grid"),
    ("net: n\nout: o\nsolver:\n  max_iter: 3\n  max_iters: 3\nruns: [{}]\n", 5, "unknown key 'max_iters' in solver"),
    ("net: n\nout: o\nfeatures: {iters: 3}\nruns: [{}]\n", 3, "unknown key 'iters' in features"),
    ("net: n\nout: o\nruns:\n  - {type: Adamw}\n", 4, "type 'Adamw' is not one of"),
    ("net: n\nout: o\nruns:\n  - {decay: L3}\n", 4, "decay 'L3'"),
    ("net: n\nout: o\nruns:\n  - {strength: -1}\n", 4, "strength must be a finite number >= 0"),
    ("net: n\nout: o\nruns: [{type: Adam, base_lr: {SGD: 0.1}}]\n", 3, "base_lr gives no value for type Adam"),
    ("net: n\nout: o\nruns: [\n", 4, "not valid YAML"),
])
def test_bad_study_files_name_the_line(tmp_path, text, line, what):
    p = _write(tmp_path, text)
    with pytest.raises(StudyFileError) as e:
        load_study(p)
    assert f"{p}:{line}:" in str(e.value) and what in str(e.value)


def test_grid_and_runs_expand_with_defaults(tmp_path):
    p = _write(tmp_path, "net: n\nout: o\ndefaults: {base_lr: {SGD: 0.1, Adam: 0.01}, batch_size: 4}\n"
                         "grid: {type: [SGD, Adam], strength: [0, 1e-3]}\n"
                         "runs: [{type: Adam, decay: decoupled, strength: 1e-3, name: adamw}]\n")
    s = load_study(p)
    assert [(r["type"], r["base_lr"], r["strength"], r["decay"]) for r in s.runs] == [
        ("SGD", 0.1, 0.0, "L2"), ("SGD", 0.1, 1e-3, "L2"), ("Adam", 0.01, 0.0, "L2"), ("Adam", 0.01, 1e-3, "L2"),
        ("Adam", 0.01, 1e-3, "decoupled")]
    assert s.runs[-1]["name"] == "adamw" and len({r["name"] for r in s.runs}) == 5


def test_shipped_study_file_is_valid():
    s = load_study(STUDY)
    kinds = {(r["type"], r["decay"]) for r in s.runs}
    assert {("SGD", "L2"), ("Adam", "L2"), ("Adam", "decoupled")} <= kinds
    assert len({r["batch_size"] for r in s.runs}) >= 2 and any(r["ssl"] for r in s.runs)


def test_shipped_study_reduced_runs(tmp_path, monkeypatch):
    """The shipped study file and BasicNet on a 2 x 2 grid (SGD/Adam x L2 0/1e-3), 3 iterations, tiny LMDBs."""
    mnist = need_shared("data", "mnist")
    from caffessl.data.mnist import convert_mnist
    dbs = convert_mnist(str(mnist), str(tmp_path / "mnist"), limit=64)
    cfg = yaml.safe_load(STUDY.read_text())
    net_text = (REPO / cfg["net"]).read_text()
    net_text = net_text.replace("data/mnist/mnist_train_lmdb", dbs["train"]).replace(
        "data/mnist/mnist_test_lmdb", dbs["test"])
    cfg["net"] = _write(tmp_path, net_text, "net.prototxt")
    cfg.pop("data")
    cfg["out"] = str(tmp_path / "out")
    cfg["solver"].update(max_iter=3, display=0)
    cfg["test_iter"] = 1
    cfg["features"] = {"iterations": 1}
    cfg["defaults"]["batch_size"] = 8
    cfg["grid"] = {"type": ["SGD", "Adam"], "strength": [0, 1e-3]}
    cfg.pop("runs")
    study = load_study(_write(tmp_path, yaml.safe_dump(cfg)))
    results = sweep(study, jobs=2, log=lambda m: None)
    assert [r["status"] for r in results] == ["done"] * 4, [r.get("error") for r in results]
    for r in results:
        assert 0 <= r["test_error"] <= 1 and r["iterations"] == 3
        assert [l["layer"] for l in r["layers"]] == ["conv1", "conv2", "conv3", "conv4", "fc"]
        assert r["pct_inactive_gamma"] is not None and r["samples"] == 100
        d = os.path.join(study.out, r["run"]["name"])
        assert os.path.exists(os.path.join(d, "log.txt")) and os.path.exists(os.path.join(d, "snap_iter_3.caffemodel"))
    paths = write_outputs(study, results)
    assert all(os.path.getsize(p) > 0 for p in paths) and len(paths) == 4
    assert len(csv_text(rows(results)).splitlines()) == 5


def _tiny_study(tmp_path, runs):
    net = _write(tmp_path, TINY_NET, "tiny.prototxt")
    return _write(tmp_path, yaml.safe_dump({"net": net, "out": str(tmp_path / "out"), "test_iter": 1,
                                            "solver": {"max_iter": 5}, "features": {"iterations": 1},
                                            "runs": runs}))


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "caffessl.cli", "sweep", *args], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_failed_run_is_marked_and_ctrl_c_resumes(tmp_path):
    runs = [{"name": "first", "type": "SGD"},
            {"name": "bad", "type": "AdaGrad", "momentum": 0.9},       # Caffe refuses momentum with AdaGrad
            {"name": "slow", "type": "Adam", "base_lr": 0.001, "max_iter": 1500}]   # long enough to be interrupted
    study = _tiny_study(tmp_path, runs)
    out = tmp_path / "out"
    p = _cli([study, "--jobs", "1", "--no-plots"])
    deadline = time.time() + 120
    while not (out / "slow" / "log.txt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)                     # Ctrl-C while "slow" trains
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert (out / "first" / "result.json").exists() and not (out / "slow" / "result.json").exists()
    assert json.loads((out / "bad" / "failed.json").read_text())["error"].startswith("SolverConfigError")
    first_mtime = (out / "first" / "result.json").stat().st_mtime_ns
    p = _cli([study, "--jobs", "2", "--no-plots"])
    text, err = p.communicate(timeout=180)
    assert p.returncode == 1                         # one run failed
    assert "first: finished earlier, skipped" in err
    assert (out / "first" / "result.json").stat().st_mtime_ns == first_mtime
    table = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| done |" in table["first"] and "| done |" in table["slow"]
    assert "| failed |" in table["bad"] and "momentum cannot be used with AdaGrad" in table["bad"]
    assert json.loads((out / "slow" / "result.json").read_text())["iterations"] == 1500


@pytest.mark.parametrize("name,shape", [("basicnet_mnist_train_test", (2, 1, 28, 28)),
                                        ("basicnet_cifar10_train_test", (2, 3, 32, 32))])
def test_shipped_basicnets_train_one_step(name, shape):
    """The shipped BasicNets (data layers swapped for DummyData of the datasets' shapes) build, run one training
    step, and expose one probe per conv block with its Scale (gamma) and the classifier."""
    import numpy as np
    from caffessl.io.prototxt import read_net_prototxt
    from caffessl.net import TRAIN, Net
    from caffessl.proto import caffe_pb2
    from caffessl.study.features import probes
    p = read_net_prototxt(str(REPO / "models" / "implicit_sparsity" / f"{name}.prototxt"))
    layers = [l for l in p.layer if l.type not in ("Data", "ImageData")]
    dummy = caffe_pb2.LayerParameter(name="data", type="DummyData", top=["data", "label"])
    dummy.dummy_data_param.shape.add().dim.extend(shape)
    dummy.dummy_data_param.shape.add().dim.extend([shape[0]])
    dummy.dummy_data_param.data_filler.add(type="gaussian", std=1)
    dummy.dummy_data_param.data_filler.add(type="constant", value=3)
    del p.layer[:]
    p.layer.extend([dummy] + layers)
    net = Net(p, TRAIN)
    loss = net.forward_backward()
    assert np.isfinite(loss) and net.blobs["fc"].data.shape == (shape[0], 10)
    found = probes(net)
    assert [x.scale_layer for x in found[:-1]] == [f"scale{i}" for i in range(1, len(found))]
    assert found[-1].layer == "fc" and all(x.after.startswith("relu") for x in found[:-1])


def test_missing_data_folder_is_one_line(tmp_path):
    from caffessl.cli import main
    study = _write(tmp_path, f"net: {_write(tmp_path, TINY_NET, 'tiny.prototxt')}\ndata: {tmp_path / 'nope'}\n"
                             f"out: {tmp_path / 'out'}\nruns: [{{}}]\n")
    assert main(["sweep", study]) == 1
