"""A re-implementation of the table-building logic of Caffe's tools/extra/parse_log.py (+ extract_seconds.py),
used to check that caffessl's logs give the same tables as real Caffe's.

Same regular expressions, same rules: parsing starts at the first line containing ``Iteration N``; each
``Train/Test net output #k: name = v`` line fills a row for the current iteration; a row is pushed once it has
as many columns as the first row; the first row's NaN learning rate is copied from the second row; Seconds
are measured from the first line's glog timestamp (``Immdd hh:mm:ss.uuuuuu``)."""
from __future__ import annotations

import datetime
import re

RE_ITERATION = re.compile(r"Iteration (\d+)")
RE_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def glog_datetime(line: str, year: int) -> datetime.datetime:
    head, clock = line.strip().split()[:2]
    month, day = int(head[1:3]), int(head[3:5])
    whole, frac = clock.rsplit(".", 1)
    h, m, s = (int(x) for x in whole.split(":"))
    return datetime.datetime(year, month, day, h, m, s, int(frac))


def _start_time(lines, year):
    for line in lines:
        if "Solving" in line:
            return glog_datetime(line, year)
    raise ValueError("no 'Solving' line: not a training log")


def _net_output(regex, row, rows, line, iteration, seconds, lr):
    m = regex.search(line)
    if m:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": lr}
        row[m.group(2)] = float(m.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row, rows


def parse_log(lines, year: int = 2016):
    """(train rows, test rows): lists of dicts with NumIters, Seconds, LearningRate and one key per output."""
    lines = list(lines)
    start = _start_time(lines, year)
    iteration, lr = -1, float("nan")
    train, test = [], []
    train_row = test_row = None
    for line in lines:
        m = RE_ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        try:
            seconds = (glog_datetime(line, year) - start).total_seconds()
        except (ValueError, IndexError):
            continue  # a raw continuation line (the fork's sparsity values) has no timestamp
        m = RE_LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        train_row, train = _net_output(RE_TRAIN_OUTPUT, train_row, train, line, iteration, seconds, lr)
        test_row, test = _net_output(RE_TEST_OUTPUT, test_row, test, line, iteration, seconds, lr)
    for rows in (train, test):
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def strip_glog_year(line: str) -> str:
    """Newer glog writes ``I20261122 ...``; parse_log.py (written for ``I1122``) cannot read the year."""
    return re.sub(r"^([IWEF])\d{4}(\d{4} )", r"\1\2", line)
