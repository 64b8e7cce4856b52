"""`caffessl parse-log` / `plot-log` and caffessl.log_parse: the tables of Caffe's tools/extra/parse_log.py (regexes
and row rules of parse_log.py, timestamps of extract_seconds.py), from a real Caffe log and from caffessl's own."""
from __future__ import annotations

import io
import logging
import math
import shutil
import sys

import pytest

from caffessl.errors import CaffeSSLError, FileMissingError
from caffessl.log import GlogFormatter
from caffessl.log_parse import (
    LogParseError,
    PlotError,
    csv_text,
    parse_lines,
    parse_log,
    plot_tables,
)
from tests.golden import need_shared
from tests.solver._cli import run_cli_inprocess

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The golden train_log run (../shared/golden/train_log/train.log, a real `caffe train` of the SSL fork: display 2,
# test_interval 5, lr step 0.01 * 0.5^floor(iter/4)), read by eye. Time 0 is the line
#   I20261122 03:53:27.011402 ... solver.cpp:292] Solving tiny_lenet
# Train rows: one per "Train net output #0: loss = ..." line (iterations 0, 2, 4, 6, 8; the final "Iteration 10,
# loss = 0.999122" has no output line); the lr is the last "lr = " seen *before* the output line ("Iteration 4,
# lr = 0.005" follows the iteration-4 output), and row 0's NaN takes row 1's value.
CAFFE_TRAIN = [  # NumIters, Seconds (output line time - 27.011402), LearningRate, loss
    (0.0, 0.000514, 0.01, 1.46893),    # 27.011916 Train net output #0: loss = 1.46893
    (2.0, 0.000791, 0.01, 1.33033),    # 27.012193
    (4.0, 0.001042, 0.01, 1.26911),    # 27.012444 (lr = 0.005 comes at 27.012449)
    (6.0, 0.001559, 0.005, 1.15765),   # 27.012961
    (8.0, 0.001804, 0.005, 1.04859),   # 27.013206 (lr = 0.0025 comes at 27.013212)
]
# Test rows: "Test net output #0: accuracy" then "#1: loss" after "Iteration N, Testing net (#0)"; Seconds is the
# row's first (accuracy) line; row 0's NaN lr takes row 1's (0.005, current when iteration 5 was tested).
CAFFE_TEST = [  # NumIters, Seconds, LearningRate, accuracy, loss
    (0.0, 0.000375, 0.005, 0.125, 1.46941),      # 27.011777 / 27.011785
    (5.0, 0.001338, 0.005, 0.09375, 1.43774),    # 27.012740 / 27.012745
    (10.0, 0.002643, 0.0025, 0.125, 1.45775),    # 27.014045 / 27.014050
]
TRAIN_COLS = ["NumIters", "Seconds", "LearningRate", "loss"]
TEST_COLS = ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]


def _rows(table, cols):
    return [tuple(r[c] for c in cols) for r in table]


def _without_seconds(rows):
    return [r[:1] + r[2:] for r in rows]


@pytest.fixture
def cli(monkeypatch, capsys):
    return lambda args, cwd: run_cli_inprocess(args, cwd, monkeypatch, capsys)


@pytest.fixture
def caffe_log(tmp_path):
    log = tmp_path / "caffe.log"
    shutil.copy(need_shared("golden", "train_log", "train.log"), log)
    return log


def test_real_caffe_log_gives_parse_logs_tables(caffe_log):
    tables = parse_log(caffe_log)
    assert [list(r) for r in tables.train] == [TRAIN_COLS] * len(CAFFE_TRAIN)
    assert [list(r) for r in tables.test] == [TEST_COLS] * len(CAFFE_TEST)
    got_train, got_test = _rows(tables.train, TRAIN_COLS), _rows(tables.test, TEST_COLS)
    assert _without_seconds(got_train) == _without_seconds(CAFFE_TRAIN)
    assert _without_seconds(got_test) == _without_seconds(CAFFE_TEST)
    assert [r[1] for r in got_train] == pytest.approx([r[1] for r in CAFFE_TRAIN], abs=1e-9)
    assert [r[1] for r in got_test] == pytest.approx([r[1] for r in CAFFE_TEST], abs=1e-9)


def test_parse_log_cli_writes_caffes_csv_files(caffe_log, tmp_path, cli):
    rc, out, _err = cli(["parse-log", str(caffe_log), str(tmp_path / "csv")], tmp_path)
    assert rc == 0, _err
    assert "caffe.log.train (5 rows)" in out and "caffe.log.test (3 rows)" in out
    train = (tmp_path / "csv" / "caffe.log.train").read_bytes().decode()
    test = (tmp_path / "csv" / "caffe.log.test").read_bytes().decode()
    # csv.DictWriter with the excel dialect: CRLF line ends, floats as Python writes them ("0.0")
    assert train == ("NumIters,Seconds,LearningRate,loss\r\n"
                     "0.0,0.000514,0.01,1.46893\r\n"
                     "2.0,0.000791,0.01,1.33033\r\n"
                     "4.0,0.001042,0.01,1.26911\r\n"
                     "6.0,0.001559,0.005,1.15765\r\n"
                     "8.0,0.001804,0.005,1.04859\r\n")
    assert test == ("NumIters,Seconds,LearningRate,accuracy,loss\r\n"
                    "0.0,0.000375,0.005,0.125,1.46941\r\n"
                    "5.0,0.001338,0.005,0.09375,1.43774\r\n"
                    "10.0,0.002643,0.0025,0.125,1.45775\r\n")


def test_parse_log_cli_delimiter_and_default_folder(caffe_log, tmp_path, cli):
    rc, _out, err = cli(["parse-log", "caffe.log", "--delimiter", "\\t"], tmp_path)
    assert rc == 0, err
    lines = (tmp_path / "caffe.log.test").read_text().splitlines()   # beside the log
    assert lines[0] == "NumIters\tSeconds\tLearningRate\taccuracy\tloss"
    assert lines[2] == "5.0\t0.001338\t0.005\t0.09375\t1.43774"
    rc, _out, _err = cli(["parse-log", "caffe.log", "--delimiter", "ab"], tmp_path)
    assert rc == 2   # argparse: the delimiter must be one character


def test_caffessl_training_log_gives_the_same_tables(tmp_path, cli):
    """`caffessl train` of the same golden run writes a log whose tables are Caffe's (times aside): the glog
    prefix and the solver's lines follow Caffe's, and the run reproduces Caffe's printed values."""
    d = need_shared("golden", "train_log")
    for f in ("net.prototxt", "solver.prototxt", "train.h5", "train_h5.txt", "test.h5", "test_h5.txt"):
        shutil.copy(d / f, tmp_path / f)
    rc, _out, err = cli(["train", "--solver=solver.prototxt", "--no-progress"], tmp_path)
    assert rc == 0, err[-2000:]
    log = tmp_path / "caffessl.log"
    log.write_text(err)
    tables = parse_log(log)
    assert _without_seconds(_rows(tables.train, TRAIN_COLS)) == _without_seconds(CAFFE_TRAIN)
    assert _without_seconds(_rows(tables.test, TEST_COLS)) == _without_seconds(CAFFE_TEST)
    seconds = sorted([r["Seconds"] for r in tables.train] + [r["Seconds"] for r in tables.test])
    assert seconds[0] >= 0 and seconds[-1] < 600
    rc, _out, _err = cli(["parse-log", "caffessl.log"], tmp_path)
    assert rc == 0 and (tmp_path / "caffessl.log.train").read_text().startswith("NumIters,Seconds,LearningRate,loss")


def _glog_lines(messages):
    """Lines as caffessl's GlogFormatter writes them (``I1122 hh:mm:ss.uuuuuu tid file:line] msg``)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(GlogFormatter())
    logger = logging.getLogger("caffessl.test_log_parse")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for m in messages:
            logger.info(m)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_glog_formatter_lines_parse_without_shared_data():
    lines = _glog_lines([
        "Iteration 7 before Solving is ignored",   # not read: parsing starts after the Solving line
        "Solving tiny",
        "Iteration 0, Testing net (#0)",
        "    Test net output #0: accuracy = 0.5",
        "    Test net output #1: loss = 2.5 (* 1 = 2.5 loss)",
        "Iteration 0, loss = 2.25",
        "    Train net output #0: loss = 2.25 (* 1 = 2.25 loss)",
        "Iteration 0, lr = 0.1",
        "    Element Sparsity %: \n0\t12.5\t\n\t\t",     # raw continuation lines (no timestamp): skipped
        "Iteration 10, loss = 1e-05",
        "    Train net output #0: loss = 1e-05 (* 1 = 1e-05 loss)",
        "Iteration 10, lr = 0.05",
        "Iteration 10, Testing net (#0)",
        "    Test net output #0: accuracy = 1",
        "    Test net output #1: loss = 0.125 (* 1 = 0.125 loss)",
    ])
    tables = parse_lines(lines)
    assert [(r["NumIters"], r["LearningRate"], r["loss"]) for r in tables.train] == [(0.0, 0.1, 2.25),
                                                                                     (10.0, 0.1, 1e-05)]
    assert [(r["NumIters"], r["LearningRate"], r["accuracy"], r["loss"]) for r in tables.test] == [
        (0.0, 0.05, 0.5, 2.5), (10.0, 0.05, 1.0, 0.125)]
    assert all(r["Seconds"] >= 0 for r in tables.train + tables.test)


def test_timestamps_with_year_and_across_new_year():
    solving = "I1231 23:59:59.500000 1 solver.cpp:292] Solving x"
    lines = [solving,
             "I1231 23:59:59.750000 1 solver.cpp:417]     Test net output #0: loss = 1 Iteration 0",
             "I0101 00:00:01.500000 1 solver.cpp:417] Iteration 5, Testing net (#0)",
             "I0101 00:00:01.500000 1 solver.cpp:417]     Test net output #0: loss = 2"]
    t = parse_lines(lines, year=2015).test
    assert [r["Seconds"] for r in t] == [0.25, 2.0]    # extract_seconds.py: the month went back, year + 1
    with_year = ["I20151231 23:59:59.500000 1 solver.cpp:292] Solving x",
                 "I20160101 00:00:01.500000 1 solver.cpp:417] Iteration 0 Test net output #0: loss = 1",
                 "I20160101 00:00:02.500000 1 solver.cpp:417] Iteration 5 Test net output #0: loss = 2"]
    assert [r["Seconds"] for r in parse_lines(with_year, year=1999).test] == [2.0, 3.0]


def test_caffes_row_rules():
    """A row is pushed when it has as many columns as the first row or when the next iteration starts one;
    so a lone incomplete last row is dropped and a single-row table is empty (no CSV file), as in Caffe."""
    head = "I0101 00:00:00.000000 1 s.cpp:1] "
    lines = [head + "Solving x", head + "Iteration 0", head + "Train net output #0: loss = 1",
             head + "Train net output #1: acc = 0.5", head + "Iteration 1", head + "Train net output #0: loss = 3"]
    tables = parse_lines(lines, year=2016)
    assert [(r["NumIters"], r["loss"]) for r in tables.train] == [(0.0, 1.0)]
    assert math.isnan(tables.train[0]["LearningRate"])   # no lr line, no second row to copy from
    assert tables.test == []
    assert csv_text(tables.train) == "NumIters,Seconds,LearningRate,loss,acc\r\n0.0,0.0,nan,1.0,0.5\r\n"
    assert parse_lines(lines[:4], year=2016).train == []   # the only row is never pushed


def test_not_a_log_and_missing_file(tmp_path, cli):
    with pytest.raises(FileMissingError, match="does not exist"):
        parse_log(tmp_path / "missing.log")
    text = tmp_path / "net.prototxt"
    text.write_text('name: "x"\nlayer { name: "a" type: "Input" top: "a" }\n')
    binary = tmp_path / "weights.caffemodel"
    binary.write_bytes(bytes(range(256)) * 8)
    for p in (text, binary):
        with pytest.raises(LogParseError, match="not a Caffe training log"):
            parse_log(p)
    with pytest.raises(LogParseError, match="no glog timestamp"):
        parse_lines(["Solving, but not a glog line"])
    with pytest.raises(LogParseError, match="is not a file"):
        parse_log(tmp_path)
    assert issubclass(LogParseError, CaffeSSLError) and issubclass(PlotError, CaffeSSLError)
    for args in (["parse-log", "missing.log"], ["parse-log", "net.prototxt"], ["plot-log", "net.prototxt",
                                                                               "--out", "p.png"]):
        rc, _out, err = cli(args, tmp_path)
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and "error:" in lines[0], err
    assert not (tmp_path / "net.prototxt.train").exists() and not (tmp_path / "p.png").exists()


def test_plot_log_writes_a_png(caffe_log, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: plot-log cannot draw")
    rc, _out, err = cli(["plot-log", "caffe.log", "--out", "plots/curves.png"], tmp_path)
    assert rc == 0, err
    assert (tmp_path / "plots" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    rc, _out, err = cli(["plot-log", "caffe.log", "--out", "s.png", "--x", "seconds", "--y", "accuracy,LearningRate"],
                        tmp_path)
    assert rc == 0, err
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC
    rc, _out, err = cli(["plot-log", "caffe.log", "--out", "u.png", "--y", "top5"], tmp_path)
    assert rc == 1 and "no column 'top5'" in err and "loss, accuracy, LearningRate" in err
    assert not (tmp_path / "u.png").exists()


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, cli):
    lines = _glog_lines(["Solving x", "Iteration 0", "    Train net output #0: loss = 1",
                         "Iteration 1", "    Train net output #0: loss = 0.5"])
    (tmp_path / "t.log").write_text("\n".join(lines) + "\n")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    with pytest.raises(PlotError, match="needs matplotlib"):
        plot_tables(parse_lines(lines), tmp_path / "x.png")
    rc, _out, err = cli(["plot-log", "t.log", "--out", "x.png"], tmp_path)
    assert rc == 1 and err.count("\n") == 1 and "PlotUnavailableError" in err and "needs matplotlib" in err
