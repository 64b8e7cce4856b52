"""``caffessl analyze``: the SSL fork's ``examples/sparsity_analyzer.py``. Per Convolution / InnerProduct layer and
conv group: zero fractions of the original and tuned weights, column / row / element sparsity, the estimated
speedup, block sparsity per ``block_group_lasso`` spec; optional zeroed-out caffemodel, PNG plots and JSON."""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--model", required=True, help="net prototxt (a deploy net needs no data sources)")
    p.add_argument("--weights", required=True, help="the tuned (SSL-trained) caffemodel or .caffemodel.h5")
    p.add_argument("--orig-weights", default=None, help="the original (dense) caffemodel, for its zero fraction")
    p.add_argument("--zerout", nargs="?", const="", default=None, metavar="PATH",
                   help="save the tuned weights with |w| < threshold set to 0 (Convolution/InnerProduct "
                        "weights), to PATH or <weights>_zerout.caffemodel")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write sparsity.png and column_nonzero.png into DIR (needs matplotlib)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument("--json-columns", action="store_true",
                   help="include every column's nonzero ratio in the JSON")
    p.add_argument("--threshold", type=float, default=None,
                   help="zero threshold (default: the fork's 1e-4, the schema's zerout_threshold)")
    p.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST"],
                   help="net phase to build (default TEST, as the fork loads the tuned net)")


def run(args):
    import caffessl as caffe
    from ..errors import CaffeSSLError
    from ..io.atomic import atomic_write
    from ..sparsity.analyze import analyze
    if args.threshold is not None and not args.threshold >= 0:
        raise CaffeSSLError(f"--threshold must be >= 0, got {args.threshold}")
    if args.plot:   # fail before the (possibly long) analysis when matplotlib is missing
        from ..sparsity.plot import require_matplotlib
        require_matplotlib()
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    result = analyze(args.model, args.weights, args.orig_weights, phase=phase, threshold=args.threshold,
                     zerout=args.zerout is not None, zerout_path=args.zerout or None)
    print(result.table())
    if result.zerout_path:
        print(f"Saved zeroed-out weights to {result.zerout_path}")
    if args.plot:
        from ..sparsity.plot import write_plots
        if result.layers:
            for path in write_plots(result, args.plot):
                print(f"Wrote {path}")
    if args.json:
        text = json.dumps(result.to_dict(columns=args.json_columns), indent=1)
        try:
            atomic_write(args.json, (text + "\n").encode("utf-8"))
        except OSError as e:
            raise CaffeSSLError(f"{args.json}: cannot write the JSON ({e.strerror or e})") from None
        print(f"Wrote {args.json}")
    return 0
