"""``caffessl sweep study.yaml``: train every run of a study file (caffessl/study/config.py) in parallel processes,
then one table (markdown + CSV) and plots.

Each run lives in ``OUT/<run name>/``: run.json (its settings), solver.prototxt, log.txt, the final snapshot, and
result.json once it finished (or failed.json with its error). A run whose result.json exists for the same
settings is not rerun, so a sweep interrupted with Ctrl-C (the running processes are stopped) resumes where it
was; a failed run is retried on the next invocation, and is marked failed in the table without stopping the
others.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

from ..io.atomic import atomic_write
from ..io.files import file_sha256

COLUMNS = ("run", "type", "base_lr", "decay", "strength", "batch_size", "ssl", "seed", "status", "test_error",
           "pct_inactive_act", "pct_inactive_gamma", "mean_selectivity", "zero_filters", "zero_channels",
           "pct_flops_slim", "pct_flops_live", "error")


def _run_cfg(study, run) -> dict:
    """Everything a run's result depends on (the net file's content too): a stored run with other settings reruns."""
    return {"study": study.path, "net": study.net, "net_sha256": file_sha256(study.net), "solver": study.solver,
            "test_iter": study.test_iter, "features": study.features, "run": run}


# the worker runs this caffessl, whatever the current folder holds (``python -m`` would put the cwd first)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WORKER = ("import sys; sys.path.insert(0, {root!r}); from caffessl.study.run import run_one; "
           "sys.exit(run_one(sys.argv[1], int(sys.argv[2])))")


def run_state(run_dir: str, cfg: dict) -> dict | None:
    """The stored result of a finished run with these settings, else None."""
    try:
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
            if json.load(f) != cfg:
                return None
        with open(os.path.join(run_dir, "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _failure(run_dir: str, rc: int) -> dict:
    try:
        with open(os.path.join(run_dir, "failed.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        tail = ""
        try:
            with open(os.path.join(run_dir, "log.txt"), encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return {"status": "failed", "error": f"exit code {rc}: {tail}"[:300]}


def prepare_data(study) -> None:
    """Convert MNIST IDX files (``data:``) into the folders of the net's missing Data sources (as ``train --data``)."""
    if not study.data:
        return
    from ..data.mnist import ensure_mnist_lmdb
    from ..errors import DataSourceError
    from ..io.prototxt import read_net_prototxt
    if not os.path.isdir(study.data):
        raise DataSourceError(f"{study.path}: data: '{study.data}' is not a folder (it should hold the four MNIST "
                              f"IDX files)")
    missing = {os.path.dirname(lp.data_param.source) or "." for lp in read_net_prototxt(study.net).layer
               if lp.type == "Data" and not os.path.exists(lp.data_param.source)}
    for out_dir in sorted(missing):
        ensure_mnist_lmdb(study.data, out_dir)


def sweep(study, jobs: int = 1, threads: int = 1, progress=None, log=print) -> list[dict]:
    """Run the study's runs (at most ``jobs`` at once, each with ``threads`` torch threads); return one row per
    run (finished, failed or skipped)."""
    os.makedirs(study.out, exist_ok=True)
    prepare_data(study)
    results: dict = {}
    todo = []
    for run in study.runs:
        cfg = _run_cfg(study, run)
        d = os.path.join(study.out, run["name"])
        done = run_state(d, cfg)
        if done is not None:
            results[run["name"]] = done
            log(f"{run['name']}: finished earlier, skipped")
        else:
            todo.append((run, cfg, d))
    running: dict = {}
    env = dict(os.environ)
    try:
        while todo or running:
            while todo and len(running) < max(1, jobs):
                run, cfg, d = todo.pop(0)
                os.makedirs(d, exist_ok=True)
                for stale in ("result.json", "failed.json"):
                    if os.path.exists(os.path.join(d, stale)):
                        os.remove(os.path.join(d, stale))
                atomic_write(os.path.join(d, "run.json"), json.dumps(cfg, indent=1).encode("utf-8"))
                logf = open(os.path.join(d, "log.txt"), "w", encoding="utf-8")
                p = subprocess.Popen([sys.executable, "-c", _WORKER.format(root=_ROOT), d, str(threads)],
                                     stdout=logf,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
                running[p.pid] = (p, run, d, logf)
                log(f"{run['name']}: started (pid {p.pid})")
            time.sleep(0.2)
            for pid, (p, run, d, logf) in list(running.items()):
                rc = p.poll()
                if rc is None:
                    continue
                logf.close()
                del running[pid]
                res = run_state(d, _run_cfg(study, run)) if rc == 0 else None
                results[run["name"]] = res if res is not None else _failure(d, rc)
                log(f"{run['name']}: {results[run['name']]['status']}"
                    + (f" ({results[run['name']].get('error')})" if results[run["name"]]["status"] != "done" else ""))
                if progress is not None:
                    progress.update(1)
    except KeyboardInterrupt:
        for p, run, d, logf in running.values():     # stop only the processes this sweep started
            p.terminate()
        for p, run, d, logf in running.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
            logf.close()
        raise
    return [dict(results[r["name"]], run=r) for r in study.runs]


def rows(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        r = res["run"]
        row = {"run": r["name"], "type": r["type"], "base_lr": r["base_lr"], "decay": r["decay"],
               "strength": r["strength"], "batch_size": r["batch_size"] or "", "ssl": r["ssl"], "seed": r["seed"],
               "status": res.get("status", "failed"), "error": res.get("error", "")}
        for k in COLUMNS[9:-1]:
            row[k] = res.get(k)
        out.append(row)
    return out


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(table: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table:
        lines.append("| " + " | ".join(_cell(row[c]).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines)


def csv_text(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in table:
        w.writerow({c: "" if row[c] is None else row[c] for c in COLUMNS})
    return buf.getvalue()


def write_outputs(study, results: list[dict], plots: bool = True) -> list[str]:
    table = rows(results)
    paths = [os.path.join(study.out, "results.md"), os.path.join(study.out, "results.csv")]
    atomic_write(paths[0], (markdown_table(table) + "\n").encode("utf-8"))
    atomic_write(paths[1], csv_text(table).encode("utf-8"))
    if plots and any(r.get("status") == "done" for r in results):
        from .plot import plot_sweep_layers, plot_sweep_strength
        paths.append(plot_sweep_strength(results, os.path.join(study.out, "sparsity_vs_strength.png")))
        paths.append(plot_sweep_layers(results, os.path.join(study.out, "inactive_per_layer.png")))
    return paths
