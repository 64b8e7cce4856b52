"""One run of a sweep, in its own process: ``python -m caffessl.study.run RUN_DIR``.

RUN_DIR/run.json holds the study-level settings and the run's settings (written by the sweep). The run trains
with the solver those describe (its log goes to the process's stderr, which the sweep points at RUN_DIR/log.txt;
the snapshot goes to RUN_DIR/snap_iter_N.caffemodel), scores the TEST net, measures the features of the trained
net and writes RUN_DIR/result.json atomically -- the file whose presence marks the run finished. On an error it
writes RUN_DIR/failed.json with the one-line error instead and exits 1.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

from ..errors import CaffeSSLError, SolverConfigError
from ..io.atomic import atomic_write

MOMENTUM = {"SGD": 0.9, "Nesterov": 0.9, "Adam": 0.9, "AdaDelta": 0.95, "AdaGrad": 0.0, "RMSProp": 0.0}


def _field_text(fd, v) -> str:
    if fd.type == fd.TYPE_STRING:
        return json.dumps(str(v))
    if fd.type == fd.TYPE_BOOL:
        return "true" if v else "false"
    if fd.type == fd.TYPE_MESSAGE:
        raise SolverConfigError(f"solver field '{fd.name}' is a message: not settable from a study file")
    return str(v)


def solver_param(cfg: dict, run_dir: str):
    """The SolverParameter of one run: the study's ``solver`` fields, the net (TRAIN batch size, SSL mults
    edited), then the run's settings."""
    from ..io.prototxt import parse_text, read_net_prototxt
    from ..proto import caffe_pb2
    fields = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    lines = []
    for k, v in cfg["solver"].items():
        for item in (v if isinstance(v, list) else [v]):
            lines.append(f"{k}: {_field_text(fields[k], item)}")
    sp = parse_text("\n".join(lines), caffe_pb2.SolverParameter(), source=cfg["study"] + " (solver)")
    run = cfg["run"]
    net = read_net_prototxt(cfg["net"])
    for lp in net.layer:
        train = any(r.phase == caffe_pb2.TRAIN for r in lp.include) or (not len(lp.include) and not len(lp.exclude))
        if run["batch_size"] and train and lp.type in ("Data", "ImageData"):
            (lp.data_param if lp.type == "Data" else lp.image_data_param).batch_size = int(run["batch_size"])
        if run["ssl"] and lp.type == "Convolution":
            if not len(lp.param):
                lp.param.add()
            lp.param[0].breadth_decay_mult = 1.0
    sp.ClearField("net")
    sp.net_param.CopyFrom(net)
    sp.type = run["type"]
    sp.base_lr = run["base_lr"]
    sp.momentum = MOMENTUM[run["type"]] if run["momentum"] is None else run["momentum"]
    sp.weight_decay = run["strength"] if run["decay"] == "L2" else 0.0
    sp.decoupled_weight_decay = run["strength"] if run["decay"] == "decoupled" else 0.0
    sp.breadth_decay = run["ssl"]
    sp.random_seed = int(run["seed"])
    if run["max_iter"]:
        sp.max_iter = int(run["max_iter"])
    if not sp.HasField("lr_policy"):
        sp.lr_policy = "fixed"
    del sp.test_iter[:]
    sp.test_iter.append(int(cfg["test_iter"]))
    if not sp.HasField("test_interval"):
        sp.test_interval = sp.max_iter + 1      # no test inside the loop: measure() scores the final net
    sp.test_initialization = False
    sp.snapshot = 0
    sp.snapshot_prefix = os.path.join(run_dir, "snap")
    sp.snapshot_after_train = True
    sp.solver_mode = caffe_pb2.SolverParameter.CPU
    return sp


def _zero_channels(w) -> int:
    """Input channels whose every weight is 0 (columns SSL can remove from a conv / fc layer)."""
    if w.dim() < 2:
        return 0
    return int((w.detach().transpose(0, 1).reshape(w.shape[1], -1) != 0).any(dim=1).logical_not().sum())


def measure(solver, cfg: dict) -> dict:
    """Test error, features, zero filters/channels and FLOPs of the trained ``solver``."""
    from ..net import TEST, Net
    from ..sparsity.flops import net_flops
    from .features import feature_report
    scores = solver.test(0) or {}
    acc = scores.get("accuracy")
    test_error = None if acc is None else float(1.0 - float(np.asarray(acc).ravel()[0]))
    weights = solver.last_snapshot[0] if solver.last_snapshot else None
    net_param = solver.param.net_param

    def make():
        net = Net(net_param, TEST)
        net.share_with(solver.net)
        return net

    f = cfg["features"]
    rep = feature_report(make, int(f.get("iterations", 20)), act_threshold=float(f.get("act_threshold", 1e-12)),
                         gamma_threshold=float(f.get("gamma_threshold", 1e-3)),
                         sel_threshold=float(f.get("sel_threshold", 1e-3)), seed=int(cfg["run"]["seed"]))
    test_net = solver.test_nets[0]
    flops = net_flops(test_net)
    dense = sum(x.dense for x in flops)
    remaining = sum(x.remaining for x in flops)
    # implicit "free pruning": a dead feature's output is exactly 0, so its row and the next layer's matching
    # input columns can go (a plain chain: the next probe's input channels are this probe's features)
    by_layer = {l.layer: l for l in rep.layers}
    live_flops, prev = 0.0, None
    for x in flops:
        l = by_layer.get(x.name)
        rows_live = x.rows - len(l.inactive_act) if l else x.rows
        frac_in = 1.0
        if prev is not None and x.type == "Convolution":
            w = test_net.layer_dict[x.name].params[0]
            if w.shape[1] == prev.features:
                frac_in = 1.0 - len(prev.inactive_act) / prev.features
        live_flops += x.dense * (rows_live / x.rows) * frac_in
        prev = l
    tot = rep.totals()
    layers = []
    for l in rep.layers:
        layer = test_net.layer_dict[l.layer]
        layers.append({"layer": l.layer, "features": l.features, "inactive_by_activation": len(l.inactive_act),
                       "inactive_by_gamma": None if l.inactive_gamma is None else len(l.inactive_gamma),
                       "zero_filters": len(l.zero_filters), "zero_channels": _zero_channels(layer.params[0]),
                       "mean_selectivity": None if np.isnan(l.mean_selectivity) else l.mean_selectivity})
    return {"status": "done", "test_error": test_error, "iterations": solver.iter, "weights": weights,
            "samples": rep.samples, "passes_agree": rep.passes_agree,
            "pct_inactive_act": tot["pct_inactive_by_activation"], "pct_inactive_gamma": tot["pct_inactive_by_gamma"],
            "mean_selectivity": tot["mean_selectivity"], "zero_filters": tot["zero_filters"],
            "zero_channels": sum(x["zero_channels"] for x in layers),
            "flops_dense": dense, "pct_flops_slim": 100.0 * remaining / dense if dense else None,
            "pct_flops_live": 100.0 * live_flops / dense if dense else None, "layers": layers}


def run_one(run_dir: str, threads: int = 1) -> int:
    import torch
    from ..log import setup_logging
    from ..solver.solver import get_solver
    torch.set_num_threads(max(1, int(threads)))   # parallel runs: one intra-op thread each unless asked
    setup_logging()
    with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    try:
        sp = solver_param(cfg, run_dir)
        with open(os.path.join(run_dir, "solver.prototxt"), "w", encoding="utf-8") as fh:
            from google.protobuf import text_format
            fh.write(text_format.MessageToString(sp))
        solver = get_solver(sp, source=os.path.join(run_dir, "solver.prototxt"))
        solver.solve()
        result = measure(solver, cfg)
    except (CaffeSSLError, NotImplementedError, ValueError, RuntimeError, OSError) as e:
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        traceback.print_exc()
        atomic_write(os.path.join(run_dir, "failed.json"), json.dumps({"status": "failed", "error": msg}).encode())
        return 1
    result["run"] = cfg["run"]
    atomic_write(os.path.join(run_dir, "result.json"), (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(run_one(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))
