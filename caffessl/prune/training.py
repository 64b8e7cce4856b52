"""Training, testing and timing helpers shared by ``prune --rounds``, the recipe runner and the sensitivity
analysis: a solver run on a given NetParameter, the test error of a model, and forward latencies."""
from __future__ import annotations

import logging
import os
import statistics
import sys
import time

import numpy as np
import torch

from ..errors import PruneError
from ..proto import caffe_pb2

NET_FIELDS = ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param")


def solver_param(solver, net_param, overrides: dict | None = None):
    """The solver file's parameters with ``net_param`` as its net, the ``overrides`` (SolverParameter field
    names) applied, and no snapshots of its own (the caller saves the weights)."""
    from ..io.prototxt import read_solver_prototxt
    sp = read_solver_prototxt(solver) if not isinstance(solver, caffe_pb2.SolverParameter) else solver
    for f in NET_FIELDS:
        sp.ClearField(f)
    sp.net_param.CopyFrom(net_param)
    fields = sp.DESCRIPTOR.fields_by_name
    for key, value in (overrides or {}).items():
        fd = fields.get(key)
        if fd is None or key in NET_FIELDS:
            raise PruneError(f"unknown solver field '{key}'")
        try:
            if getattr(fd, "is_repeated", None) is True or getattr(fd, "label", None) == fd.LABEL_REPEATED:
                sp.ClearField(key)
                getattr(sp, key).extend(value if isinstance(value, list) else [value])
            elif fd.enum_type is not None:
                setattr(sp, key, fd.enum_type.values_by_name[str(value)].number)
            else:
                setattr(sp, key, value)
        except (TypeError, ValueError, KeyError) as e:
            raise PruneError(f"solver field '{key}': bad value {value!r} ({e})") from None
    sp.snapshot = 0
    sp.snapshot_after_train = False
    return sp


def prepare_mnist(net_param, data_dir) -> None:
    """MNIST IDX files in ``data_dir`` -> the LMDBs the net's MNIST Data layers read, when they are missing."""
    if not data_dir:
        return
    from ..data.mnist import ensure_mnist_lmdb
    folders = {os.path.dirname(lp.data_param.source) or "." for lp in net_param.layer
               if lp.type == "Data" and "mnist" in lp.data_param.source}
    for folder in sorted(folders):
        ensure_mnist_lmdb(data_dir, folder)


def train(sp, weights, out_weights, *, data=None, progress: bool = True, log_file=None, source="<recipe>"):
    """Run solver parameter ``sp`` (its net given as ``net_param``) from ``weights`` (None: the fillers) and
    save the trained weights."""
    from ..solver.solver import get_solver
    log = logging.getLogger("caffessl")
    handler = None
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    bar = None
    try:
        prepare_mnist(sp.net_param, data or os.environ.get("CAFFESSL_MNIST"))
        solver = get_solver(sp, source)
        if weights:
            solver.net.copy_from(weights)
            for tn in solver.test_nets:
                tn.copy_from(weights)
        if progress and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=sp.max_iter, unit="it", dynamic_ncols=True, leave=False, desc="train")
            solver.progress = bar
        solver.solve()
        solver.net.save(out_weights)
    finally:
        if bar is not None:
            bar.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    return out_weights


def accuracy_blob(net) -> str | None:
    return next((l.param.top[0] for l in net.layers if l.type == "Accuracy"), None)


def test_error(model, weights, iterations: int) -> dict:
    """{'error': 1 - mean accuracy, 'loss': mean loss} over ``iterations`` batches of the TEST net."""
    from ..net import TEST, Net
    net = Net(model, phase=TEST, weights=weights)
    acc = accuracy_blob(net)
    if acc is None:
        raise PruneError(f"{model}: the TEST net has no Accuracy layer to measure the error with")
    a = loss = 0.0
    with torch.no_grad():
        for _ in range(iterations):
            loss += float(net.forward_loss())
            a += float(np.asarray(net.blobs[acc].data).reshape(-1)[0])
    return {"error": 1.0 - a / iterations, "loss": loss / iterations}


def forward_ms(nets: dict, reps: int = 20) -> dict:
    """{label: {layer: median ms, 'total': sum of the medians}} for each net's non-data layers, each layer run on
    the blobs the last full forward left (one untimed forward first). The nets take turns within every
    repetition, so that a machine whose load changes affects them alike."""
    times = {}
    with torch.no_grad():
        for label, net in nets.items():
            net.forward()
            times[label] = {l.name: [] for l in net.layers if not l.is_data}
        for _ in range(reps):
            for label, net in nets.items():
                for n, v in times[label].items():
                    t0 = time.perf_counter()
                    net.forward(start=n, end=n)
                    v.append((time.perf_counter() - t0) * 1e3)
    out = {}
    for label, per in times.items():
        out[label] = {n: statistics.median(v) for n, v in per.items()}
        out[label]["total"] = sum(out[label].values())
    return out


def learnable_count(net) -> tuple[int, int]:
    """(values, non-zero values) of the weights and biases of the Convolution / InnerProduct layers."""
    total = nz = 0
    for l in net.layers:
        if l.type in ("Convolution", "InnerProduct", "Deconvolution"):
            for p in l.params:
                total += p.numel()
                nz += int((p != 0).sum())
    return total, nz


def deploy_param(net, batch: int | None = None):
    """A deploy NetParameter of a TEST net: its data layers become Input layers of the same shape (the label
    dropped; ``batch`` overrides the batch size), the layers reading labels are dropped, and a
    SoftmaxWithLoss becomes a Softmax."""
    data_tops, labels = [], set()
    for l in net.layers:
        if l.is_data:
            data_tops.append(l.param.top[0])
            labels.update(l.param.top[1:])
    out = caffe_pb2.NetParameter()
    out.name = net.name
    for t in data_tops:
        lp = out.layer.add(name=f"{t}_input", type="Input")
        lp.top.append(t)
        shape = list(net.blobs[t].shape)
        if batch:
            shape[0] = batch
        lp.input_param.shape.add().dim.extend(shape)
    for l in net.layers:
        if l.is_data:
            continue
        if labels.intersection(l.param.bottom):
            if l.type == "SoftmaxWithLoss":
                lp = out.layer.add(name=l.name, type="Softmax")
                lp.bottom.append(l.param.bottom[0])
                lp.top.append(l.param.top[0])
            continue
        lp = out.layer.add()
        lp.CopyFrom(l.param)
        lp.ClearField("include")
        lp.ClearField("exclude")
        lp.ClearField("loss_weight")
    return out


def deploy_net(model, weights, batch: int | None = None):
    from ..net import TEST, Net
    return Net(deploy_param(Net(model, phase=TEST), batch), phase=TEST, weights=weights)
