"""Running a recipe (``caffessl recipe run R.yaml``): the steps in order, each writing its files into the
work folder (``<workdir>/NN_<step>.*``) and, last, ``NN_<step>.json`` with its settings and measurements. A rerun
skips every step whose json and files exist with the same settings *and the same contents* (resume after an
interruption: every file is written to a temporary name and renamed, so a step killed half-way left nothing that
looks done), and reruns every step after the first one it cannot skip. Contents: the step's json records the
SHA-256 of every input it names (the recipe's net, weights and data files, the step's solver / net / weights)
and of the model and weights it wrote; an edited solver or prototxt, replaced weights or a damaged output makes
the step (and every later one) run again. The report (``report.md``, ``report.csv``, plots) is
rewritten after each step.

Net state carried from step to step: the current model + weights (``train``/``finetune`` write weights,
``prune`` writes weights + the fine-tuning prototxt, ``slim`` a smaller prototxt + weights), the *dense* model
(the last one before the first prune: what ``time`` compares with) and the *masked* one (the last before
``slim``).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

from ..errors import CaffeSSLError, RecipeError
from ..io.atomic import atomic_write
from ..io.files import file_sha256
from . import recipe as R
from . import training as T
from .report import write_report


@dataclass
class Options:
    max_iter: int | None = None       # cap every train/finetune/retrain run (CI's reduced form)
    test_iters: int | None = None     # test batches (test steps and the solvers' test_iter)
    reps: int | None = None           # timing repetitions
    workdir: str | None = None
    progress: bool = True
    plots: bool = True                # report.png at the end of the run


def _overrides(step_over, opts: Options, solver_path) -> dict:
    over = dict(step_over or {})
    if opts.max_iter:
        from ..io.prototxt import read_solver_prototxt
        sp = read_solver_prototxt(solver_path)
        over["max_iter"] = min(int(over.get("max_iter", sp.max_iter)), opts.max_iter)
        over.setdefault("display", max(1, opts.max_iter // 2))
    if opts.test_iters:
        over["test_iter"] = [opts.test_iters]
    return over


def _counts(model, weights) -> dict:
    """Learnable values (all / non-zero) of the conv/IP layers, remaining MACs per layer."""
    from ..net import TEST, Net
    from ..sparsity.flops import net_flops
    net = Net(model, phase=TEST, weights=weights)
    total, nz = T.learnable_count(net)
    flops = {f.name: f.remaining for f in net_flops(net)}
    return {"params": total, "nonzero": nz, "flops": sum(flops.values()), "layer_flops": flops}


def digest(path) -> str:
    """SHA-256 of a file's bytes; of a folder, of its files' names and sizes (a data set: not read whole);
    'missing' when absent."""
    if not path or not os.path.exists(path):
        return "missing"
    if not os.path.isdir(path):
        return file_sha256(path) or "missing"
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(f"{os.path.relpath(full, path)}\0{os.path.getsize(full)}\0".encode())
    return "dir:" + h.hexdigest()


class Runner:
    def __init__(self, path, opts: Options | None = None):
        self.recipe = R.load(path)
        self.opts = opts or Options()
        r = self.recipe
        self.workdir = self.opts.workdir or r.workdir or os.path.join("runs", "recipes", r.name)
        self.test_iters = self.opts.test_iters or r.test_iters
        self.state = {"model": r.net, "weights": r.weights, "dense_model": r.net, "dense_weights": r.weights,
                      "masked_model": None, "masked_weights": None, "pruned": False,
                      "dense_fixed": bool(r.weights)}
        self.rows: list[dict] = []
        self._digests: dict = {}        # (path, size, mtime_ns) -> digest: each file is read once per run

    # -- steps -----------------------------------------------------------------------------------------
    def _out(self, step, ext):
        return os.path.join(self.workdir, f"{step.stem}{ext}")

    def _train(self, step):
        a, s = step.args, self.state
        from ..io.prototxt import read_net_prototxt
        model = a.get("net") or s["model"]
        weights = s["weights"] if "weights" not in a else (None if a["weights"] in (None, "none") else a["weights"])
        sp = T.solver_param(a["solver"], read_net_prototxt(model), _overrides(a.get("overrides"), self.opts,
                                                                              a["solver"]))
        out = self._out(step, ".caffemodel")
        T.train(sp, weights, out, data=self.recipe.data, progress=self.opts.progress,
                log_file=self._out(step, ".log"), source=a["solver"])
        s.update(model=model, weights=out)
        if not s["pruned"] and not s.get("dense_fixed"):     # the dense reference: the recipe's weights,
            s.update(dense_model=model, dense_weights=out, dense_fixed=True)   # else the first training
        return {"iterations": sp.max_iter}

    def _prune(self, step):
        a, s = step.args, self.state
        if a.get("insert_masks"):
            from ..io.caffemodel import write_caffemodel
            from ..io.prototxt import write_prototxt
            from ..net import TEST, Net
            from .masks import insert_masks
            net = Net(s["model"], phase=TEST, weights=s["weights"])
            param, arrays, producers = insert_masks(net, a.get("layers"), float(a.get("mask_decay_mult", 1.0)))
            model, weights = self._out(step, ".prototxt"), self._out(step, ".caffemodel")
            write_prototxt(model, param)
            write_caffemodel(weights, param, arrays)
            s.update(model=model, weights=weights)
            return {"masks": producers}
        from .files import prune_files
        solver = a.get("solver")
        over = _overrides(a.get("overrides"), self.opts, solver) if solver else None
        out = self._out(step, ".caffemodel")
        results, ft = prune_files(s["model"], s["weights"], a.get("policy"), a.get("amount"), out,
                                  self._out(step, "_ft.prototxt"), layers=a.get("layers"),
                                  min_channels=int(a.get("min_channels", 1)), round_to=int(a.get("round_to", 1)),
                                  clamp=bool(a.get("clamp", False)), depth=bool(a.get("depth", False)),
                                  rounds=int(a.get("rounds", 1)), solver=solver,
                                  overrides=over, data=self.recipe.data, progress=self.opts.progress,
                                  log_file=self._out(step, ".log"))
        atomic_write(self._out(step, "_report.md"), "\n\n".join(r.table() for r in results).encode() + b"\n")
        s.update(model=ft, weights=out, pruned=True)
        b, _ = results[0].nonzero
        return {"policy": a.get("policy"), "nonzero_before": b, "nonzero_after": results[-1].nonzero[1]}

    def _slim(self, step):
        import numpy as np

        from ..net import TEST, Net
        from ..sparsity.slim import check, slim, write
        s = self.state
        net = Net(s["model"], phase=TEST, weights=s["weights"])
        result = slim(net, depth=bool(step.args.get("depth", True)))
        diffs = check(net, result)
        scale = max([float(np.abs(net.blobs[k].data).max()) for k in diffs] + [1.0])
        worst = max(diffs.values(), default=0.0)
        if worst > 1e-4 * scale:
            raise CaffeSSLError(f"step {step.index} slim: the slimmed net differs from the pruned one by "
                                f"{worst:.3g} (scale {scale:.3g})")
        model, weights = self._out(step, ".prototxt"), self._out(step, ".caffemodel")
        write(result, model, weights)
        s.update(masked_model=s["model"], masked_weights=s["weights"], model=model, weights=weights)
        return {"channels_removed": result.removed, "check_max_diff": worst}

    def _test(self, step):
        iters = int(step.args.get("iters") or self.test_iters)
        return T.test_error(self.state["model"], self.state["weights"], iters)

    def _time(self, step):
        a, s = step.args, self.state
        reps = int(self.opts.reps or a.get("reps", 20))
        batch = a.get("batch")
        layers = a.get("layers")
        nets = {"dense": (s["dense_model"], s["dense_weights"]), "current": (s["model"], s["weights"])}
        if s["masked_model"]:
            nets["masked"] = (s["masked_model"], s["masked_weights"])
        measured = T.forward_ms({k: T.deploy_net(m, w, batch) for k, (m, w) in nets.items()}, reps)
        out = {}
        for label, ms in measured.items():
            out[f"{label}_ms"] = ms["total"]
            for n in layers or []:
                if n not in ms:
                    raise RecipeError(f"{self.recipe.path}:{step.line}: time: no layer '{n}' in the {label} net")
                out[f"{label}_{n}_ms"] = ms[n]
            if layers:
                out[f"{label}_layers_ms"] = sum(ms[n] for n in layers)
        out["speedup"] = out["dense_ms"] / out["current_ms"]
        if layers:
            out["layers_speedup"] = out["dense_layers_ms"] / out["current_layers_ms"]
        return out

    def _export(self, step):
        from ..export.onnx import export
        fmt = step.args.get("format", "onnx")
        if fmt != "onnx":
            raise RecipeError(f"{self.recipe.path}:{step.line}: export format '{fmt}' (only onnx)")
        path = self._out(step, ".onnx")
        export(T.deploy_net(self.state["model"], self.state["weights"], 1), path)
        return {"onnx": path}

    # -- the loop --------------------------------------------------------------------------------------
    def _digest(self, path) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = digest(path)
        return self._digests[key]

    def _inputs(self, step) -> dict:
        """{path: digest} of what the step reads besides the previous steps' outputs."""
        r, a = self.recipe, step.args
        paths = [r.net, r.weights, r.data] + [a.get(k) for k in ("solver", "net", "weights")]
        return {p: self._digest(p) for p in paths if isinstance(p, str) and p and p != "none"}

    def _config(self, step) -> dict:
        return {"kind": step.kind, "args": step.args, "max_iter": self.opts.max_iter,
                "test_iters": self.test_iters, "net": self.recipe.net, "weights": self.recipe.weights,
                "inputs": self._inputs(step)}

    def _outputs(self) -> dict:
        return {self.state[k]: self._digest(self.state[k]) for k in ("model", "weights") if self.state.get(k)}

    def _done(self, step, dirty: bool):
        path = self._out(step, ".json")
        if dirty or not os.path.exists(path):
            return None
        with open(path) as f:
            rec = json.load(f)
        if rec.get("config") != json.loads(json.dumps(self._config(step))):
            return None
        outputs = rec.get("outputs") or {}
        files = [v for k, v in rec["state"].items() if k in ("model", "weights") and v]
        return rec if files and all(outputs.get(f) == self._digest(f) != "missing" for f in files) else None

    def run(self, log=print) -> list:
        os.makedirs(self.workdir, exist_ok=True)
        from ..io.prototxt import read_net_prototxt
        T.prepare_mnist(read_net_prototxt(self.recipe.net), self.recipe.data)
        steps = self.recipe.steps
        run_steps = {"train": self._train, "finetune": self._train, "prune": self._prune, "slim": self._slim,
                     "test": self._test, "time": self._time, "export": self._export}
        dirty = False
        bar = None
        if self.opts.progress and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=len(steps), desc=self.recipe.name, unit="step", leave=False)
        try:
            for step in steps:
                rec = self._done(step, dirty)
                if rec is not None:
                    self.state = rec["state"]
                    self.rows.append(rec["row"])
                    log(f"[{step.index + 1}/{len(steps)}] {step.label}: done before, skipped")
                else:
                    dirty = True
                    t0 = time.perf_counter()
                    try:
                        metrics = run_steps[step.kind](step)
                    except CaffeSSLError as e:
                        raise type(e)(f"{self.recipe.path}:{step.line}: step {step.index + 1} ({step.kind}): "
                                      f"{e}") from None
                    row = {"step": step.index + 1, "kind": step.kind, "label": step.label,
                           "seconds": round(time.perf_counter() - t0, 2), **metrics,
                           **_counts(self.state["model"], self.state["weights"])}
                    self.rows.append(row)
                    rec = {"config": self._config(step), "state": self.state, "row": row,
                           "outputs": self._outputs()}
                    atomic_write(self._out(step, ".json"), json.dumps(rec, indent=1, default=str).encode())
                    log(f"[{step.index + 1}/{len(steps)}] {step.label}: {summary(row)}")
                write_report(self.recipe, self.rows, self.workdir, with_plots=False)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        write_report(self.recipe, self.rows, self.workdir, with_plots=self.opts.plots)
        return self.rows


def summary(row) -> str:
    parts = []
    if "error" in row:
        parts.append(f"error {100 * row['error']:.2f} %")
    parts.append(f"non-zero {row['nonzero']}/{row['params']}")
    parts.append(f"MACs {row['flops']}")
    if "speedup" in row:
        parts.append(f"forward {row['dense_ms']:.2f} -> {row['current_ms']:.2f} ms ({row['speedup']:.2f}x)")
    parts.append(f"{row['seconds']:.1f} s")
    return ", ".join(parts)
