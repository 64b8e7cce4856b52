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


def run(args):
    import numpy as np

    from ..classifier import Classifier
    from ..errors import ShapeMismatchError
    from ..io.transformer import load_image, load_mean
    mean = None
    if args.mean:
        mean = load_mean(args.mean)
        if args.mean_per_channel and mean.ndim == 3:
            mean = mean.mean(axis=(1, 2))
    swap = tuple(int(c) for c in args.channel_swap.split(",")) if args.channel_swap else None
    dims = tuple(int(d) for d in args.images_dim.split(",")) if args.images_dim else None
    clf = Classifier(args.model, args.weights, image_dims=dims, mean=mean, input_scale=args.input_scale,
                     raw_scale=args.raw_scale, channel_swap=swap if not args.gray else None, strict=args.strict)
    chans = clf.blobs[clf.inputs[0]].shape[1]
    images = [load_image(p, color=not args.gray) for p in args.images]
    if images[0].shape[2] != chans:
        raise ShapeMismatchError(f"{args.images[0]}: {images[0].shape[2]} channel(s), the net's input "
                                 f"'{clf.inputs[0]}' takes {chans} (use --gray for one channel)")
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
