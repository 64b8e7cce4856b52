"""Bad input to `caffessl train`: a non-zero exit and exactly one line on stderr, naming the problem."""
from __future__ import annotations

import shutil

import pytest

from tests.golden import need_shared
from tests.solver._cli import run_cli_inprocess

BASE = 'type: "SGD" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 solver_mode: CPU snapshot_after_train: false\n'


@pytest.fixture
def cli(monkeypatch, capsys):
    return lambda args, cwd: run_cli_inprocess(args, cwd, monkeypatch, capsys)


@pytest.fixture
def case(tmp_path):
    d = need_shared("golden", "solver_sgd_momentum_l2")
    for f in ("net.prototxt", "train.h5", "train_h5.txt"):
        shutil.copy(d / f, tmp_path / f)
    return tmp_path


def _one_line_error(cli, case, solver_text, *extra, match):
    (case / "s.prototxt").write_text(solver_text)
    rc, _out, err = cli(["train", "--solver=s.prototxt", *extra], case)
    lines = err.strip().splitlines()
    assert rc != 0
    assert len(lines) == 1, err
    assert match in lines[0], lines[0]
    return lines[0]


def test_missing_net_file(cli, case):
    _one_line_error(cli, case, 'net: "nope.prototxt"\n' + BASE, match="'nope.prototxt' does not exist")


def test_missing_data_source(cli, case):
    (case / "net.prototxt").write_text((case / "net.prototxt").read_text().replace("train_h5.txt", "gone.txt"))
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE, match="gone.txt")


def test_empty_data_source(cli, case):
    (case / "train_h5.txt").write_text("")
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE, match="train_h5.txt")


def test_missing_mnist_lmdb_says_how_to_get_mnist(cli, case, monkeypatch):
    monkeypatch.delenv("CAFFESSL_MNIST", raising=False)
    net = ('layer { name: "d" type: "Data" top: "data" top: "label" '
           'data_param { source: "mnist/mnist_train_lmdb" batch_size: 4 backend: LMDB } }\n')
    (case / "lenet.prototxt").write_text(net)
    line = _one_line_error(cli, case, 'net: "lenet.prototxt"\n' + BASE, match="mnist/mnist_train_lmdb")
    assert "--data=DIR" in line and "yann.lecun.com" in line


def test_unknown_solver_type(cli, case):
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE.replace('"SGD"', '"Adamax"'), match="'Adamax'")


def test_unknown_lr_policy(cli, case):
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE.replace('"fixed"', '"cosine"'), match="'cosine'")


def test_test_iter_without_test_net(cli, case):
    _one_line_error(cli, case, 'train_net: "net.prototxt"\ntest_iter: 3\ntest_interval: 1\n' + BASE,
                    match="test_iter must be given once per test net")


def test_momentum_with_adagrad(cli, case):
    _one_line_error(cli, case, 'net: "net.prototxt"\nmomentum: 0.9\n' + BASE.replace('"SGD"', '"AdaGrad"'),
                    match="momentum cannot be used with AdaGrad")


def test_corrupt_solverstate(cli, case):
    (case / "bad.solverstate").write_bytes(b"\x08\x05\x12\xff\xff\xff\xff")
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE, "--snapshot=bad.solverstate", match="bad.solverstate")


def test_weights_and_snapshot_are_exclusive(cli, case):
    (case / "s.prototxt").write_text('net: "net.prototxt"\n' + BASE)
    rc, _out, err = cli(["train", "--solver=s.prototxt", "--weights=a", "--snapshot=b"], case)
    assert rc != 0 and "not allowed with" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_gpu_mode_without_cuda(cli, case):
    _one_line_error(cli, case, 'net: "net.prototxt"\n' + BASE.replace("solver_mode: CPU", "solver_mode: GPU"),
                    match="no CUDA device")
