"""The ``caffessl`` command: thin flag parsing over the library, like Caffe's ``caffe`` tool.

Flags are read as ``--flag=value`` and, as Caffe's gflags read them, ``-flag value``, ``-flag=value``,
``-noflag`` (caffessl/commands/_gflags.py), so ``caffessl train -solver S -weights W -gpu 0`` works.

Each subcommand lives in ``caffessl/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args)``.
Errors a user can act on print as one line and exit non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("train", "train a net from a solver.prototxt (like `caffe train`)"),
    "test": ("test", "score a model over iterations of its TEST net (like `caffe test`)"),
    "time": ("time", "time forward/backward per layer, with sparsity and FLOPs (like `caffe time`)"),
    "convert": ("convert", "convert datasets: `convert mnist`, `convert imageset`"),
    "classify": ("classify", "classify images with a deploy net"),
    "export": ("export", "export a model: `export onnx`"),
    "upgrade-net": ("upgrade_net", "upgrade a legacy V0/V1 prototxt and caffemodel to the current format"),
    "compute-image-mean": ("image_mean", "the mean image of an LMDB/LevelDB as a binaryproto (like "
                                         "`compute_image_mean`)"),
    "analyze": ("analyze", "per-layer element/row/column/block sparsity of a caffemodel, plots, zero-out (like "
                           "the SSL fork's sparsity_analyzer.py)"),
    "slim": ("slim", "remove zero filters and unused channels for good: a smaller prototxt + caffemodel"),
    "prune": ("prune", "prune with a policy (zeros, reduction-rate, bn-gamma, mask-threshold, magnitude), masks, "
                       "sensitivity"),
    "recipe": ("recipe", "run a YAML pruning recipe: train / prune / finetune / slim / test / time / export"),
    "parse-log": ("parse_log", "training log -> .train/.test CSV tables (like Caffe's parse_log.py)"),
    "plot-log": ("plot_log", "plot loss/accuracy curves of a training log"),
    "sweep": ("sweep", "train a grid of solver settings from a YAML study file; table + plots of sparsity"),
    "features": ("features", "implicit sparsity: dead features (activation, BN gamma) and selectivity per layer"),
    "device-query": ("device_query", "show the CUDA devices torch sees (like `caffe device_query`)"),
}


def build_parser():
    from . import __version__
    parser = argparse.ArgumentParser(prog="caffessl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"caffessl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        p.set_defaults(_module=mod)
        try:
            module = importlib.import_module(f"caffessl.commands.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"caffessl.commands.{mod}":
                raise
            p.set_defaults(_missing=True)
            continue
        module.add_arguments(p)
    return parser


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:   # Ctrl-C before a command runs (imports, flag parsing): one line, no traceback
        print("caffessl: interrupted", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    from .errors import CaffeSSLError
    from .commands._gflags import normalize
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:   # Caffe's own spellings (`caffe train -solver S -gpu 0`), as gflags reads them
        argv = normalize(argv, parser)
    except CaffeSSLError as e:
        print(f"caffessl: error: {e}", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_missing", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 1
    if getattr(args, "_missing", False):
        print(f"caffessl: error: the '{args.command}' command is not available in this build", file=sys.stderr)
        return 2
    module = importlib.import_module(f"caffessl.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except (CaffeSSLError, NotImplementedError) as e:
        if args.debug:
            raise
        print(f"caffessl {args.command}: error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"caffessl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
