"""``caffessl classify``: top-k labels of images with a deploy net (pycaffe's classify.py + the C++ example)."""
from __future__ import annotations

import json
import os


def add_arguments(p):
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--model", required=True, help="deploy prototxt")
    p.add_argument("--weights", required=True, help="trained caffemodel (binary or .h5)")
    p.add_argument("--mean", help="mean image: .binaryproto or .npy, (C,H,W) or per-channel (C,)")
    p.add_argument("--mean-per-channel", action="store_true",
                   help="average the mean image over H and W (for a mean larger than the net's input)")
    p.add_argument("--labels", help="one label per line (synset_words.txt); line i names class i")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--images-dim", help="'H,W' to resize to before cropping (default: the net's input)")
    p.add_argument("--raw-scale", type=float, default=255.0, help="multiply [0,1] pixels by this (default 255)")
    p.add_argument("--input-scale", type=float, help="multiply after subtracting the mean")
    p.add_argument("--channel-swap", default="2,1,0", help="channel order; default RGB->BGR ('2,1,0'); '' keeps RGB")
    p.add_argument("--center-only", action="store_true", help="one centre crop instead of 10-crop oversampling")
    p.add_argument("--gray", action="store_true", help="load the images as one grey channel")
    p.add_argument("--strict", action="store_true", help="the weights must match the net's layers exactly")
    p.add_argument("--gpu", help="GPU id to run on (CUDA; of several ids or 'all', the first)")


def _labels(path, n):
    from ..errors import FileMissingError, ShapeMismatchError
    if not path:
        return [str(i) for i in range(n)]
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f if line.strip()]
    if len(labels) < n:
        raise ShapeMismatchError(f"{path}: {len(labels)} labels for a net with {n} outputs")
    return labels


def _ints(value, flag, example):
    from ..errors import CaffeSSLError
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise CaffeSSLError(f"{flag}={value}: not a list of integers separated by ',' (e.g. {flag}={example})") \
            from None


def _set_mean(clf, in_, mean, args):
    """The mean into the transformer; a shape that does not fit says which flag fixes it."""
    from ..errors import ShapeMismatchError
    if mean is None:
        return
    want = tuple(clf.blobs[in_].shape[1:])
    try:
        clf.transformer.set_mean(in_, mean)
    except ShapeMismatchError:
        if mean.ndim == 3 and mean.shape[0] == want[0]:
            fix = "pass --mean-per-channel to subtract its per-channel average (as Caffe's classification example does: mean.mean(1).mean(1))"
        elif mean.ndim == 3 and want[0] == 1 and mean.shape[0] == 3:
            fix = "a colour mean for a grey net: give the grey net's mean"
        else:
            fix = f"give a mean of shape {want} or ({want[0]},)"
        raise ShapeMismatchError(f"--mean={args.mean}: shape {mean.shape} does not fit the net's input '{in_}' "
                                 f"(C, H, W) = {want}; {fix}") from None


def run(args):
    import numpy as np

    from ..classifier import Classifier
    from ..errors import ShapeMismatchError
    from ..io.transformer import load_image, load_mean
    from ._device import use_single_gpu
    mean = None
    if args.mean:
        mean = load_mean(args.mean)
        if args.mean_per_channel and mean.ndim == 3:
            mean = mean.mean(axis=(1, 2))
    swap = _ints(args.channel_swap, "--channel-swap", "2,1,0")
    dims = _ints(args.images_dim, "--images-dim", "256,256")
    use_single_gpu(args.gpu)
    clf = Classifier(args.model, args.weights, image_dims=dims, input_scale=args.input_scale,
                     raw_scale=args.raw_scale, strict=args.strict)
    in_ = clf.inputs[0]
    chans = clf.blobs[in_].shape[1]
    _set_mean(clf, in_, mean, args)
    if not args.gray and swap is not None:
        if chans == 1:
            raise ShapeMismatchError(f"{args.model}: the net's input '{in_}' takes 1 channel (a grey image); "
                                     f"pass --gray to load the images as grey")
        if len(swap) != chans:
            raise ShapeMismatchError(f"--channel-swap={args.channel_swap}: {len(swap)} channels, the net's input "
                                     f"'{in_}' takes {chans}; give {chans} channel indices, or --channel-swap=''")
        clf.transformer.set_channel_swap(in_, swap)
    images = [load_image(p, color=not args.gray) for p in args.images]
    if images[0].shape[2] != chans:
        fix = "leave out --gray" if args.gray else "pass --gray for one channel"
        raise ShapeMismatchError(f"{args.images[0]}: {images[0].shape[2]} channel(s), the net's input "
                                 f"'{in_}' takes {chans}; {fix}")
    probs = clf.predict(images, oversample=not args.center_only)
    probs = probs.reshape(len(images), -1)
    labels = _labels(args.labels, probs.shape[1])
    k = max(1, min(args.top_k, probs.shape[1]))
    results = []
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        results.append({"image": path, "top_k": [{"class": int(i), "label": labels[i], "prob": float(p[i])}
                                                 for i in order]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}:")
            for t in r["top_k"]:
                print(f"  {t['prob']:.4f}  {t['class']:>4}  {t['label']}")
    return 0
