"""``caffessl recipe run R.yaml``: run a pruning recipe (caffessl.prune.runner): its steps in order, skipping
those already done, with a report (markdown, CSV, plots) in the work folder."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("action", choices=["run", "check"], help="run the recipe, or only check the file")
    p.add_argument("recipe", help="the recipe (YAML)")
    p.add_argument("--workdir", help="work folder (default: the recipe's workdir, else runs/recipes/<name>)")
    p.add_argument("--max-iter", type=int, help="cap every training run at this many iterations (a quick run)")
    p.add_argument("--test-iters", type=int, help="test batches (test steps and the solvers' test_iter)")
    p.add_argument("--reps", type=int, help="timing repetitions of the time steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plots", action="store_true", help="no report.png (markdown and CSV only)")


def run(args):
    from ..prune import recipe as R
    from ..prune.runner import Options, Runner
    if args.action == "check":
        r = R.load(args.recipe)
        print(f"{args.recipe}: {len(r.steps)} steps: {', '.join(s.label for s in r.steps)}")
        return 0
    runner = Runner(args.recipe, Options(args.max_iter, args.test_iters, args.reps, args.workdir,
                                         not args.no_progress, not args.no_plots))
    runner.run()
    print(f"report: {runner.workdir}/report.md, report.csv, report.png")
    return 0
