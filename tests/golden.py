"""Locating ../shared and replaying a golden layer/net case produced by real Caffe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"


def need_shared(*parts) -> Path:
    """Path under ../shared, or skip the test with a reason when it is absent (a fresh clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(missing_reason(p))
    return p


def missing_reason(p: Path, shared: Path = SHARED) -> str:
    """Why a file under ../shared is not there: no ../shared at all, or only this file (or case) missing."""
    if not shared.is_dir():
        return f"reference data {p} is absent (../shared is not beside this checkout)"
    rel = p.relative_to(shared)
    return (f"reference data {p} is absent: ../shared is beside this checkout but has no {rel}; "
            f"copy it there to run this test")


def case_names(prefixes=(), types=()) -> list[str]:
    """Golden case folders whose name starts with one of ``prefixes`` or whose layer_type is in ``types``."""
    if not GOLDEN.is_dir():
        return []
    out = []
    for d in sorted(GOLDEN.iterdir()):
        cj = d / "case.json"
        if not cj.is_file():
            continue
        meta = json.loads(cj.read_text())
        if any(d.name.startswith(p) for p in prefixes) or meta.get("layer_type") in types:
            out.append(d.name)
    return out


def load_case(name):
    d = need_shared("golden", name)
    meta = json.loads((d / "case.json").read_text())
    return d, meta


def close(a, b, abs_tol, rel_tol):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape == () and b.shape == (1,):  # Caffe's 0-axis blobs (loss, shared PReLU) are saved as (1,)
        a = a.reshape(1)
    assert a.shape == b.shape, f"shape {a.shape} != golden {b.shape}"
    err = np.abs(a - b) - (abs_tol + rel_tol * np.abs(b))
    return float(err.max()) <= 0 if err.size else True, float(np.abs(a - b).max()) if a.size else 0.0


def run_layer_case(name, check_grads=True):
    """Replay a golden case with caffessl and assert outputs (and gradients) match within its tolerance."""
    import caffessl as caffe
    d, meta = load_case(name)
    if str(meta.get("status", "ok")).startswith("caffe_error") or not (d / "outputs.npz").exists():
        pytest.skip(f"{name}: Caffe itself aborts on this case ({meta.get('notes', '')[:120]})")
    tol = meta.get("tolerance", {})
    abs_tol, rel_tol = tol.get("abs", 1e-5), tol.get("rel", 1e-4)
    phase = caffe.TRAIN if meta.get("phase") == "TRAIN" else caffe.TEST
    weights = str(d / "weights.caffemodel") if (d / "weights.caffemodel").exists() else None
    net = caffe.Net(str(d / "net.prototxt"), phase, weights=weights)  # weights may be None
    for k, v in np.load(d / "inputs.npz").items():
        net.blobs[k].reshape(*v.shape)
        net.blobs[k].data[...] = v
    net.reshape()
    net.forward()
    failures = []
    for k, v in np.load(d / "outputs.npz").items():
        if k.startswith("params_after_forward/"):
            lname, i = k[len("params_after_forward/"):].rsplit("/", 1)
            got = net.params[lname][int(i)].data
        else:
            got = net.blobs[k].data
        ok, err = close(got, v, abs_tol, rel_tol)
        if not ok:
            failures.append(f"output {k}: max abs err {err:.3g}")
    if check_grads and (d / "grads.npz").exists():
        net.clear_param_diffs()
        for k, v in np.load(d / "top_diffs.npz").items():
            net.blobs[k].diff[...] = v
        net.backward()
        for k, v in np.load(d / "grads.npz").items():
            if "/" in k:
                lname, i = k.rsplit("/", 1)
                got = net.params[lname][int(i)].diff
            else:
                got = net.blobs[k].diff
            ok, err = close(got, v, abs_tol, rel_tol)
            if not ok:
                failures.append(f"grad {k}: max abs err {err:.3g}")
    assert not failures, f"{name}: " + "; ".join(failures)
    return net
