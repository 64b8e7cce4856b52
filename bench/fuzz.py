"""Fuzz every reader and Net set-up: each input runs in a worker process under a memory limit (RLIMIT_AS) and
a per-input time limit; outcomes are tallied as accepted / typed error / other exception / hang / memory
blow-up / crash. The long profile (default) tries >= 10,000 inputs per target; CI runs a short, derandomized
profile (tests/fuzz/test_fuzz.py).

    python bench/fuzz.py                  # long profile: 10000 inputs per target
    python bench/fuzz.py -n 500 --seed 3  # quicker, another seed
    python bench/fuzz.py --only h5        # targets whose name contains 'h5'

Exit status 1 when any input ended as other exception, hang, memory blow-up or crash (examples are printed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.fuzz.harness import Worker, run_target, table  # noqa: E402
from tests.fuzz.targets import targets  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10000, help="inputs per target (default 10000)")
    ap.add_argument("--seed", type=int, default=1, help="mutation and hypothesis seed")
    ap.add_argument("--mem-mb", type=int, default=1536, help="worker memory limit above its start (RLIMIT_AS)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds per input before it counts as a hang (set-up of a net near the net limit takes "
                         "a few seconds on an idle core; the rest is margin for a loaded machine)")
    ap.add_argument("--only", default="", help="run the targets whose name contains this (comma: any of these)")
    args = ap.parse_args(argv)
    worker = Worker(mem_mb=args.mem_mb, timeout=args.timeout)
    tallies = []
    t0 = time.time()
    try:
        for t in targets():
            if args.only and not any(part in t.name for part in args.only.split(",")):
                continue
            tally = run_target(worker, t, args.n, args.seed, derandomize=False,
                               report=lambda line: print(line, flush=True))
            tallies.append(tally)
            print(f"{t.name}: {tally.tried} inputs in {tally.seconds:.0f} s {tally.counts}", flush=True)
    finally:
        worker.close()
    print()
    print(f"command: python bench/fuzz.py -n {args.n} --seed {args.seed} --mem-mb {args.mem_mb} "
          f"--timeout {args.timeout:g}{' --only ' + args.only if args.only else ''}  ({time.time() - t0:.0f} s, "
          f"worker restarts: {worker.restarts})")
    print(table(tallies))
    return 1 if any(t.bad for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
