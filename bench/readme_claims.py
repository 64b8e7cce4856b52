"""Re-measure every number README.md claims, by running the README's own commands, in the README's order, in a
fresh copy of this checkout (a temp dir with ``../shared`` linked beside it), and print one table.

    python bench/readme_claims.py                 # everything (about 10 minutes on an idle 2-core machine)
    python bench/readme_claims.py --skip-suite    # without the test suite
    python bench/readme_claims.py --keep DIR --steps finetune   # go on in DIR, reading the other steps back

Each command below is checked to appear verbatim in README.md (so the README and this script cannot drift);
``caffessl`` runs as ``python -m caffessl.cli`` from the copy. Measured: wall time of each command, the final
``Test net output`` accuracy, the structure of the written caffemodels (zero conv1 filters, zero conv2 columns,
counted with numpy from the file), the slimmed nets' size and ``caffessl test`` results, the test-suite count
and time. Also checked: the from-scratch run leaves the SSL model that the fine-tune reads untouched.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MAIN = ("caffessl train --solver=solvers/lenet_ssl_solver.prototxt --data=../shared/data/mnist "
        "--weights=../shared/models/lenet/lenet_iter_10000.caffemodel")
FINETUNE = ("caffessl train --solver=solvers/lenet_ssl_finetune_solver.prototxt "
            "--weights=runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel")
SCRATCH = "caffessl train --solver=solvers/lenet_ssl_scratch_solver.prototxt --data=../shared/data/mnist"
SUITE = "python -m pytest -q tests"
SLIM = ("caffessl slim --model=models/lenet/lenet.prototxt --weights=runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel "
        "--out-model=lenet_slim.prototxt --out-weights=lenet_slim.caffemodel")
SLIM_TT = ("caffessl slim --model=models/lenet/lenet_train_test_ssl.prototxt "
           "--weights=runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel "
           "--out-model=lenet_ssl_slim.prototxt --out-weights=lenet_ssl_slim.caffemodel")
TEST_SSL = ("caffessl test --model=models/lenet/lenet_train_test_ssl.prototxt "
            "--weights=runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel --iterations=100")
TEST_SLIM = "caffessl test --model=lenet_ssl_slim.prototxt --weights=lenet_ssl_slim.caffemodel --iterations=100"
ANALYZE = ("caffessl analyze --model=models/lenet/lenet.prototxt "
           "--weights=runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel")
COMMANDS = (MAIN, FINETUNE, SCRATCH, SLIM, SLIM_TT, TEST_SSL, TEST_SLIM, ANALYZE, SUITE)


def _flat(text: str) -> str:
    """README text with shell line continuations joined and runs of spaces collapsed."""
    return re.sub(r"\s+", " ", text.replace("\\\n", " "))


def check_readme(readme: Path) -> list[str]:
    """The commands that do not appear verbatim in the README."""
    text = _flat(readme.read_text())
    return [c for c in COMMANDS if _flat(c) not in text]


def copy_checkout(dst: Path):
    """The tracked and untracked-but-not-ignored files of this checkout (what a fresh clone plus the
    working tree's changes holds)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def run(cmd: str, cwd: Path, log_dir: Path, name: str):
    """Run one README command; (seconds, stdout + stderr). Exits with the log's tail when it fails."""
    argv = cmd.split()
    if argv[0] == "caffessl":
        argv = [sys.executable, "-m", "caffessl.cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    env = dict(os.environ, PYTHONPATH=str(cwd))
    print(f"[{time.strftime('%H:%M:%S')}] {cmd}", flush=True)
    t0 = time.perf_counter()
    log = log_dir / f"{name}.log"
    with open(log, "w") as f:          # written as it runs: `tail -f` shows the progress
        p = subprocess.run(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    sec = time.perf_counter() - t0
    out = log.read_text()
    print(f"    {sec:.0f} s", flush=True)
    if p.returncode != 0:
        sys.exit(f"FAILED ({p.returncode}): {cmd}\n{out[-3000:]}")
    return sec, out


def last_accuracy(log: str) -> float:
    vals = re.findall(r"Test net output #\d+: accuracy = ([\d.eE+-]+)", log)
    if not vals:
        sys.exit("no 'Test net output #N: accuracy' line in the log")
    return float(vals[-1])


def structure(caffemodel: Path) -> dict:
    """Zero conv1 filters and zero conv2 columns, counted with numpy on the file's arrays."""
    import numpy as np

    from caffessl.io.caffemodel import read_weights
    w = {name: arrays for name, _type, arrays in read_weights(str(caffemodel))}
    c1 = np.asarray(w["conv1"][0]).reshape(20, -1)
    c2 = np.asarray(w["conv2"][0]).reshape(50, -1)
    return {"conv1_filters_kept": int((np.abs(c1).sum(1) > 0).sum()),
            "conv2_filters_kept": int((np.abs(c2).sum(1) > 0).sum()),
            "conv2_columns_removed": float((np.abs(c2).sum(0) == 0).mean())}


def digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes())
    return h.hexdigest()


STEPS = ("main", "finetune", "scratch", "slim", "suite")


class Runner:
    """Runs a step's commands, or (a step not asked for) reads back the log a previous run left in the work dir."""

    def __init__(self, work: Path, logs: Path, steps):
        self.work, self.logs, self.steps = work, logs, steps

    def __call__(self, step: str, cmd: str, name: str):
        log, secs = self.logs / f"{name}.log", self.logs / f"{name}.seconds"
        if step in self.steps:
            sec, out = run(cmd, self.work, self.logs, name)
            secs.write_text(f"{sec:.1f}")
            return sec, out
        if log.is_file():
            return (float(secs.read_text()) if secs.is_file() else float("nan")), log.read_text()
        return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared"), help="the ../shared folder")
    ap.add_argument("--skip-suite", action="store_true", help="do not run the test suite")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"comma-separated steps to run, of {','.join(STEPS)} (with --keep: the others are read "
                         f"back from that folder's logs when there)")
    ap.add_argument("--keep", help="work in this folder (kept) instead of a temp dir")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s and not (s == "suite" and args.skip_suite)]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        sys.exit(f"--steps: unknown step(s) {bad}; steps: {','.join(STEPS)}")
    missing = check_readme(REPO / "README.md")
    if missing:
        sys.exit("README.md no longer holds these commands (update this script or the README):\n  "
                 + "\n  ".join(missing))
    shared = Path(args.shared).resolve()
    if not (shared / "data" / "mnist").is_dir():
        sys.exit(f"{shared}/data/mnist is missing: the README's commands need ../shared")
    top = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="readme_claims_"))
    work, logs = top / "caffessl", top / "logs"
    if "main" in steps or not work.exists():          # a fresh copy; otherwise go on in the kept one
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        work.mkdir(parents=True)
        copy_checkout(work)
    if not (top / "shared").exists():
        (top / "shared").symlink_to(shared)
    logs.mkdir(exist_ok=True)
    sys.path.insert(0, str(work))
    step = Runner(work, logs, steps)
    rows = []       # (claim, measured, command)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
           "load_before": os.getloadavg()[0], "steps_run": steps}
    ssl_model = work / "runs/lenet_ssl/lenet_ssl_iter_5000.caffemodel"

    sec, out = step("main", MAIN, "main")
    if out is not None:
        st = structure(ssl_model)
        res["main"] = dict(seconds=sec, accuracy=last_accuracy(out), **st)
        rows += [("main job: wall time", f"{sec:.0f} s", MAIN),
                 ("main job: test accuracy", f"{100 * res['main']['accuracy']:.2f} %", MAIN),
                 ("main job: conv1 filters removed", f"{20 - st['conv1_filters_kept']} of 20", MAIN),
                 ("main job: conv2 columns removed", f"{100 * st['conv2_columns_removed']:.1f} %", MAIN)]
    ssl_files = list((work / "runs/lenet_ssl").glob("lenet_ssl_iter_5000.*"))
    ssl_digest = digest(ssl_files) if ssl_files else None

    sec, out = step("finetune", FINETUNE, "finetune")
    if out is not None:
        ft = structure(work / "runs/lenet_ssl/lenet_ssl_ft_iter_8000.caffemodel")
        res["finetune"] = dict(seconds=sec, accuracy=last_accuracy(out), **ft)
        rows += [("fine-tune: wall time", f"{sec:.0f} s", FINETUNE),
                 ("fine-tune: test error", f"{100 * (1 - res['finetune']['accuracy']):.2f} %", FINETUNE),
                 ("fine-tune: structure kept (conv1 / conv2 filters)",
                  f"{ft['conv1_filters_kept']}/20, {ft['conv2_filters_kept']}/50", FINETUNE)]

    sec, out = step("scratch", SCRATCH, "scratch")
    if out is not None:
        sc = structure(work / "runs/lenet_ssl_scratch/lenet_ssl_scratch_iter_5000.caffemodel")
        res["scratch"] = dict(seconds=sec, accuracy=last_accuracy(out), **sc)
        untouched = "n/a (no main job in this folder)" if ssl_digest is None else \
            ("yes" if digest(ssl_files) == ssl_digest else "NO")
        res["scratch"]["ssl_model_untouched"] = untouched
        rows += [("from scratch: wall time", f"{sec:.0f} s", SCRATCH),
                 ("from scratch: test accuracy", f"{100 * res['scratch']['accuracy']:.2f} %", SCRATCH),
                 ("from scratch: conv1 filters kept", f"{sc['conv1_filters_kept']} of 20", SCRATCH),
                 ("from scratch: the main job's SSL model untouched", untouched, SCRATCH)]

    sec, out = step("slim", SLIM, "slim")
    if out is not None:
        m = re.search(r"learnable values (\d+) -> (\d+)", out)
        layers = {r[0]: (int(r[2]), int(r[3]))
                  for r in re.findall(r"^(conv1|conv2)\s+(\S+)\s+(\d+)\s+(\d+)", out, re.M)}
        res["slim"] = {"values": [int(m.group(1)), int(m.group(2))] if m else None, "layers": layers}
        rows += [("slim (deploy): conv1 / conv2 filters",
                  ", ".join(f"{k} {a} -> {b}" for k, (a, b) in layers.items()), SLIM),
                 ("slim (deploy): learnable values", f"{m.group(1)} -> {m.group(2)}" if m else "?", SLIM)]
        step("slim", SLIM_TT, "slim_train_test")
        tests = {}
        for name, cmd in (("unslimmed", TEST_SSL), ("slimmed", TEST_SLIM)):
            _sec, out = step("slim", cmd, f"test_{name}")
            acc = re.findall(r"\] accuracy = ([\d.eE+-]+)", out)
            loss = re.findall(r"\] Loss: ([\d.eE+-]+)", out)
            tests[name] = (float(acc[-1]), float(loss[-1]))
        res["slim"]["test"] = tests
        rows.append(("caffessl test, slimmed train_test net (accuracy, loss)",
                     f"{100 * tests['slimmed'][0]:.2f} %, {tests['slimmed'][1]:g} (unslimmed: "
                     f"{100 * tests['unslimmed'][0]:.2f} %, {tests['unslimmed'][1]:g})", TEST_SLIM))
        _sec, out = step("slim", ANALYZE, "analyze")
        sp = re.search(r"speedup:.*", out)
        res["analyze"] = sp.group(0) if sp else None
        rows.append(("analyze: the fork's speedup line", res["analyze"] or "?", ANALYZE))

    sec, out = step("suite", SUITE, "suite")
    if out is not None:
        summary = out.strip().splitlines()[-1]
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed|xfailed|xpassed|errors?)",
                                                   summary)}
        res["suite"] = dict(seconds=sec, summary=summary, **counts)
        rows += [("test suite: tests", f"{counts.get('passed', 0)} passed, {counts.get('skipped', 0)} skipped",
                  SUITE),
                 ("test suite: wall time", f"{sec:.0f} s", SUITE)]
    res["load_after"] = os.getloadavg()[0]

    print(f"\nREADME claims re-measured {res['date']}, {res['cpus']} CPUs, load average {res['load_before']:.1f} "
          f"before / {res['load_after']:.1f} after; steps run: {','.join(steps)}\n")
    w = max((len(r[0]) for r in rows), default=5)
    print(f"| {'claim':<{w}} | measured | command |\n|{'-' * (w + 2)}|---|---|")
    for claim, measured, cmd in rows:
        print(f"| {claim:<{w}} | {measured} | `{cmd}` |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    if not args.keep:                  # the logs go with the temp dir; --keep DIR keeps them
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
