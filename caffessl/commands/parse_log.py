"""``caffessl parse-log``: Caffe's tools/extra/parse_log.py.

  caffessl parse-log LOGFILE [OUTPUT_DIR] [--delimiter ,]

Writes OUTPUT_DIR/LOGFILE.train and OUTPUT_DIR/LOGFILE.test (default OUTPUT_DIR: the log's folder): CSV tables
with the columns NumIters, Seconds, LearningRate and one per net output (loss, accuracy...). Reads Caffe's glog
logs and caffessl's own (``caffessl train ... 2> train.log``).
"""
from __future__ import annotations

import argparse


def _delimiter(s: str) -> str:
    s = {"\\t": "\t", "tab": "\t"}.get(s, s)
    if len(s) != 1:
        raise argparse.ArgumentTypeError(f"the delimiter must be one character (or '\\t' / 'tab'), got {s!r}")
    return s


def add_arguments(p):
    p.add_argument("logfile", help="the training log (glog lines of `caffe train` or `caffessl train`)")
    p.add_argument("output_dir", nargs="?", help="folder for LOGFILE.train / LOGFILE.test (default: the log's)")
    p.add_argument("--delimiter", type=_delimiter, default=",",
                   help="column delimiter in the output files (default: ','; '\\t' or 'tab' for a tab)")


def run(args):
    import os

    from ..log_parse import parse_log, save_csv_files
    tables = parse_log(args.logfile)
    out_dir = args.output_dir if args.output_dir is not None else (os.path.dirname(args.logfile) or ".")
    written = save_csv_files(args.logfile, out_dir, tables, args.delimiter)
    for phase, rows in (("train", tables.train), ("test", tables.test)):
        if written[phase]:
            print(f"wrote {written[phase]} ({len(rows)} rows)")
        else:
            print(f"no {phase} rows in {args.logfile}: {os.path.basename(args.logfile)}.{phase} not written")
    return 0
