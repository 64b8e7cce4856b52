"""CI training run: LeNet (models/lenet/lenet_train_test.prototxt, Caffe's lenet_solver values) on a 2,000-image
MNIST slice for 200 iterations through `caffessl train --data=`, which converts the IDX files first.

Bound: the displayed training loss at iteration 150 is below 0.6 (it starts at ~2.3 = ln 10) and the final test
accuracy on 500 held-out test images is above 0.85; both are loose bounds for LeNet at lr 0.01 with momentum."""
from __future__ import annotations

from caffessl.data.mnist import convert_mnist
from tests.golden import REPO, need_shared
from tests.solver._cli import run_cli_inprocess
from tests.solver.parse_log import parse_log


def test_lenet_trains_on_an_mnist_slice(tmp_path, monkeypatch, capsys):
    src = need_shared("data", "mnist")
    convert_mnist(str(src), str(tmp_path / "data" / "mnist"), limit=2000)
    net = (REPO / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    (tmp_path / "lenet_train_test.prototxt").write_text(net)
    solver = (REPO / "solvers" / "lenet_solver.prototxt").read_text()
    solver = (solver.replace('"models/lenet/lenet_train_test.prototxt"', '"lenet_train_test.prototxt"')
              .replace("max_iter: 10000", "max_iter: 200").replace("test_iter: 100", "test_iter: 5")
              .replace("test_interval: 500", "test_interval: 100\ntest_initialization: false").replace("display: 100", "display: 50")
              .replace("snapshot: 5000", "snapshot: 0"))
    (tmp_path / "solver.prototxt").write_text(solver)
    rc, _out, err = run_cli_inprocess(["train", "--solver=solver.prototxt", f"--data={src}"], tmp_path,
                                      monkeypatch, capsys)
    assert rc == 0, err[-3000:]
    train, test = parse_log(err.splitlines())
    losses = {int(r["NumIters"]): r["loss"] for r in train}
    assert losses[0] > 1.5
    assert losses[150] < 0.6, losses
    assert test[-1]["NumIters"] == 200 and test[-1]["accuracy"] > 0.85, test
    assert (tmp_path / "runs" / "lenet" / "lenet_iter_200.caffemodel").is_file()   # snapshot_after_train
