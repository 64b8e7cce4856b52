"""Data layer throughput: the prefetch thread (Caffe's BasePrefetchingDataLayer) vs loading on the critical path.

    python bench/data_loading.py [--iters 100]

Writes a temporary LMDB of 3x40x40 Datums (raw uint8 and PNG-encoded), and a Data layer with
crop_size 32, mirror and mean_value in TRAIN. Each iteration is one ``forward`` of the data layer followed by
a stand-in for the net's compute (a 3x3 convolution of the batch on one torch thread). Baseline: the same
batch loader called synchronously in the forward thread (what a net without prefetch would do).
The table gives ms per iteration (best of 3 interleaved runs) and the speed-up (baseline / prefetch).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_db(path, n, encoded):
    from caffessl.data.datum import array_to_datum, encoded_datum
    from caffessl.data.image import encode_image
    from caffessl.data.lmdb_source import LMDBWriter
    rs = np.random.RandomState(0)
    with LMDBWriter(path) as db:
        for i in range(n):
            img = rs.randint(0, 256, size=(3, 40, 40)).astype(np.uint8)
            d = encoded_datum(encode_image(img, "png"), i % 10) if encoded else array_to_datum(img, i % 10)
            db.put(b"%08d" % i, d.SerializeToString())


def net_for(src, batch):
    import caffessl as caffe
    from caffessl.io.prototxt import parse_text
    from caffessl.proto import caffe_pb2
    txt = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ crop_size: 32 '
           f'mirror: true mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.017 }} '
           f'data_param {{ source: "{src}" batch_size: {batch} backend: LMDB prefetch: 4 }} }}')
    return caffe.Net(parse_text(txt, caffe_pb2.NetParameter()), caffe.TRAIN)


def run(src, batch, iters, w):
    net = net_for(src, batch)
    layer = net.layers[0]
    compute = lambda x: torch.nn.functional.conv2d(x, w, padding=1).sum()  # noqa: E731
    # baseline: the same loader on the critical path (a fresh reader: the layer's own belongs to its thread)
    from caffessl.data.datum import datum_to_array  # noqa: F401
    from caffessl.data.loaders import DatumBatchLoader
    from caffessl.data.lmdb_source import LMDBReader
    from caffessl.data.transform import DataTransformer
    loader = DatumBatchLoader(LMDBReader(src, "bench"), DataTransformer(layer.param.transform_param, net.phase,
                              np.random.RandomState(0), "bench"), batch, None, True, "bench")
    for _ in range(3):
        compute(loader()[0])
        net.forward()
        compute(net.blobs["data"].tensor)
    sync = pre = float("inf")
    for _ in range(3):  # interleaved repetitions, best of 3 (the machine may be shared)
        t = time.perf_counter()
        for _ in range(iters):
            compute(loader()[0])
        sync = min(sync, (time.perf_counter() - t) / iters)
        t = time.perf_counter()
        for _ in range(iters):
            net.forward()
            compute(net.blobs["data"].tensor)
        pre = min(pre, (time.perf_counter() - t) / iters)
    x = net.blobs["data"].tensor
    t = time.perf_counter()
    for _ in range(iters):
        compute(x)
    comp = (time.perf_counter() - t) / iters
    t = time.perf_counter()
    for _ in range(iters):
        loader()
    load_only = (time.perf_counter() - t) / iters
    loader.close()
    return sync, pre, load_only, comp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)  # leave a core for the prefetch thread
    w = torch.randn(16, 3, 3, 3)
    print(f"Data layer, batch {args.batch}, crop 32 + mirror + mean + scale, TRAIN; torch threads "
          f"{torch.get_num_threads()}; {args.iters} iterations")
    print(f"{'records':<8} {'load ms':>8} {'compute ms':>11} {'sync ms/it':>11} {'prefetch ms/it':>15} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, enc in (("raw", False), ("png", True)):
            src = os.path.join(tmp, kind)
            make_db(src, 2000, enc)
            sync, pre, load, comp = run(src, args.batch, args.iters, w)
            print(f"{kind:<8} {load * 1e3:>8.2f} {comp * 1e3:>11.2f} {sync * 1e3:>11.2f} {pre * 1e3:>15.2f} "
                  f"{sync / pre:>8.2f}x")


if __name__ == "__main__":
    main()
