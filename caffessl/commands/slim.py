"""``caffessl slim``: remove zero filters and unused channels (caffessl.sparsity.slim) and write the smaller
prototxt + caffemodel, after checking that the slimmed net computes what the original does."""
from __future__ import annotations

# largest |slimmed - original| output difference accepted by the check, relative to the output's scale
CHECK_RTOL = 1e-4


def add_arguments(p):
    p.add_argument("--model", required=True, help="net prototxt (deploy or train_val)")
    p.add_argument("--weights", required=True, help="trained (sparse) caffemodel")
    p.add_argument("--out-model", required=True, help="where to write the slimmed prototxt")
    p.add_argument("--out-weights", required=True, help="where to write the slimmed caffemodel")
    p.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"],
                   help="phase to build the net in (default TEST); the result is exact for that phase")
    p.add_argument("--no-depth", action="store_true",
                   help="keep residual branches whose weights are all zero (default: replace each by a Bias layer)")
    p.add_argument("--json", action="store_true",
                   help="print the report (per producer: channels removed/kept and why, the check) as JSON")
    p.add_argument("--no-check", action="store_true",
                   help="skip running both nets on one batch and comparing their outputs")


def run(args):
    import json

    import numpy as np

    from ..errors import CaffeSSLError
    from ..net import TEST, TRAIN, Net
    from ..sparsity.slim import check, param_count, slim, write

    net = Net(args.model, weights=args.weights, phase=TEST if args.phase == "TEST" else TRAIN)
    result = slim(net, depth=not args.no_depth)
    before = param_count({l.name: [p.detach().numpy() for p in l.params] for l in net.layers})
    after = param_count(result.arrays)
    data = result.to_dict()
    data.update(params_before=before, params_after=after, phase=args.phase)
    if not args.json:
        _print_report(result, before, after)
    if not args.no_check:
        diffs = check(net, result)
        scale = max([float(np.abs(net.blobs[k].data).max()) for k in diffs] + [1.0])
        worst = max(diffs.values(), default=0.0)
        data["check"] = {"max_abs_diff": diffs, "scale": scale, "rtol": CHECK_RTOL}
        if not args.json:
            print("check (max |slimmed - original| per output): "
                  + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
        if worst > CHECK_RTOL * scale:
            raise CaffeSSLError(f"slim: the slimmed net's outputs differ from the original's by {worst:.3g} "
                                f"(scale {scale:.3g}, {args.phase} phase); nothing written")
    write(result, args.out_model, args.out_weights)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print(f"wrote {args.out_model} and {args.out_weights}")
    return 0


def _print_report(result, before: int, after: int):
    for b in result.branches:
        print(f"branch {' -> '.join(b.chain)} -> {b.eltwise}: all-zero weights; '{b.eltwise}' is now a Bias layer")
    if result.removed_layers:
        print(f"layers removed: {len(result.removed_layers)} ({', '.join(result.removed_layers)})")
    print(f"{'layer':<20} {'type':<13} {'before':>7} {'after':>7} {'unused':>7} {'folded':>7}  kept because")
    for r in result.producers:
        why = "; ".join(f"{n}: {w}" for w, n in r.kept_why.items())
        print(f"{r.layer:<20} {r.type:<13} {r.before:>7} {r.after:>7} {r.unused:>7} {r.folded:>7}  {why}")
    for w in result.warnings:
        print(f"warning: {w}")
    print(f"channels removed: {result.removed}; learnable values {before} -> {after} "
          f"({after / max(before, 1):.3f}x)")
