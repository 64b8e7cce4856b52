"""Finite-difference gradient check of one layer inside a float64 Net (Caffe's GradientChecker, in spirit).

Usage::

    from tests.layers.gradcheck import check_layer_gradients
    check_layer_gradients('''
        type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" } }
    ''', [(2, 3, 6, 5)])

``layer`` is the text of one LayerParameter (with or without the surrounding ``layer { ... }``) or a
``caffe_pb2.LayerParameter``. ``inputs`` gives one entry per *distinct* bottom name, in the order the
names first appear: a shape (filled with N(0, 1) values from ``seed``) or an array. The helper builds
``Input -> layer`` as a ``Net(..., dtype=torch.float64)`` with ``force_backward: true``, takes the objective
``L = sum_j <top_j, w_j>`` with random weights ``w_j`` (so every top element is checked with its own
weight), gets the analytic gradients from ``net.backward()`` with the top diffs set to ``w_j``, and
compares them with central differences ``(L(x+eps) - L(x-eps)) / 2eps`` of the same Net's forward, for the
bottoms (all, or ``check_bottoms``) and for every learnable parameter with ``lr_mult != 0``.

In-place tops are renamed (the check is about the math, and it needs the inputs unchanged), and the inputs
are re-written before every forward. At most ``max_checks`` random elements of each blob are
differentiated numerically (all when the blob is smaller). Returns ``{name: max abs error}``.
"""
from __future__ import annotations

import numpy as np
import torch

from caffessl.io.prototxt import parse_text
from caffessl.net import TEST, Net
from caffessl.proto import caffe_pb2

__all__ = ["check_layer_gradients", "build_net"]


def _layer_param(layer) -> caffe_pb2.LayerParameter:
    if isinstance(layer, caffe_pb2.LayerParameter):
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer)
        return lp
    text = layer.strip()
    if text.startswith("layer") and "{" in text.split("\n", 1)[0]:
        net = parse_text(text, caffe_pb2.NetParameter(), "<gradcheck>")
        return net.layer[0]
    return parse_text(text, caffe_pb2.LayerParameter(), "<gradcheck>")


def build_net(layer, inputs, phase=TEST, seed=1701, dtype=torch.float64):
    """The float64 ``Input -> layer`` Net, its input arrays (by name), and the layer's (renamed) tops."""
    lp = _layer_param(layer)
    if not lp.name:
        lp.name = "under_test"
    names = list(dict.fromkeys(lp.bottom))
    if len(inputs) != len(names):
        raise ValueError(f"gradcheck: {len(names)} distinct bottoms {names}, {len(inputs)} inputs given")
    rng = np.random.default_rng(seed)
    arrays = {}
    for n, v in zip(names, inputs):
        if isinstance(v, np.ndarray):
            arrays[n] = np.asarray(v, dtype=np.float64)
        else:
            arrays[n] = rng.standard_normal(tuple(v))
    for j, t in enumerate(lp.top):
        if t in names:
            lp.top[j] = f"{t}__out{j}"
    net_param = caffe_pb2.NetParameter()
    net_param.name = "gradcheck"
    net_param.force_backward = True
    inp = net_param.layer.add()
    inp.name, inp.type = "input", "Input"
    for n in names:
        inp.top.append(n)
        inp.input_param.shape.add().dim.extend(arrays[n].shape)
    net_param.layer.add().CopyFrom(lp)
    net = Net(net_param, phase=phase, dtype=dtype)
    return net, arrays, list(lp.top), lp.name


def _objective(net, arrays, tops, weights):
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    with torch.no_grad():
        net.forward()
    return float(sum((net.blobs[t].data.astype(np.float64) * w).sum() for t, w in zip(tops, weights)))


def check_layer_gradients(layer, inputs, phase=TEST, eps=1e-6, tol=1e-6, rel=1e-5, seed=1701,
                          check_bottoms=None, check_params=True, max_checks=60, top_weights=None):
    """Assert that the layer's analytic gradients match central differences; see the module docstring.

    check_bottoms: indices (into the distinct bottom names) to check; default every bottom.
    top_weights: optional list of arrays, one per top, replacing the random objective weights.
    """
    net, arrays, tops, lname = build_net(layer, inputs, phase, seed)
    rng = np.random.default_rng(seed + 1)
    # forward once to learn the top shapes, then pick the objective weights
    for n, a in arrays.items():
        net.blobs[n].data[...] = a
    net.forward()
    weights = top_weights or [rng.standard_normal(net.blobs[t].shape) for t in tops]
    # analytic
    net.clear_param_diffs()
    for t, w in zip(tops, weights):
        net.blobs[t].diff[...] = w
    net.backward()
    names = list(arrays)
    which = range(len(names)) if check_bottoms is None else check_bottoms
    analytic = {names[i]: net.blobs[names[i]].diff.astype(np.float64).copy() for i in which}
    layer_obj = net.layer_dict[lname]
    params = {}
    if check_params:
        for i, p in enumerate(layer_obj.params):
            if p.requires_grad:
                g = p.grad
                analytic[f"{lname}/{i}"] = (g.detach().cpu().numpy().astype(np.float64).copy() if g is not None
                                           else np.zeros(tuple(p.shape)))
                params[f"{lname}/{i}"] = p
    # numeric
    errors, failures = {}, []
    for key, ana in analytic.items():
        flat_n = ana.size
        idx = np.arange(flat_n) if flat_n <= max_checks else rng.choice(flat_n, max_checks, replace=False)
        worst = 0.0
        for k in idx:
            if key in params:
                view = params[key].data.view(-1)
                orig = float(view[k])
                view[k] = orig + eps
                fp = _objective(net, arrays, tops, weights)
                view[k] = orig - eps
                fm = _objective(net, arrays, tops, weights)
                view[k] = orig
            else:
                a = arrays[key].reshape(-1)
                orig = a[k]
                a[k] = orig + eps
                fp = _objective(net, arrays, tops, weights)
                a[k] = orig - eps
                fm = _objective(net, arrays, tops, weights)
                a[k] = orig
            num = (fp - fm) / (2 * eps)
            got = float(ana.reshape(-1)[k])
            err = abs(got - num)
            worst = max(worst, err)
            if err > tol + rel * abs(num):
                failures.append(f"{key}[{np.unravel_index(k, ana.shape)}]: analytic {got:.9g} "
                                f"numeric {num:.9g}")
        errors[key] = worst
    if failures:
        shown = "; ".join(failures[:6])
        raise AssertionError(f"layer '{lname}': {len(failures)} gradient element(s) differ from finite "
                             f"differences (eps {eps}, tol {tol} + {rel}*|num|): {shown}")
    return errors
