"""conv_mode kernels on AlexNet's conv layers (CPU): dense F.conv2d vs LOWERED_CCNMM vs LOWERED_CSRMM.

Sparsity configs: ``ssl`` = the per-layer row/column sparsity of SSL's AlexNet (Wen et al. 2016, Table 4,
"SSL" row, top-1 err 44.66%: column sparsity 0.0/63.2/76.9/84.7/80.7 %, row sparsity 9.4/12.9/40.6/46.9/0.0 %
for conv1..conv5); ``s50``/``s75`` = 50% / 75% of rows and of columns zero in every layer; ``u90``/``u95`` =
unstructured zeros. Ideal speedup = dense FLOPs / CCNMM's remaining FLOPs. Also: the whole SSL-sparse AlexNet
deploy net (caffessl.Net) with --conv-mode auto vs dense, and CCNMM's peak memory vs dense (subprocess RSS).

Allocator: the script applies caffessl.malloc's glibc settings first, as every process that builds a
caffessl.Net has them (sessions 1-4 ran the per-layer table without: each tensor over glibc's mmap threshold
was then a fresh mmap, page-faulted on every call, and the isolated dense conv1/conv2 at batch 32 took ~2x
their time inside the net).

Timing: the machine is shared, so every rep runs dense and each sparse kernel back to back (interleaved) and
the table shows medians (min in the JSON). OpenMP runs with the environment's OMP_WAIT_POLICY -- unset, torch's
default (GNU OpenMP spins a while before sleeping), which is what a user gets. ``OMP_WAIT_POLICY=PASSIVE``
(threads sleep after every parallel region) protects against an oversubscribed machine but costs every
parallel op a 50-90 us wake-up on a quiet one: a multi-op sparse kernel pays that several times per call,
the single-op dense conv once (the session-1 runs below were made that way; the load average is printed).

    python bench/conv_modes.py [--threads 2] [--batches 1 32] [--reps 5] [--no-memory] [--no-net] [--no-gemm]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from caffessl.conv_modes import CCNMMConv, CSRMMConv, ConvGeometry, auto  # noqa: E402
from caffessl.conv_modes.gemm import LoweredGemmConv  # noqa: E402
from caffessl.conv_modes.lowering import structure  # noqa: E402
from caffessl.malloc import keep_freed_memory  # noqa: E402

# name: (C, H, num_output, kernel, stride, pad, group)   (bvlc_alexnet, 227x227 input)
ALEXNET = {"conv1": (3, 227, 96, 11, 4, 0, 1), "conv2": (96, 27, 256, 5, 1, 2, 2),
           "conv3": (256, 13, 384, 3, 1, 1, 1), "conv4": (384, 13, 384, 3, 1, 1, 2),
           "conv5": (384, 13, 256, 3, 1, 1, 2)}
SSL_COL = {"conv1": 0.0, "conv2": 0.632, "conv3": 0.769, "conv4": 0.847, "conv5": 0.807}
SSL_ROW = {"conv1": 0.094, "conv2": 0.129, "conv3": 0.406, "conv4": 0.469, "conv5": 0.0}


def geom_of(name):
    c, h, o, k, s, p, g = ALEXNET[name]
    return ConvGeometry(c, o, (k, k), (s, s), (p, p), (1, 1), g), h


def sparse_weight(name, config, gen):
    geom, _ = geom_of(name)
    w = torch.randn(geom.num_output, geom.channels // geom.group, *geom.kernel, generator=gen) * 0.05
    wm = w.view(geom.group, geom.M, geom.K)
    if config.startswith("u"):
        w[torch.rand(w.shape, generator=gen) < int(config[1:]) / 100] = 0
        return w
    rs, cs = {"ssl": (SSL_ROW[name], SSL_COL[name]), "s50": (0.5, 0.5), "s75": (0.75, 0.75),
              "dense": (0, 0)}[config]
    for gi in range(geom.group):         # rows and columns chosen per group, as SSL's group lasso does
        wm[gi, torch.randperm(geom.M, generator=gen)[:round(rs * geom.M)]] = 0
        wm[gi, :, torch.randperm(geom.K, generator=gen)[:round(cs * geom.K)]] = 0
    return w


def interleaved(fns: dict, reps: int, burst: int = 3) -> dict:
    """{name: (median ms, min ms)}: one warm-up call each, then ``reps`` rounds calling every fn in turn,
    ``burst`` times in a row, timing the last call of each burst (warm caches, as a layer inside a net and
    ``caffe time`` see them; a single call right after another kernel's pass over 50-200 MB measures the
    cache refill as much as the kernel)."""
    for f in fns.values():
        f()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            for _ in range(burst - 1):
                f()
            t0 = time.perf_counter()
            f()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in ts.items()}


def load_avg() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def layer_table(configs, batches, reps):
    rows = []
    gen = torch.Generator().manual_seed(0)
    print(f"{'config':6} {'layer':6} {'N':>3} {'dense':>8} {'CCNMM':>8} {'CSR-mkl':>8} {'CSR-tch':>8} "
          f"{'x CC':>6} {'x CSR':>6} {'ideal':>6} {'CC/id':>6} {'variant':>7} {'auto':>6} {'fastest':>7} | "
          f"{'G-bmm':>8} {'G-1x1':>8} {'xG CC':>6} {'G CC/id':>7} | {'GEMM':>7} {'bnd/id':>6}")
    for config in configs:
        for n in batches:
            for name in ALEXNET:
                geom, h = geom_of(name)
                w = sparse_weight(name, config, gen)
                b = torch.randn(geom.num_output, generator=gen)
                x = torch.randn(n, geom.channels, h, h, generator=gen)
                st = structure(w, geom.group)
                ideal = 1 / max(st.remaining_fraction(), 1e-9)
                ks = {"CCNMM": CCNMMConv(geom, w), "CSR-mkl": CSRMMConv(geom, w, backend="mkl"),
                      "CSR-tch": CSRMMConv(geom, w, backend="torch")}
                # the paper's GEMM baselines (dense im2col + GEMM, every weight computed): G-bmm = Caffe's
                # lowering written out (whole-batch im2col + torch.bmm, MKL sgemm); G-1x1 = CCNMM's own
                # gather path with nothing dropped (chunked im2col by index_select + oneDNN 1x1 GEMM, i.e.
                # the same lowering and GEMM engine as the sparse path), built on a dense weight
                wd = torch.randn(w.shape, generator=gen)
                ks["G-bmm"], ks["G-1x1"] = LoweredGemmConv(geom, wd), CCNMMConv(geom, wd, variant="gather")
                fns = {"dense": lambda: F.conv2d(x, w, b, geom.stride, geom.pad, 1, geom.group)}
                weights = {k: wd if k.startswith("G-") else w for k in ks}
                fns.update({k: (lambda fn=fn, ww=weights[k]: fn(x, ww, b)) for k, fn in ks.items()})
                fns["GEMM"] = gemm_only(geom, st, n, h)
                with torch.no_grad():
                    t = interleaved(fns, reps)
                med = {k: v[0] for k, v in t.items()}
                csr = min(med["CSR-mkl"], med["CSR-tch"])
                fastest = min((med["dense"], "gemm"), (med["CCNMM"], "ccnmm"), (csr, "csrmm"))[1]
                gbest = min(med["G-bmm"], med["G-1x1"])
                r = dict(config=config, layer=name, batch=n, ideal=ideal, auto=auto.choose(st), fastest=fastest,
                         variant=ks["CCNMM"].variant, sparsity=st.element_sparsity,
                         x_cc_gemm=gbest / med["CCNMM"], bound_cc_ideal=med["dense"] / med["GEMM"] / ideal,
                         **{f"ms_{k}": v[0] for k, v in t.items()}, **{f"min_ms_{k}": v[1] for k, v in t.items()})
                rows.append(r)
                print(f"{config:6} {name:6} {n:>3} {med['dense']:8.2f} {med['CCNMM']:8.2f} {med['CSR-mkl']:8.2f} "
                      f"{med['CSR-tch']:8.2f} {med['dense'] / med['CCNMM']:6.2f} {med['dense'] / csr:6.2f} "
                      f"{ideal:6.2f} {med['dense'] / med['CCNMM'] / ideal:6.2f} {r['variant']:>7} {r['auto']:>6} "
                      f"{fastest:>7} | {med['G-bmm']:8.2f} {med['G-1x1']:8.2f} {gbest / med['CCNMM']:6.2f} "
                      f"{gbest / med['CCNMM'] / ideal:7.2f} | {med['GEMM']:7.2f} "
                      f"{r['bound_cc_ideal']:6.2f}", flush=True)
    return rows


def gemm_only(geom, st, n, h):
    """CCNMM's multiplies alone: per group, its kept-rows x kept-columns weight block times a ready
    (kept columns x n*oh*ow) operand -- whole batch, exact output width, oneDNN (``matmul.mm``, the fastest
    GEMM torch offers here). Any lowering-based CCNMM does at least these multiplies, so dense / this time
    / ideal ('bnd/id') bounds the CC/id it can reach on this machine, before any gather, scatter or padding."""
    from caffessl.conv_modes import matmul
    gen = torch.Generator().manual_seed(3)      # own stream: the cells' weights and inputs stay as before
    oh, ow = geom.out_hw(h, h)
    rows = st.row_kept.reshape(geom.group, -1).sum(1).tolist()
    cols = st.col_kept.sum(1).tolist()
    ops = [(torch.randn(r, k, generator=gen), torch.randn(k, n * oh * ow, generator=gen))
           for r, k in zip(rows, cols) if r and k]
    return lambda: [matmul.mm(a, c) for a, c in ops]


ALEXNET_DEPLOY = """name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %d dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


def whole_net(batches, reps):
    import tempfile

    import caffessl as caffe
    from caffessl.conv_modes import active_mode, set_conv_mode
    print("\nwhole SSL-sparse AlexNet deploy net (conv layers SSL-sparse, fc dense): forward ms, median, "
          "dense/auto interleaved")
    print(f"{'N':>3} {'dense':>9} {'auto':>9} {'speedup':>8}  {'conv-only dense':>15} {'conv-only auto':>14} "
          f"{'speedup':>8}")
    out = []
    for n in batches:
        path = os.path.join(tempfile.mkdtemp(), "deploy.prototxt")
        with open(path, "w") as f:
            f.write(ALEXNET_DEPLOY % n)
        net = caffe.Net(path, caffe.TEST)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name in ALEXNET:
                net.layer_dict[name].params[0].copy_(sparse_weight(name, "ssl", gen))
            for l in net.layers:
                for p in l.params:
                    p.requires_grad_(False)
        net.blobs["data"].data[...] = torch.randn(n, 3, 227, 227, generator=gen).numpy()
        layers = [l for l in net.layers if l.sparse_modes]
        state = {}
        for mode in ("gemm", "auto"):              # build both once; a rep swaps them in (no rebuild)
            set_conv_mode(net, mode)
            for l in layers:
                l.engine and l.engine.ensure_built(l.params[0])
            state[mode] = [(l.conv_mode, l.engine) for l in layers]
        picks = {l.name: active_mode(l) for l in layers}

        def run(mode, end=None):
            def f():
                for l, (cm, eng) in zip(layers, state[mode]):
                    l.conv_mode, l.engine = cm, eng
                net.forward(end=end)
            return f
        with torch.no_grad():
            t = interleaved({"gemm": run("gemm"), "auto": run("auto"), "gemm_conv": run("gemm", "relu5"),
                             "auto_conv": run("auto", "relu5")}, reps)
        res = {k: v[0] for k, v in t.items()}
        out.append(dict(batch=n, **res, **{f"min_{k}": v[1] for k, v in t.items()}, picks=picks))
        print(f"{n:>3} {res['gemm']:9.1f} {res['auto']:9.1f} {res['gemm'] / res['auto']:8.2f}  "
              f"{res['gemm_conv']:15.1f} {res['auto_conv']:14.1f} {res['gemm_conv'] / res['auto_conv']:8.2f}")
        print("     auto picked:", picks, flush=True)
        out[-1]["per_layer"] = per = net_layers(net, run_layer_fns(net, layers, state), reps)
        out[-1]["bounds"] = amdahl(net, per)
    return out


def amdahl(net, per_layer):
    """What the whole-net speedup can reach at most, from the dense per-layer times just measured: every
    layer but the convolutions stays as it is; the convolutions either cost nothing ('free') or run exactly
    at their FLOP-ideal speedup (dense time x remaining FLOP fraction)."""
    dense = {r["layer"]: r["dense"] for r in per_layer}
    total = sum(dense.values())
    frac = {l.name: structure(l.params[0].detach(), l.group).remaining_fraction()
            for l in net.layers if l.type == "Convolution"}
    free = total - sum(dense[k] for k in frac)
    at_ideal = free + sum(dense[k] * f for k, f in frac.items())
    free_25 = total - sum(dense[k] for k in frac if k != "conv1")
    print(f"     bound (Amdahl, these dense times): conv1-5 at their FLOP-ideal {total / at_ideal:.2f}x; "
          f"conv2-5 free {total / free_25:.2f}x; all convolutions free {total / free:.2f}x")
    return dict(at_ideal=total / at_ideal, conv2_5_free=total / free_25, conv_free=total / free)


def run_layer_fns(net, layers, state):
    """{(mode, layer name): fn running only that layer of the net in that mode} (Net.forward(start=end=),
    as ``caffessl time`` does; in-place ReLUs re-run on their already rectified blob: same work)."""
    def fn(mode, name):
        def f():
            for l, (cm, eng) in zip(layers, state[mode]):
                l.conv_mode, l.engine = cm, eng
            net.forward(start=name, end=name)
        return f
    return {(mode, l.name): fn(mode, l.name) for mode in ("gemm", "auto") for l in net.layers}


def net_layers(net, fns, reps):
    """Each layer's time inside the whole net, dense vs auto, interleaved per rep (median ms)."""
    with torch.no_grad():
        t = interleaved(fns, reps)
    names = [l.name for l in net.layers]
    tot = {m: sum(t[(m, n)][0] for n in names) for m in ("gemm", "auto")}
    print(f"     per layer inside the net (median ms of {reps}, each layer run alone via forward(start=end=)):")
    print(f"     {'layer':8} {'type':13} {'dense':>8} {'auto':>8} {'saved':>8} {'% of dense':>10}")
    rows = []
    for l in net.layers:
        d, a = t[("gemm", l.name)][0], t[("auto", l.name)][0]
        rows.append(dict(layer=l.name, type=l.type, dense=d, auto=a))
        print(f"     {l.name:8} {l.type:13} {d:8.2f} {a:8.2f} {d - a:8.2f} {100 * d / tot['gemm']:10.1f}")
    print(f"     {'sum':8} {'':13} {tot['gemm']:8.2f} {tot['auto']:8.2f} {tot['gemm'] - tot['auto']:8.2f}")
    for kind in ("Convolution", "LRN", "Pooling", "InnerProduct", "ReLU"):
        d = sum(r["dense"] for r in rows if r["type"] == kind)
        a = sum(r["auto"] for r in rows if r["type"] == kind)
        print(f"     {kind + ' total':22} {d:8.2f} {a:8.2f} {d - a:8.2f} {100 * d / tot['gemm']:10.1f}")
    return rows


def gemm_table(reps):
    """The GEMM routes: torch.mm (MKL sgemm) vs matmul.mm (oneDNN) on CCNMM's SSL shapes at batch 32, and
    F.linear vs matmul.linear on AlexNet's fc shapes (what InnerProduct runs without autograd)."""
    from caffessl.conv_modes import matmul
    gen = torch.Generator().manual_seed(2)
    print(f"\nGEMM routes (median ms; ratio = MKL / oneDNN), oneDNN available: {matmul.onednn_available()}")
    print(f"{'case':34} {'MKL':>8} {'oneDNN':>8} {'ratio':>6}")
    cases = []
    for name in ("conv2", "conv3", "conv4", "conv5"):
        geom, h = geom_of(name)
        st = structure(sparse_weight(name, "ssl", gen), geom.group)
        r = int(st.row_kept.sum()) // geom.group
        k = int(st.col_kept.sum()) // geom.group
        oh, ow = geom.out_hw(h, h)
        n = 32 * oh * (h + 2 * geom.pad[1])
        a, b = torch.randn(r, k, generator=gen), torch.randn(k, n, generator=gen)
        cases.append((f"CCNMM {name} ({r}x{k}) . ({k}x{n})", lambda a=a, b=b: torch.mm(a, b),
                      lambda a=a, b=b: matmul.mm(a, b)))
    for batch in (1, 32):
        for o, k in ((4096, 9216), (4096, 4096), (1000, 4096)):
            x, w = torch.randn(batch, k, generator=gen), torch.randn(o, k, generator=gen)
            bb = torch.randn(o, generator=gen)
            cases.append((f"fc {o}x{k} batch {batch}", lambda x=x, w=w, bb=bb: F.linear(x, w, bb),
                          lambda x=x, w=w, bb=bb: matmul.linear(x, w, bb)))
    rows = []
    with torch.no_grad():
        for label, f_mkl, f_dnn in cases:
            t = interleaved({"mkl": f_mkl, "onednn": f_dnn}, reps)
            rows.append(dict(case=label, mkl=t["mkl"][0], onednn=t["onednn"][0]))
            print(f"{label:34} {t['mkl'][0]:8.2f} {t['onednn'][0]:8.2f} {t['mkl'][0] / t['onednn'][0]:6.2f}",
                  flush=True)
    return rows


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_child(layer, mode, n):
    """Child process: peak RSS growth (MiB) over one forward of ``layer`` in ``mode``: the kernel's
    high-water mark is reset (``/proc/self/clear_refs`` 5), then VmHWM after the call - VmRSS before."""
    gen = torch.Generator().manual_seed(0)
    geom, h = geom_of(layer)
    w = sparse_weight(layer, "ssl", gen)
    x = torch.randn(n, geom.channels, h, h, generator=gen)
    k = {"CCNMM": CCNMMConv}.get(mode)
    fn = (lambda: F.conv2d(x, w, None, geom.stride, geom.pad, 1, geom.group)) if k is None else \
        (lambda kk=k(geom, w): kk(x, w, None))
    with torch.no_grad():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kib("VmRSS")
        y = fn()
        peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - base) / 1024, "out_mib": y.numel() * 4 / 2 ** 20}))


def memory_table(n, threads):
    print(f"\npeak memory of one forward, SSL sparsity, batch {n} (VmHWM after - VmRSS before the call, "
          f"MiB, a fresh process per cell; input, weights and CCNMM's structures exist before)")
    print(f"{'layer':6} {'output':>8} {'dense':>8} {'CCNMM':>8} {'CC<=dense':>9}")
    out = []
    for layer in ALEXNET:
        r = {}
        for mode in ("dense", "CCNMM"):
            cp = subprocess.run([sys.executable, __file__, "--peak-child", layer, mode, str(n),
                                 "--threads", str(threads)], capture_output=True, text=True, check=True)
            got = json.loads(cp.stdout.strip().splitlines()[-1])
            r[mode], r["output"] = got["peak_mib"], got["out_mib"]
        out.append(dict(layer=layer, **r))
        print(f"{layer:6} {r['output']:8.1f} {r['dense']:8.1f} {r['CCNMM']:8.1f} {str(r['CCNMM'] <= r['dense']):>9}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--configs", nargs="+", default=["ssl", "s50", "s75", "u90", "u95"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-net", action="store_true")
    ap.add_argument("--no-gemm", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--peak-child", nargs=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    kept = keep_freed_memory()           # as in any process that built a caffessl.Net (module docstring)
    if a.peak_child:
        return _peak_child(a.peak_child[0], a.peak_child[1], int(a.peak_child[2]))
    print(f"torch {torch.__version__}, {a.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"median of {a.reps} interleaved reps, each the last of a burst of 3 calls (ms); x = dense F.conv2d / mode; CC/id = x CC / ideal; "
          f"variant = CCNMM's pick (gather | conv); caffessl.malloc's allocator settings: {kept}")
    print("start:", load_avg(), flush=True)
    t0 = time.time()
    res = {"load_start": os.getloadavg()}
    if not a.no_gemm:
        res["gemm"] = gemm_table(a.reps)
    res["layers"] = layer_table(a.configs, a.batches, a.reps)
    if not a.no_net:
        res["net"] = whole_net(a.batches, a.reps)
    if not a.no_memory:
        res["memory"] = memory_table(max(a.batches), a.threads)
    res["load_end"] = os.getloadavg()
    print(f"end: {load_avg()}; wall {time.time() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
