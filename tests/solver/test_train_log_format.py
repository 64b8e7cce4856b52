"""`caffessl train` writes glog lines that Caffe's parse_log.py logic turns into the same tables as real Caffe's
log of the same run (golden train_log: display 2, test_interval 5, test_iter 4, lr step; snapshot after train) --
with the same numbers: random_seed 1701 gives Caffe's initial weights (caffessl.caffe_rng), and the run follows
Caffe's to the printed digits and the snapshot to float32 rounding (measured: 1.5e-8)."""
from __future__ import annotations

import re
import shutil

import numpy as np

from caffessl.io.caffemodel import read_weights

from tests.golden import need_shared
from tests.solver._cli import run_cli
from tests.solver.parse_log import parse_log, strip_glog_year

FILES = ("net.prototxt", "solver.prototxt", "train.h5", "train_h5.txt", "test.h5", "test_h5.txt")


def test_train_log_parses_into_caffes_tables(tmp_path):
    d = need_shared("golden", "train_log")
    for f in FILES:
        shutil.copy(d / f, tmp_path / f)
    rc, _out, err = run_cli(["train", "--solver=solver.prototxt"], tmp_path)
    assert rc == 0, err[-2000:]
    ours_train, ours_test = parse_log(err.splitlines())
    gold_lines = [strip_glog_year(l) for l in (d / "train.log").read_text().splitlines()]
    gold_train, gold_test = parse_log(gold_lines)
    for ours, gold in ((ours_train, gold_train), (ours_test, gold_test)):
        assert [list(r) for r in ours] == [list(r) for r in gold]           # same columns, same order
        assert [r["NumIters"] for r in ours] == [r["NumIters"] for r in gold]
        assert [r["LearningRate"] for r in ours] == [r["LearningRate"] for r in gold]
        # the weights start from Caffe's own fillers (random_seed 1701): the values are Caffe's, as printed
        for key in [k for k in gold[0] if k not in ("NumIters", "Seconds", "LearningRate")]:
            assert [r[key] for r in ours] == [r[key] for r in gold], key
    assert [r["NumIters"] for r in ours_test] == [0, 5, 10]
    # line for line, the solver's messages are the fork's: iterations, lr, outputs, the SSL sparsity and
    # regularization lines, snapshots (glog prefixes stripped)
    keep = re.compile(r"Iteration|Test net|Train net|lr =|Sparsity|regular|Snapshot|Optimization Done")
    strip = re.compile(r"^[IWEF]\d+ [\d:.]+ +\d+ [\w.]+:\d+\] ")
    ours_lines = [strip.sub("", l) for l in err.splitlines() if keep.search(l) and strip.match(l)]
    gold_msgs = [strip.sub("", l) for l in gold_lines if keep.search(l) and strip.match(l)]
    assert ours_lines == gold_msgs
    # snapshot_after_train with snapshot_prefix "snap" (relative to the CWD)
    assert (tmp_path / "snap_iter_10.caffemodel").is_file() and (tmp_path / "snap_iter_10.solverstate").is_file()
    ours_w = {n: a for n, _, a in read_weights(str(tmp_path / "snap_iter_10.caffemodel"))}
    for name, _, arrays in read_weights(str(d / "snap_iter_10.caffemodel")):
        for i, want in enumerate(arrays):
            np.testing.assert_allclose(ours_w[name][i], want, rtol=1e-5, atol=1e-7, err_msg=f"{name} {i}")
    assert "Snapshotting to binary proto file snap_iter_10.caffemodel" in err
    assert err.rstrip().endswith("Optimization Done.")


def test_caffe_gpu_lenet_log_parses_with_the_same_parser():
    """The reference LeNet log (BVLC, GPU) parses into the columns our LeNet runs produce."""
    p = need_shared("models", "lenet", "caffe_train_gpu.log")
    train, test = parse_log(p.read_text().splitlines())
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert list(test[0]) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert test[-1]["NumIters"] == 10000 and test[-1]["accuracy"] > 0.98
