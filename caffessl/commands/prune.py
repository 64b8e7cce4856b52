"""``caffessl prune``: the pruning methods SSL is compared with (caffessl.prune), ending in a caffemodel whose
removed structures are exactly zero plus a ``_ft`` prototxt that keeps them zero while fine-tuning:

    caffessl prune --model M --weights W --policy reduction-rate --amount 0.25 --out-weights X
    caffessl prune --model M --weights W --insert-masks --out-weights X --out-model M_masked.prototxt
    caffessl prune --model M --weights W --sensitivity --policy reduction-rate --ratios 0.1,0.3,0.5
"""
from __future__ import annotations

import os


def add_arguments(p):
    from ..prune.policies import POLICIES
    p.add_argument("--model", required=True, help="the net's train_test prototxt (built in its TEST phase)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--policy", help=f"one of: {', '.join(POLICIES)}")
    p.add_argument("--amount", help="the policy's strength: zeros t (default 1e-4), reduction-rate r in [0,1), "
                                    "bn-gamma p in [0,1), mask-threshold t (default 0.01), magnitude q (x std)")
    p.add_argument("--layers", help="layers to prune, comma-separated; NAME=AMOUNT overrides the amount "
                                    "(default: every layer the policy applies to)")
    p.add_argument("--out-weights", help="the pruned caffemodel")
    p.add_argument("--out-model", help="the fine-tuning prototxt (default: <out-weights>_ft.prototxt)")
    p.add_argument("--min-channels", type=int, default=1, help="guardrail: filters every layer keeps (default 1)")
    p.add_argument("--clamp", action="store_true",
                   help="keep the strongest --min-channels filters instead of stopping when a layer would empty")
    p.add_argument("--depth", action="store_true",
                   help="a layer that would empty may go with its whole residual branch (slim makes it a Bias)")
    p.add_argument("--round-to", type=int, default=1, help="round each layer's kept filters up to a multiple")
    p.add_argument("--rounds", type=int, default=1, help="prune -> retrain rounds (needs --solver)")
    p.add_argument("--solver", help="solver for retraining after each round (its net is replaced by the _ft net)")
    p.add_argument("--data", help="folder with the MNIST IDX files (as `train --data`)")
    p.add_argument("--solverstate", help="zero this solverstate's history of the removed values")
    p.add_argument("--out-solverstate", help="where to write it (default: in place)")
    p.add_argument("--report", help="also write the per-layer report (markdown) here")
    p.add_argument("--insert-masks", action="store_true",
                   help="add a per-channel mask (Scale, L1, gamma=1) after each chosen layer instead of pruning")
    p.add_argument("--mask-decay-mult", type=float, default=1.0, help="the masks' L1 decay_mult (--insert-masks)")
    p.add_argument("--sensitivity", action="store_true", help="prune each layer alone at each of --ratios, test")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="amounts for --sensitivity")
    p.add_argument("--test-iters", type=int, default=10, help="test batches per measurement (--sensitivity)")
    p.add_argument("--out-dir", default=".", help="where --sensitivity writes sensitivity.{md,csv,png}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _insert(args):
    from ..errors import PruneError
    from ..io.caffemodel import write_caffemodel
    from ..io.prototxt import write_prototxt
    from ..net import TEST, Net
    from ..prune.masks import insert_masks
    if not args.out_weights or not args.out_model:
        raise PruneError("--insert-masks writes a new prototxt and caffemodel: give --out-model and --out-weights")
    net = Net(args.model, phase=TEST, weights=args.weights)
    param, arrays, producers = insert_masks(net, [s for s in (args.layers or "").split(",") if s],
                                            args.mask_decay_mult)
    write_prototxt(args.out_model, param)
    write_caffemodel(args.out_weights, param, arrays)
    print(f"masks after {', '.join(producers)} (L1, decay_mult {args.mask_decay_mult:g}); wrote {args.out_model} "
          f"and {args.out_weights}")
    return 0


def _sensitivity(args):
    from ..net import TEST, Net
    from ..prune.core import parse_layers
    from ..prune.sensitivity import analyze
    net = Net(args.model, phase=TEST, weights=args.weights)
    ratios = [r for r in args.ratios.split(",") if r.strip()]
    res = analyze(net, args.policy, ratios, layers=list(parse_layers(args.layers)) or None,
                  iterations=args.test_iters, progress=not args.no_progress)
    os.makedirs(args.out_dir, exist_ok=True)
    from ..io.atomic import atomic_write
    atomic_write(os.path.join(args.out_dir, "sensitivity.md"), (res.table() + "\n").encode())
    atomic_write(os.path.join(args.out_dir, "sensitivity.csv"), res.csv().encode())
    png = res.plot(os.path.join(args.out_dir, "sensitivity.png"))
    print(res.table())
    print(f"wrote sensitivity.md, sensitivity.csv and {png}")
    return 0


def run(args):
    from ..errors import PruneError
    from ..prune.files import prune_files
    from ..prune.policies import check_amount, check_policy
    if args.insert_masks:
        return _insert(args)
    if not args.policy:
        raise PruneError("give --policy (or --insert-masks)")
    check_policy(args.policy)
    if args.sensitivity:
        return _sensitivity(args)
    if not args.out_weights:
        raise PruneError("give --out-weights (where the pruned caffemodel goes)")
    amount = check_amount(args.policy, args.amount)
    results, out_model = prune_files(
        args.model, args.weights, args.policy, amount, args.out_weights, args.out_model, layers=args.layers,
        min_channels=args.min_channels, round_to=args.round_to, clamp=args.clamp, depth=args.depth,
        rounds=args.rounds, solver=args.solver, data=args.data, solverstate=args.solverstate,
        out_solverstate=args.out_solverstate, progress=not args.no_progress)
    for i, res in enumerate(results):
        if len(results) > 1:
            print(f"round {i + 1}:")
        print(res.table())
    if args.report:
        from ..io.atomic import atomic_write
        atomic_write(args.report, ("\n\n".join(r.table() for r in results) + "\n").encode())
    print(f"wrote {args.out_weights} and {out_model} (fine-tune with it: removed structures stay zero)")
    return 0
