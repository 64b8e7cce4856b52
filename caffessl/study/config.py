"""The study file of ``caffessl sweep``: YAML, validated with line numbers (an unknown key is named with its line).

::

    net: models/implicit_sparsity/basicnet_mnist_train_test.prototxt   # one train/test net (Data layers)
    data: ../shared/data/mnist        # optional: MNIST IDX folder, converted to the net's LMDBs if missing
    out: runs/implicit_mnist          # one folder per run: solver/net prototxt, log, snapshot, result.json
    solver:                           # SolverParameter fields shared by every run (prototxt names)
      max_iter: 2000
      lr_policy: fixed
    test_iter: 100                    # TEST batches for the test error
    features: {iterations: 20, act_threshold: 1e-12, gamma_threshold: 1e-3, sel_threshold: 1e-3}
    defaults: {type: SGD, base_lr: 0.01, decay: L2, strength: 0, batch_size: 64, ssl: 0, seed: 1}
    grid:                             # a cartesian product over run keys ...
      type: [SGD, Adam]
      strength: [0, 1e-4]
    runs:                             # ... and/or an explicit list (each merged over `defaults`)
      - {type: Adam, base_lr: 0.001, decay: decoupled, strength: 1e-4}

Run keys: ``name``, ``type`` (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam), ``base_lr`` (a number, or a
mapping from solver type to number), ``momentum``, ``decay`` (``L2``: Caffe's weight_decay in the gradient;
``decoupled``: decoupled_weight_decay; ``none``), ``strength`` (λ of that decay), ``batch_size`` (of the TRAIN
Data layers), ``ssl`` (breadth_decay, with breadth_decay_mult 1 on every Convolution weight), ``seed``
(random_seed), ``max_iter``.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass

from ..errors import CaffeSSLError
from ..io.yaml_file import compose_file

TOP_KEYS = ("net", "data", "out", "solver", "test_iter", "features", "defaults", "grid", "runs")
RUN_KEYS = ("name", "type", "base_lr", "momentum", "decay", "strength", "batch_size", "ssl", "seed", "max_iter")
FEATURE_KEYS = ("iterations", "act_threshold", "gamma_threshold", "sel_threshold")
TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
DECAYS = ("L2", "decoupled", "none")
DEFAULTS = {"type": "SGD", "base_lr": 0.01, "momentum": None, "decay": "L2", "strength": 0.0, "batch_size": None,
            "ssl": 0.0, "seed": 1, "max_iter": None}


class StudyFileError(CaffeSSLError):
    """A study file that cannot be used; the message names the file and line."""


@dataclass
class Study:
    path: str
    net: str
    data: str | None
    out: str
    solver: dict
    test_iter: int
    features: dict
    runs: list          # list of dicts (every RUN_KEY set, plus "name")


def _check_keys(node, allowed, path, where):
    import yaml
    if not isinstance(node, yaml.MappingNode):
        raise StudyFileError(f"{path}:{node.start_mark.line + 1}: {where} must be a mapping")
    for k, _ in node.value:
        if k.value not in allowed:
            raise StudyFileError(f"{path}:{k.start_mark.line + 1}: unknown key '{k.value}' in {where} (known: "
                                 f"{', '.join(allowed)})")


def _line_of(node, key) -> int:
    for k, v in node.value:
        if k.value == key:
            return v.start_mark.line + 1
    return node.start_mark.line + 1


def _fmt(v) -> str:
    s = f"{v:g}" if isinstance(v, float) else str(v)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", s)


def run_name(r: dict) -> str:
    if r.get("name"):
        return str(r["name"])
    decay = "none" if r["decay"] == "none" or not r["strength"] else f"{r['decay']}{_fmt(float(r['strength']))}"
    parts = [r["type"], f"lr{_fmt(float(r['base_lr']))}", decay]
    if r["batch_size"]:
        parts.append(f"bs{r['batch_size']}")
    if r["ssl"]:
        parts.append(f"ssl{_fmt(float(r['ssl']))}")
    if r["max_iter"]:
        parts.append(f"it{r['max_iter']}")
    if r["momentum"] is not None:
        parts.append(f"m{_fmt(float(r['momentum']))}")
    parts.append(f"s{r['seed']}")
    return "_".join(parts)


def _check_run(r: dict, path: str, line: int) -> dict:
    def bad(msg):
        raise StudyFileError(f"{path}:{line}: {msg}")
    if r["type"] not in TYPES:
        bad(f"type '{r['type']}' is not one of {', '.join(TYPES)}")
    if isinstance(r["base_lr"], dict):        # per solver type: {SGD: 0.01, Adam: 0.001}
        if r["type"] not in r["base_lr"]:
            bad(f"base_lr gives no value for type {r['type']} (it has {', '.join(map(str, r['base_lr']))})")
        r["base_lr"] = r["base_lr"][r["type"]]
    if r["decay"] not in DECAYS:
        bad(f"decay '{r['decay']}' is not one of {', '.join(DECAYS)}")
    for k in ("base_lr", "strength", "ssl"):
        try:
            r[k] = float(r[k])
        except (TypeError, ValueError):
            bad(f"{k} must be a number, got {r[k]!r}")
        if not (math.isfinite(r[k]) and r[k] >= 0):
            bad(f"{k} must be a finite number >= 0, got {r[k]}")
    for k in ("batch_size", "max_iter", "seed"):
        if r[k] is not None and (not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < (0 if k == "seed"
                                                                                                   else 1)):
            bad(f"{k} must be a {'non-negative' if k == 'seed' else 'positive'} integer, got {r[k]!r}")
    if r["momentum"] is not None:
        r["momentum"] = float(r["momentum"])
    r["name"] = run_name(r)
    return r


def load_study(path) -> Study:
    import yaml
    path = os.fspath(path)
    text, root = compose_file(path, StudyFileError, "study file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:   # e.g. a tag composition accepts but safe construction refuses
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise StudyFileError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    _check_keys(root, TOP_KEYS, path, "the study file")
    nodes = {k.value: v for k, v in root.value}
    for need in ("net", "out"):
        if need not in data:
            raise StudyFileError(f"{path}: missing key '{need}'")
    if "features" in nodes:
        _check_keys(nodes["features"], FEATURE_KEYS, path, "features")
    if "solver" in nodes:
        from ..proto import caffe_pb2
        fields = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
        _check_keys(nodes["solver"], list(fields), path, "solver")
    defaults = dict(DEFAULTS)
    if "defaults" in nodes:
        _check_keys(nodes["defaults"], RUN_KEYS, path, "defaults")
        defaults.update(data["defaults"] or {})
    runs = []
    if "grid" in nodes:
        g = nodes["grid"]
        _check_keys(g, RUN_KEYS, path, "grid")
        keys = list(data["grid"])
        values = []
        for k in keys:
            v = data["grid"][k]
            if not isinstance(v, list) or not v:
                raise StudyFileError(f"{path}:{_line_of(g, k)}: grid key '{k}' must be a non-empty list")
            values.append(v)
        for combo in itertools.product(*values):
            r = dict(defaults)
            r.update(zip(keys, combo))
            runs.append(_check_run(r, path, g.start_mark.line + 1))
    if "runs" in nodes:
        seq = nodes["runs"]
        if not isinstance(data["runs"], list):
            raise StudyFileError(f"{path}:{seq.start_mark.line + 1}: runs must be a list of mappings")
        for node, item in zip(seq.value, data["runs"]):
            _check_keys(node, RUN_KEYS, path, "a run")
            r = dict(defaults)
            r.update(item)
            runs.append(_check_run(r, path, node.start_mark.line + 1))
    if not runs:
        raise StudyFileError(f"{path}: no runs: give a `grid` or a `runs` list")
    seen = {}
    for r in runs:
        if r["name"] in seen:
            raise StudyFileError(f"{path}: two runs are both named '{r['name']}'")
        seen[r["name"]] = r
    feats = {"iterations": 20}
    feats.update(data.get("features") or {})
    return Study(path=path, net=str(data["net"]), data=data.get("data"), out=str(data["out"]),
                 solver=dict(data.get("solver") or {}), test_iter=int(data.get("test_iter", 100)),
                 features=feats, runs=runs)
