"""``caffessl test``: Caffe's ``caffe test`` -- score a model's TEST net over ``--iterations`` batches.

Prints BVLC's lines: ``Batch i, <output> = v`` per batch, ``Loss: L``, then ``<output> = mean`` per output.
(The SSL fork comments out the per-batch and per-output lines and prints only ``Loss``; the accuracy is what
a user runs ``test`` for, so caffessl keeps BVLC's output.)
"""
from __future__ import annotations

import numpy as np

f32 = np.float32


def add_arguments(p):
    p.add_argument("--model", required=True, help="the net prototxt (its TEST phase is scored)")
    p.add_argument("--weights", required=True, help="comma-separated caffemodels")
    p.add_argument("--iterations", type=int, default=50, help="number of batches (Caffe's default 50)")
    p.add_argument("--gpu", help="GPU id to use (of several ids or 'all', the first)")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--stage", default="", help="comma-separated net state stages")
    p.add_argument("--conv-mode", default=None, choices=["gemm", "csrmm", "ccnmm", "auto"],
                   help="override every layer's conv_mode (default: each layer's prototxt field)")
    p.add_argument("--allow-python", action="store_true",
                   help="allow `Python` layers (they run code named in the prototxt)")


def score(net, iterations: int, log):
    """Run ``iterations`` forwards; log and return ({output: mean}, mean loss)."""
    import torch

    from ..log import fmt_num
    sums = None
    loss = f32(0)
    with torch.no_grad():
        for i in range(iterations):
            loss += f32(net.forward_loss())
            res = [(name, net.blobs[name].data.astype(np.float32).ravel()) for name in net.outputs]
            for name, v in res:
                for x in v:
                    log.info("Batch %d, %s = %s", i, name, fmt_num(x))
            if sums is None:
                sums = {name: v.copy() for name, v in res}
            else:
                for name, v in res:
                    sums[name] += v
    loss /= f32(max(iterations, 1))
    log.info("Loss: %s", fmt_num(loss))
    means = {}
    for name in net.outputs:
        w = net.blob_loss_weights.get(name, 0.0)
        for m in (sums or {}).get(name, np.zeros(0, np.float32)) / f32(max(iterations, 1)):
            extra = f" (* {fmt_num(w)} = {fmt_num(f32(w) * m)} loss)" if w else ""
            log.info("%s = %s%s", name, fmt_num(m), extra)
        means[name] = (sums or {}).get(name, np.zeros(0, np.float32)) / f32(max(iterations, 1))
    return means, float(loss)


def run(args):
    from ..errors import CaffeSSLError
    from ..log import get_logger, setup_logging
    from ..net import TEST, Net
    from ._device import use_single_gpu
    setup_logging()
    log = get_logger()
    if args.iterations <= 0:
        raise CaffeSSLError(f"--iterations must be positive, got {args.iterations}")
    gpu = use_single_gpu(args.gpu, log)
    stages = [s for s in args.stage.split(",") if s]
    net = Net(args.model, phase=TEST, level=args.level, stages=stages, allow_python=args.allow_python)
    for w in args.weights.split(","):
        net.copy_from(w)
    # logged once the model and weights loaded, so that bad input prints exactly one line
    if gpu is not None:
        log.info("Use GPU with device ID %d", gpu)
    else:
        log.info("Use CPU.")
    if args.conv_mode:
        from ..conv_modes import set_conv_mode
        for layer, m in set_conv_mode(net, args.conv_mode).items():
            log.info("conv_mode of %s: %s", layer, m)
    log.info("Running for %d iterations.", args.iterations)
    score(net, args.iterations, log)
    return 0
