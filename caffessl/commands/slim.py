"""``caffessl slim``: remove zero filters and unused channels (caffessl.sparsity.slim) and write the smaller
prototxt + caffemodel, after checking that the slimmed net computes what the original does."""
from __future__ import annotations


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

    from ..net import TEST, TRAIN, Net
    from ..sparsity.slim import CHECK_RTOL, check_report, param_count, refuse, slim, write

    net = Net(args.model, weights=args.weights, phase=TEST if args.phase == "TEST" else TRAIN)
    result = slim(net, depth=not args.no_depth)
    before = param_count({l.name: [p.detach().numpy() for p in l.params] for l in net.layers})
    after = param_count(result.arrays)
    data = result.to_dict()
    data.update(params_before=before, params_after=after, phase=args.phase)
    if not args.json:
        _print_report(result, before, after)
    if not args.no_check:
        data["check"] = report = check_report(net, result, CHECK_RTOL)
        if not args.json:
            print("check (max |slimmed - original| per output): "
                  + ", ".join(f"{k} {v:.3g}" for k, v in report["max_abs_diff"].items()))
        refuse(report, args.phase)
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
