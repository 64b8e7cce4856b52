"""``caffessl features``: implicit filter-level sparsity of a trained net (Mehta, Kim, Theobalt, CVPR 2019): per
Convolution / InnerProduct layer, the features inactive by activation and by BatchNorm/Scale γ, the mean
selectivity and its distribution, and the overlap with SSL's zero filters. The data is streamed twice (bounded
memory: O(features) per layer)."""
from __future__ import annotations

import json


def add_arguments(p):
    from ..study.features import ACT_THRESHOLD, GAMMA_THRESHOLD, SEL_THRESHOLD
    p.add_argument("--model", required=True, help="net prototxt whose data layers feed the batches")
    p.add_argument("--weights", default=None, help="the trained caffemodel (or .caffemodel.h5)")
    p.add_argument("--iterations", type=int, default=50, help="batches per pass (default 50)")
    p.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST"], help="net phase to build (default TEST)")
    p.add_argument("--act-threshold", type=float, default=ACT_THRESHOLD,
                   help=f"inactive if max |activation| over the corpus < this (default {ACT_THRESHOLD:g})")
    p.add_argument("--gamma-threshold", type=float, default=GAMMA_THRESHOLD,
                   help=f"inactive by scale if |gamma| < this (default {GAMMA_THRESHOLD:g})")
    p.add_argument("--sel-threshold", type=float, default=SEL_THRESHOLD,
                   help=f"a sample does not activate a feature if activation/max <= this (default "
                        f"{SEL_THRESHOLD:g})")
    p.add_argument("--seed", type=int, default=0, help="random seed set before each pass (default 0)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="DIR", help="write features.png and selectivity.png into DIR")
    p.add_argument("--gpu", default=None, help="GPU id (default: CPU)")


def run(args):
    import caffessl as caffe
    from ..errors import CaffeSSLError
    from ..io.atomic import atomic_write
    from ..study.features import features
    if args.plot:
        from ..sparsity.plot import require_matplotlib
        require_matplotlib()
    if args.gpu is not None:
        caffe.set_device(int(args.gpu))
        caffe.set_mode_gpu()
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    report = features(args.model, args.weights, phase=phase, iterations=args.iterations,
                      act_threshold=args.act_threshold, gamma_threshold=args.gamma_threshold,
                      sel_threshold=args.sel_threshold, seed=args.seed)
    print(report.table())
    if args.plot:
        from ..study.plot import write_feature_plots
        for path in write_feature_plots(report, args.plot):
            print(f"Wrote {path}")
    if args.json:
        try:
            atomic_write(args.json, (json.dumps(report.to_dict(), indent=1) + "\n").encode("utf-8"))
        except OSError as e:
            raise CaffeSSLError(f"{args.json}: cannot write the JSON ({e.strerror or e})") from None
        print(f"Wrote {args.json}")
    return 0
