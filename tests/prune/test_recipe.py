"""Recipes: unknown steps/keys named with their line, a full run of every step kind on a tiny net, resume
(steps done are skipped), and an interrupted step leaving no half-written file."""
import json
import os

import pytest

from caffessl.errors import RecipeError
from caffessl.prune import recipe as R
from caffessl.prune.runner import Options, Runner

NET = """name: "tiny_cls"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 1 dim: 8 dim: 8 } shape { dim: 4 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = 'net: "unused" base_lr: 0.01 lr_policy: "fixed" max_iter: 3 momentum: 0.9 display: 0\n'
RECIPE = """name: tiny
net: {d}/net.prototxt
workdir: {d}/work
test_iters: 1
steps:
  - train: {{solver: {d}/solver.prototxt, label: dense}}
  - prune: {{policy: reduction-rate, amount: 0.5, layers: [conv1]}}
  - finetune:
      solver: {d}/solver.prototxt
      overrides: {{max_iter: 2, base_lr: 0.001}}
  - slim: {{}}
  - test: {{label: pruned}}
  - time: {{reps: 1, layers: [conv1]}}
  - export: {{format: onnx}}
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.format(d=tmp_path))
    return tmp_path, path


@pytest.mark.parametrize("text, message", [
    ("net: x\nsteps:\n  - train: {solver: s}\n  - squeeze: {}\n", r"r\.yaml:4: unknown step 'squeeze'"),
    ("net: x\nsteps:\n  - prune:\n      policy: zeros\n      treshold: 1\n", r"r\.yaml:5: unknown key 'treshold' in step 'prune'"),
    ("net: x\nsolver: y\nsteps:\n  - test: {}\n", r"r\.yaml:2: unknown key 'solver'"),
    ("net: x\nsteps:\n  - test: {}\n    slim: {}\n", r"r\.yaml:3: a step is one"),
    ("net: x\nsteps:\n  - train: {label: a}\n", r"r\.yaml:3: step 'train' needs 'solver'"),
    ("net: x\nsteps: [\n", r"r\.yaml:\d+: not valid YAML"),
    ("steps:\n  - test: {}\n", r"needs 'net'"),
])
def test_bad_recipes_name_the_line(tmp_path, text, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError, match=message):
        R.load(p)


def test_run_resume_and_report(tiny):
    d, path = tiny
    logs = []
    rows = Runner(path, Options(progress=False)).run(log=logs.append)
    assert [r["kind"] for r in rows] == ["train", "prune", "finetune", "slim", "test", "time", "export"]
    work = d / "work"
    assert (work / "01_prune_ft.prototxt").exists() and (work / "06_export.onnx").exists()
    slim_row, test_row, time_row = rows[3], rows[4], rows[5]
    assert slim_row["layer_flops"]["conv1"] * 2 == rows[0]["layer_flops"]["conv1"]      # 2 of 4 filters
    assert slim_row["params"] < rows[2]["params"] and 0 <= test_row["error"] <= 1
    assert {"dense_ms", "masked_ms", "current_ms", "dense_conv1_ms", "current_conv1_ms"} <= set(time_row)
    md = (work / "report.md").read_text()
    assert "| 5 | test | pruned |" in md and (work / "report.png").stat().st_size > 0
    assert (work / "report.csv").read_text().splitlines()[0].startswith("step,kind,label,error")
    # resume: everything is skipped and the same rows come back
    logs2 = []
    rows2 = Runner(path, Options(progress=False, plots=False)).run(log=logs2.append)
    assert all("skipped" in m for m in logs2) and len(logs2) == 7
    assert [r["seconds"] for r in rows2] == [r["seconds"] for r in rows]
    # a changed step reruns from there on
    path.write_text(path.read_text().replace("amount: 0.5", "amount: 0.25"))
    logs3 = []
    Runner(path, Options(progress=False, plots=False)).run(log=logs3.append)
    assert ["skipped" in m for m in logs3] == [True] + [False] * 6


def test_interrupted_step_leaves_no_half_written_file(tiny, monkeypatch):
    d, path = tiny
    path.write_text(path.read_text().replace("  - export: {format: onnx}\n", ""))
    from caffessl.sparsity import slim as slim_mod

    def broken_write(result, model_out, weights_out):
        from caffessl.io.prototxt import write_prototxt
        write_prototxt(model_out, result.net_param)        # the prototxt is written, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(slim_mod, "write", broken_write)
    with pytest.raises(KeyboardInterrupt):
        Runner(path, Options(progress=False, plots=False)).run(log=lambda m: None)
    work = d / "work"
    assert not (work / "03_slim.json").exists() and not (work / "03_slim.caffemodel").exists()
    assert not [f for f in os.listdir(work) if "tmp" in f or f.endswith(".partial")]
    monkeypatch.undo()
    logs = []
    Runner(path, Options(progress=False, plots=False)).run(log=logs.append)
    assert ["skipped" in m for m in logs] == [True, True, True, False, False, False]
    rec = json.loads((work / "03_slim.json").read_text())
    assert rec["state"]["model"].endswith("03_slim.prototxt")


def test_cli_recipe_errors_are_one_line(tmp_path, capsys):
    from caffessl.cli import main
    p = tmp_path / "bad.yaml"
    p.write_text("net: x\nsteps:\n  - prune: {policy: zeros, bogus: 1}\n")
    assert main(["recipe", "run", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml:3: unknown key 'bogus'" in err


def test_resume_compares_contents_not_paths(tiny):
    """Same paths, other contents: an edited solver reruns the steps that use it (and every later one); a
    damaged output of a step reruns that step; an untouched rerun skips everything."""
    d, path = tiny
    path.write_text(path.read_text().replace("  - time: {reps: 1, layers: [conv1]}\n  - export: {format: onnx}\n",
                                             ""))
    run = lambda: [("skipped" in m) for m in _logs(path)]   # noqa: E731
    assert run() == [False] * 5
    assert run() == [True] * 5
    (d / "solver.prototxt").write_text(SOLVER.replace("base_lr: 0.01", "base_lr: 0.02"))
    assert run() == [False] * 5                          # step 1 trains with it
    assert run() == [True] * 5
    work = d / "work"
    (work / "01_prune.caffemodel").write_bytes((work / "03_slim.caffemodel").read_bytes())   # damaged output
    assert run() == [True, False, False, False, False]
    (d / "net.prototxt").write_text(NET.replace("std: 0.3", "std: 0.2"))      # the recipe's net changed
    assert run() == [False] * 5


def _logs(path):
    logs = []
    Runner(path, Options(progress=False, plots=False)).run(log=logs.append)
    return logs
