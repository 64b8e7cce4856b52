"""Training logs -> train/test tables, as Caffe's tools/extra/parse_log.py (+ extract_seconds.py) builds them.

Caffe's rules, kept as they are so that the tables (and the CSV files) are the same:

* parsing starts after the first line containing ``Solving``; its glog timestamp is time 0 (``Seconds``);
* ``Iteration N`` anywhere in a line sets the current iteration; nothing is read before the first one;
* ``lr = X`` sets the current learning rate (NaN until the first one);
* each ``Train net output #k: NAME = V`` / ``Test net output #k: NAME = V`` line adds the column NAME to the
  row of the current iteration; a row starts as NumIters, Seconds (of the row's first output line) and
  LearningRate (current when it starts); it is pushed when the next iteration's output starts a new row, or
  as soon as it has as many columns as the first row (so a table whose only row never completes is empty);
* the first row's LearningRate (NaN: the lr line follows the first outputs) is copied from the second row;
* lines without a glog timestamp (the SSL fork's raw sparsity values, blank lines) are skipped.

Beyond Caffe's script: newer glog's ``I20261122`` prefix (year included) is read as well as ``I1122`` (year of
the file's creation, +1 when the month goes back, as in extract_seconds.py); a file without a ``Solving``
line is a LogParseError instead of a crash. The CSV files are Caffe's too: csv's excel dialect (CRLF line
ends) with the chosen delimiter, floats as Python writes them (``2.0``, ``nan``), no file for an empty table.
"""
from __future__ import annotations

import csv
import datetime
import io
import math
import os
import re
from dataclasses import dataclass, field

from .errors import FileMissingError, LogParseError, PlotError

RE_ITERATION = re.compile(r"Iteration (\d+)")
RE_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
RE_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# glog's line head: severity letter, [yyyy]mmdd, hh:mm:ss.uuuuuu
RE_GLOG_STAMP = re.compile(r"[A-Za-z](\d{4})?(\d{2})(\d{2})\s+(\d{1,2}):(\d{2}):(\d{2})\.(\d{1,6})(?:\s|$)")

FIXED_COLUMNS = ("NumIters", "Seconds", "LearningRate")
X_COLUMNS = {"iters": "NumIters", "seconds": "Seconds"}


@dataclass
class LogTables:
    """The two tables of a training log: rows are dicts (NumIters, Seconds, LearningRate, outputs...)."""
    train: list = field(default_factory=list)
    test: list = field(default_factory=list)

    @staticmethod
    def columns(rows) -> list:
        """The table's columns: the first row's, then any that only later rows have."""
        cols = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        return cols

    def output_names(self) -> list:
        """Net output names (loss, accuracy...) over both tables, in order of appearance."""
        names = []
        for rows in (self.train, self.test):
            names.extend(c for c in self.columns(rows) if c not in FIXED_COLUMNS and c not in names)
        return names


def glog_datetime(line: str, year: int):
    """(datetime, has_year) from a glog line head, or None for a line without one."""
    m = RE_GLOG_STAMP.match(line.strip())
    if m is None:
        return None
    y, mo, d, h, mi, s, us = m.groups()
    try:
        return datetime.datetime(int(y) if y else year, int(mo), int(d), int(h), int(mi), int(s), int(us)), bool(y)
    except ValueError:
        return None


class _Table:
    """One table under construction (Caffe's parse_line_for_net_output)."""

    def __init__(self, regex):
        self.regex = regex
        self.rows: list = []
        self.row = None

    def feed(self, line, iteration, seconds, lr):
        m = self.regex.search(line)
        value = None
        if m:
            try:
                value = float(m.group(3))
            except ValueError:   # "-" or "e" alone: not a number (Caffe's script would crash here)
                m = None
        if m:
            if self.row is None or self.row["NumIters"] != iteration:
                if self.row is not None:
                    self.rows.append(self.row)
                self.row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": lr}
            self.row[m.group(2)] = value
        if self.row is not None and self.rows and len(self.row) == len(self.rows[0]):
            self.rows.append(self.row)
            self.row = None

    def finish(self) -> list:
        if len(self.rows) > 1:
            self.rows[0]["LearningRate"] = self.rows[1]["LearningRate"]
        return self.rows


def parse_lines(lines, year: int | None = None, where: str = "log") -> LogTables:
    """Tables of a training log given as lines; ``year`` dates ``I1122``-style lines (default: this year)."""
    year = datetime.date.today().year if year is None else int(year)
    lines = iter(lines)
    start = None
    for line in lines:
        if "Solving" in line:
            start = glog_datetime(line, year)
            if start is None:
                raise LogParseError(f"{where}: the 'Solving' line has no glog timestamp "
                                    f"(Immdd hh:mm:ss.uuuuuu): {line.strip()[:120]!r}")
            break
    if start is None:
        raise LogParseError(f"{where}: not a Caffe training log: no 'Solving ...' line (the solver's first "
                            f"message, where the tables start)")
    start, last = start[0], start[0]
    iteration, lr = -1.0, math.nan
    train, test = _Table(RE_TRAIN_OUTPUT), _Table(RE_TEST_OUTPUT)
    for line in lines:
        m = RE_ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        stamp = glog_datetime(line, year)
        if stamp is None:
            continue
        t, has_year = stamp
        if not has_year and t.month < last.month:   # extract_seconds.py: the log went into a new year
            year += 1
            t = glog_datetime(line, year)[0]
        last = t
        seconds = (t - start).total_seconds()
        m = RE_LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        train.feed(line, iteration, seconds, lr)
        test.feed(line, iteration, seconds, lr)
    return LogTables(train.finish(), test.finish())


def parse_log(path) -> LogTables:
    """Tables of the training log at ``path`` (``I1122`` lines are dated by the file's creation year, as Caffe)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileMissingError(f"training log '{path}' does not exist")
    if not os.path.isfile(path):
        raise LogParseError(f"training log '{path}' is not a file")
    try:
        year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return parse_lines(f, year, where=path)
    except OSError as e:
        raise LogParseError(f"cannot read training log '{path}': {e}") from None


def csv_text(rows, delimiter: str = ",") -> str:
    """A table as Caffe's write_csv writes it: header, then one line per row, excel dialect (CRLF)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LogTables.columns(rows), dialect=csv.excel, delimiter=delimiter,
                            restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def save_csv_files(log_path, output_dir, tables: LogTables, delimiter: str = ",") -> dict:
    """Write OUTPUT_DIR/<log name>.train and .test; an empty table writes no file (as Caffe).
    Returns {"train": path or None, "test": path or None}."""
    from .io.atomic import atomic_write
    base = os.path.basename(os.fspath(log_path))
    out_dir = os.fspath(output_dir)
    written = {}
    for phase, rows in (("train", tables.train), ("test", tables.test)):
        path = os.path.join(out_dir, f"{base}.{phase}")
        if not rows:
            written[phase] = None
            continue
        try:
            atomic_write(path, csv_text(rows, delimiter).encode("utf-8"))
        except OSError as e:
            raise LogParseError(f"cannot write '{path}': {e}") from None
        written[phase] = path
    return written


def plot_tables(tables: LogTables, out, x: str = "iters", y=None, title: str | None = None) -> str:
    """Plot the columns ``y`` (default: every net output; LearningRate on request) of both tables against
    iterations or seconds, one panel per column, train solid and test dashed; saved as a PNG at ``out``."""
    if x not in X_COLUMNS:
        raise PlotError(f"x axis must be one of {', '.join(X_COLUMNS)}, got '{x}'")
    available = tables.output_names() + ["LearningRate"]
    names = list(y) if y else tables.output_names()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise PlotError(f"no column {', '.join(repr(n) for n in unknown)} in the log's tables "
                        f"(columns: {', '.join(available)})")
    if not names or not (tables.train or tables.test):
        raise PlotError("the log has no train or test rows to plot")
    from .plotting import figure, save_png
    xcol = X_COLUMNS[x]
    fig = figure(7.0, 2.6 * len(names) + 0.6)
    for i, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, i + 1)
        phases = (("train", tables.train, "-"), ("test", tables.test, "--"))
        if name == "LearningRate":   # the same schedule in both tables: draw it once
            phases = phases[:1] if tables.train else phases[1:]
        for phase, rows, style in phases:
            pts = [(r[xcol], r[name]) for r in rows if name in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, marker=".", linewidth=1, label=f"{phase} {name}")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("Iterations" if x == "iters" else "Seconds")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out)
