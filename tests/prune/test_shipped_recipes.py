"""Every shipped recipe (recipes/*.yaml) runs end to end in a reduced form: 2 iterations per training run, one
test batch, one timing repetition, on a tiny synthetic MNIST (random images in the IDX format) laid out where
the recipes' relative paths expect it; the CIFAR-10 recipe on the real JPEGs of ../shared. The full-size runs
are bench/prune_recipes.py."""
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from caffessl.prune import recipe as R
from caffessl.prune.runner import Options, Runner
from tests.golden import need_shared

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
MNIST_RECIPES = [r for r in RECIPES if "cifar" not in r]


def _idx(path, arr, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """<tmp>/repo/{models,solvers,recipes} -> the repository; <tmp>/shared/models/lenet/... -> ../shared;
    <tmp>/shared/data/mnist: 128 train and 100 test random images."""
    baseline = need_shared("models/lenet/lenet_iter_10000.caffemodel")
    root = tmp_path_factory.mktemp("recipes")
    repo = root / "repo"
    repo.mkdir()
    for d in ("models", "solvers", "recipes"):
        os.symlink(REPO / d, repo / d)
    (root / "shared" / "models" / "lenet").mkdir(parents=True)
    os.symlink(baseline, root / "shared" / "models" / "lenet" / "lenet_iter_10000.caffemodel")
    mnist = root / "shared" / "data" / "mnist"
    mnist.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 128), ("t10k", 100)):
        _idx(mnist / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 2051)
        _idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8), 2049)
    return root


def _run_reduced(layout, name):
    """Run recipes/<name> reduced in its default work folder (runs/recipes/<stem>), after the recipe whose
    trained weights it starts from (``weights: runs/recipes/<other>/...``) when those are not there yet."""
    r = R.load(REPO / "recipes" / name)
    if r.weights and r.weights.startswith("runs/recipes/") and not os.path.exists(r.weights):
        _run_reduced(layout, r.weights.split("/")[2] + ".yaml")
    opts = Options(max_iter=2, test_iters=1, reps=1, workdir=os.path.join("runs", "recipes", r.name),
                   progress=False, plots=False)
    return Runner(f"recipes/{name}", opts).run(log=lambda m: None)


@pytest.mark.parametrize("name", MNIST_RECIPES)
def test_shipped_recipe_runs_reduced(layout, name, monkeypatch):
    monkeypatch.chdir(layout / "repo")
    rows = _run_reduced(layout, name)
    kinds = [r["kind"] for r in rows]
    assert kinds == [s.kind for s in R.load(REPO / "recipes" / name).steps]
    assert any(r["kind"] == "test" and 0 <= r["error"] <= 1 for r in rows)
    assert (layout / "repo" / "runs" / "recipes" / R.load(REPO / "recipes" / name).name / "report.md").exists()
    pruned = [r for r in rows if r["kind"] == "prune" and "nonzero_after" in r]
    assert pruned and pruned[-1]["nonzero_after"] <= pruned[0]["nonzero_before"]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_files_check(name):
    r = R.load(REPO / "recipes" / name)
    assert r.steps and os.path.exists(REPO / r.net)
    for s in r.steps:
        if "solver" in s.args:
            assert (REPO / s.args["solver"]).exists(), s.args["solver"]


def test_cifar10_bn_recipe_runs_reduced(tmp_path, monkeypatch):
    """recipes/slimming_cifar10_bn.yaml, reduced (2 iterations per training run, one test batch) on the real
    CIFAR-10 JPEGs of ../shared, extracted the way its description says."""
    import shutil
    import tarfile
    src = need_shared("data", "cifar10")
    for f in ("train.tar.gz", "test.tar.gz", "train.txt", "test.txt"):
        need_shared("data", "cifar10", f)
    repo = tmp_path / "repo"
    (repo / "data" / "cifar10").mkdir(parents=True)
    for d in ("models", "solvers", "recipes"):
        os.symlink(REPO / d, repo / d)
    for f in ("train.tar.gz", "test.tar.gz"):
        with tarfile.open(src / f) as t:
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}    # Python >= 3.11.4
            t.extractall(repo / "data" / "cifar10", **kw)
    for f in ("train.txt", "test.txt"):
        shutil.copy(src / f, repo / "data" / "cifar10" / f)
    monkeypatch.chdir(repo)
    name = "slimming_cifar10_bn.yaml"
    opts = Options(max_iter=2, test_iters=1, reps=1, workdir=str(tmp_path / "work"), progress=False, plots=False)
    rows = Runner(f"recipes/{name}", opts).run(log=lambda m: None)
    assert [r["kind"] for r in rows] == [s.kind for s in R.load(REPO / "recipes" / name).steps]
    prune = next(r for r in rows if r["kind"] == "prune")
    assert prune["nonzero"] < rows[0]["nonzero"] and rows[-1]["flops"] < rows[0]["flops"]
    assert all(0 <= r["error"] <= 1 for r in rows if r["kind"] == "test")
