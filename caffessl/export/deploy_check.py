"""Export takes a deploy net: refuse a train/test prototxt (data layers, losses) before it is built (its data
sources need not exist), naming the layer and pointing to the deploy prototxt beside it."""
from __future__ import annotations

import os
import re

from ..errors import ExportError

DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "HDF5Output"}
_DEPLOY = re.compile(r'type\s*:\s*"Input"|^\s*input(_dim|_shape)?\s*:|\btype\s*:\s*INPUT\b', re.M)
_TRAIN = re.compile(r'type\s*:\s*"(' + "|".join(sorted(DATA_TYPES)) + r'|\w*Loss|Accuracy)"')


def is_training_type(layer_type: str) -> bool:
    """A data, loss or accuracy layer: found in train/test nets, not in deploy nets."""
    return layer_type in DATA_TYPES or layer_type.endswith("Loss") or layer_type == "Accuracy"


def training_layer(net_param):
    """(name, type) of the first data, loss or accuracy layer of a (phase-filtered) NetParameter, else None."""
    for lp in net_param.layer:
        if is_training_type(lp.type):
            return lp.name, lp.type
    return None


def deploy_candidates(model_path) -> list[str]:
    """Prototxts in the model's folder that look like deploy nets (an Input layer or input fields, no data
    layer or loss), deploy*.prototxt first."""
    folder = os.path.dirname(os.fspath(model_path)) or "."
    out = []
    try:
        names = sorted(os.listdir(folder), key=lambda n: (not n.startswith("deploy"), n))
    except OSError:
        return out
    for name in names:
        path = os.path.join(folder, name)
        if not name.endswith(".prototxt") or os.path.samefile(path, model_path) or "solver" in name:
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 20)
        except OSError:
            continue
        if _DEPLOY.search(text) and not _TRAIN.search(text):
            out.append(path)
    return out


def check_deploy(model_path, phase) -> None:
    """Raise ExportError when ``model_path`` (built in ``phase``) holds a data, loss or accuracy layer."""
    from ..net import _load_net_param, filter_net
    from ..proto import caffe_pb2
    param, _ = _load_net_param(model_path)
    state = caffe_pb2.NetState(phase=phase)
    hit = training_layer(filter_net(param, state))
    if hit is None:
        return
    found = deploy_candidates(model_path)
    fix = (f"export the deploy net instead, e.g. --model={found[0]}" if found else
           "export its deploy prototxt instead (the same layers with an Input layer in place of the data "
           "layers, and no loss or accuracy layers)")
    raise ExportError(f"{model_path}: layer '{hit[0]}' ({hit[1]}) makes this a train/test net, which ONNX "
                      f"export does not take; {fix}")
