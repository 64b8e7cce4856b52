"""``caffessl plot-log``: loss / accuracy curves of a training log (Caffe's plot_training_log.py.example).

  caffessl plot-log LOGFILE --out PNG [--x iters|seconds] [--y loss,accuracy,...]

One panel per column, train solid and test dashed, from the tables `caffessl parse-log` writes. Needs
matplotlib (drawn with its Agg backend, no display needed).
"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("logfile", help="the training log (glog lines of `caffe train` or `caffessl train`)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--x", choices=["iters", "seconds"], default="iters", help="x axis (default: iters)")
    p.add_argument("--y", help="comma-separated columns to plot, e.g. loss,accuracy,LearningRate "
                               "(default: every net output)")


def run(args):
    import os

    from ..log_parse import parse_log, plot_tables
    tables = parse_log(args.logfile)
    names = [n.strip() for n in args.y.split(",") if n.strip()] if args.y else None
    out = plot_tables(tables, args.out, x=args.x, y=names, title=os.path.basename(args.logfile))
    print(f"wrote {out}")
    return 0
