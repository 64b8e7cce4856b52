"""``caffessl time``: per-layer forward (and backward) times like ``caffe time``, plus each Convolution /
InnerProduct layer's dense vs effective FLOPs, weight sparsity, zero rows/columns and the conv_mode used."""
from __future__ import annotations

import math
import time


def add_arguments(p):
    p.add_argument("--model", required=True, help="net prototxt (deploy or train_val)")
    p.add_argument("--weights", default=None, help="caffemodel(s), comma-separated; default: filler weights")
    p.add_argument("--iterations", type=int, default=50, help="timed iterations (default 50, as caffe)")
    p.add_argument("--conv-mode", default=None,
                   help="override conv_mode on every Convolution/InnerProduct: gemm|csrmm|ccnmm|auto")
    p.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                   help="net phase (caffe time uses TRAIN)")
    p.add_argument("--gpu", default=None, help="device id to run on (CUDA; of several ids or 'all', the first)")
    p.add_argument("--level", type=int, default=0, help="net state level")
    p.add_argument("--stage", default="", help="comma-separated net state stages")


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


def timed_backward(net) -> dict:
    """Caffe's Backward, one layer at a time from the last (``Net.layerwise_backward``), timed per layer.
    Returns {layer name: ms} (0 for the layers that run no backward)."""
    ms = {layer.name: 0.0 for layer in net.layers}
    for _, layer, _, _, sec in net.layerwise_backward():
        ms[layer.name] = sec * 1e3
    return dict(reversed(list(ms.items())))


def layer_flops(layer, blobs):
    """(dense FLOPs, effective FLOPs, sparsity, zero rows, zero cols) for conv / IP layers, else None."""
    from ..conv_modes import active_mode
    from ..conv_modes.inner_product import ip_matrix, ip_structure
    from ..conv_modes.lowering import structure
    from ..weights_matrix import matrix_flops
    if not layer.sparse_modes or not layer.params:
        return None
    w = layer.params[0]
    top = blobs[layer.param.top[0]]
    if layer.type == "Convolution":
        st = structure(w, layer.group)
        groups, positions = layer.group, top.count // layer.num_output    # output positions x batch
    else:
        st = ip_structure(ip_matrix(w, layer.transpose))
        groups, positions = 1, top.count // layer.N                         # rows of the batch
    macs, kept_macs, _, _ = matrix_flops(w, groups, positions)              # the lowered GEMM(s)
    dense = 2 * macs
    mode = active_mode(layer)
    frac = {"LOWERED_CCNMM": kept_macs / macs if macs else 0.0,             # zero rows and columns skipped
            "LOWERED_CSRMM": st.nnz / st.numel if st.numel else 0.0}.get(mode, 1.0)
    return dense, dense * frac, st.element_sparsity, st.zero_rows, st.zero_cols, mode


def run(args):
    import torch

    import caffessl as caffe
    from ..conv_modes import active_mode, set_conv_mode
    from ._device import use_single_gpu
    use_single_gpu(args.gpu)
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    stages = [s for s in args.stage.split(",") if s]
    net = caffe.Net(args.model, phase, weights=args.weights, level=args.level, stages=stages)
    if args.conv_mode:
        set_conv_mode(net, args.conv_mode)
    sparse = any(active_mode(l) != "LOWERED_GEMM" for l in net.layers if l.sparse_modes)
    has_loss = bool(net._loss_tops) or net.force_backward
    do_backward = has_loss and not sparse
    names = [l.name for l in net.layers]
    n = args.iterations
    print("*** Benchmark begins ***")
    print(f"Testing for {n} iterations.")
    if not do_backward:
        why = "a sparse conv_mode is in use" if sparse else "the net has no loss and no force_backward"
        print(f"Backward is skipped: {why}.")
    # as caffe time: one untimed forward (and backward) first, so that allocations and primitive caches are
    # in place (the first AlexNet iteration here takes ~2.5x a settled one)
    print("Performing Forward")
    with torch.set_grad_enabled(do_backward):
        print(f"Initial loss: {net.forward_loss():g}")
        if do_backward:
            print("Performing Backward")
            timed_backward(net)
    fwd = {k: 0.0 for k in names}
    bwd = {k: 0.0 for k in names}
    total_f = total_b = 0.0
    t_all = time.perf_counter()
    for it in range(1, n + 1):
        t_iter = time.perf_counter()
        with torch.set_grad_enabled(do_backward):
            t_f = time.perf_counter()
            for name in names:                      # layer by layer, as Caffe's per-layer timer
                t0 = time.perf_counter()
                net.forward(start=name, end=name)
                fwd[name] += _ms(t0)
            total_f += _ms(t_f)
            if do_backward:
                net.forward()                       # a recorded pass for autograd
                t_b = time.perf_counter()
                for name, t in timed_backward(net).items():
                    bwd[name] += t
                total_b += _ms(t_b)
        print(f"Iteration: {it} {'forward-backward' if do_backward else 'forward'} time: {_ms(t_iter):.3f} ms.")
    print("Average time per layer: ")
    for name in names:
        print(f"{name:>10}\tforward: {fwd[name] / n:.5f} ms.")
        if do_backward:
            print(f"{name:>10}\tbackward: {bwd[name] / n:.5f} ms.")
    print(f"Average Forward pass: {total_f / n:.5f} ms.")
    if do_backward:
        print(f"Average Backward pass: {total_b / n:.5f} ms.")
        print(f"Average Forward-Backward: {(total_f + total_b) / n:.5f} ms.")
    print(f"Total Time: {_ms(t_all):.3f} ms.")
    print("*** Benchmark ends ***")
    rows = [(l.name, layer_flops(l, net.blobs)) for l in net.layers]
    rows = [(nm, r) for nm, r in rows if r is not None]
    if rows:
        print(f"\n{'layer':>12} {'mode':>14} {'MFLOPs dense':>13} {'effective':>10} {'ratio':>6} "
              f"{'sparsity':>8} {'zero rows':>9} {'zero cols':>9}")
        td = te = 0.0
        for nm, (d, e, sp, zr, zc, mode) in rows:
            td += d
            te += e
            print(f"{nm:>12} {mode:>14} {d / 1e6:13.2f} {e / 1e6:10.2f} {d / e if e else math.inf:6.2f} "
                  f"{sp:8.1%} {zr:9d} {zc:9d}")
        print(f"{'total':>12} {'':>14} {td / 1e6:13.2f} {te / 1e6:10.2f} {td / te if te else math.inf:6.2f}")
    return 0
