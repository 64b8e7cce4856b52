"""``caffessl sweep study.yaml``: a grid or list of solver settings on one net and data, trained in parallel
processes (``--jobs``), resumable (finished runs are skipped); then a markdown + CSV table (test error, inactive
features by activation and by γ, selectivity, zero filters/channels, FLOPs) and plots in the study's ``out``."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("study", help="the study file (YAML; see caffessl/study/config.py)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: parallel runs on few "
                                                           "cores go much faster single-threaded)")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def run(args):
    import sys
    from ..errors import CaffeSSLError
    from ..study.config import load_study
    from ..study.sweep import markdown_table, rows, sweep, write_outputs
    if args.jobs < 1 or args.threads < 1:
        raise CaffeSSLError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    study = load_study(args.study)
    bar = None
    if sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=len(study.runs), unit="run", leave=False)
    try:
        results = sweep(study, jobs=args.jobs, threads=args.threads, progress=bar,
                        log=(bar.write if bar is not None else lambda m: print(m, file=sys.stderr)))
    finally:
        if bar is not None:
            bar.close()
    print(markdown_table(rows(results)))
    for path in write_outputs(study, results, plots=not args.no_plots):
        print(f"Wrote {path}")
    failed = [r["run"]["name"] for r in results if r.get("status") != "done"]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
