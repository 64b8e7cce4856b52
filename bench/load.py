"""Loading a 240 MB AlexNet-sized caffemodel into a Net: time and peak memory vs ``np.fromfile``.

    python bench/load.py [--keep DIR]

Writes an AlexNet deploy prototxt and a caffemodel with random weights (caffessl's writer) to a temporary
folder, then measures in fresh subprocesses (so each peak RSS is its own):
  * baseline: ``np.fromfile`` of the file as float32 (read time, peak RSS above the process's start);
  * the protobuf path (parse NetParameter, ``np.asarray(bp.data)``), for reference (no Net);
  * caffessl: ``caffessl.Net(prototxt, caffemodel, TEST)`` (net construction with fillers + weight copy),
    and the weight copy alone (``net.copy_from``).
Peak memory is VmHWM (peak RSS) minus the RSS after imports, reported as a multiple of the file size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALEXNET = """name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
  convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
  convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
  convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""

CHILD = r"""
import json, resource, sys, time
import numpy as np
mode, model, weights = sys.argv[1:4]
import torch, caffessl  # imports before the RSS baseline
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss()
t0 = time.perf_counter()
extra = {}
if mode == "fromfile":
    a = np.fromfile(weights, dtype=np.float32)
    a.sum()
elif mode == "protobuf":
    from caffessl.io.caffemodel import read_net_binary
    from caffessl.io.blobproto import blobproto_to_array
    arrs = [blobproto_to_array(b) for lp in read_net_binary(weights).layer for b in lp.blobs]
else:
    t1 = time.perf_counter()
    net = caffessl.Net(model, caffessl.TEST)
    extra["build_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    net.copy_from(weights)
    extra["copy_s"] = time.perf_counter() - t1
dt = time.perf_counter() - t0
with open("/proc/self/status") as f:  # VmHWM: this process's peak RSS (ru_maxrss survives fork+exec)
    peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps(dict(seconds=dt, peak_extra=peak - base, **extra)))
"""


def make_files(folder):
    import numpy as np
    import caffessl
    from caffessl.io.caffemodel import write_caffemodel
    model = os.path.join(folder, "alexnet.prototxt")
    weights = os.path.join(folder, "alexnet.caffemodel")
    with open(model, "w") as f:
        f.write(ALEXNET)
    net = caffessl.Net(model, caffessl.TEST)
    rng = np.random.default_rng(0)
    blobs = {l.name: [rng.standard_normal(p.shape, dtype=np.float32) * 0.01 for p in l.params]
             for l in net.layers}
    t0 = time.perf_counter()
    write_caffemodel(weights, net.to_proto(), blobs)
    return model, weights, time.perf_counter() - t0


def child(mode, model, weights):
    env = dict(os.environ, PYTHONPATH=sys.path[0] + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, model, weights], check=True, env=env,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="write the files here and keep them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        model, weights, write_s = make_files(folder)
        size = os.path.getsize(weights)
        base = child("fromfile", model, weights)
        ours = child("net", model, weights)
        pb = child("protobuf", model, weights)
    mb = size / 2**20
    print(f"caffemodel: {mb:.1f} MiB (AlexNet shapes, random weights); written by caffessl in {write_s:.2f} s")
    print(f"{'what':<44}{'seconds':>9}{'x base':>8}{'peak extra MiB':>16}{'x file':>8}")
    print(f"{'np.fromfile (baseline)':<44}{base['seconds']:>9.2f}{1.0:>8.1f}"
          f"{base['peak_extra'] / 2**20:>16.0f}{base['peak_extra'] / size:>8.2f}")
    print(f"{'caffessl.Net(model, weights): total':<44}{ours['seconds']:>9.2f}"
          f"{ours['seconds'] / base['seconds']:>8.1f}{ours['peak_extra'] / 2**20:>16.0f}"
          f"{ours['peak_extra'] / size:>8.2f}")
    print(f"{'protobuf parse + np.asarray (old path)':<44}{pb['seconds']:>9.2f}"
          f"{pb['seconds'] / base['seconds']:>8.1f}{pb['peak_extra'] / 2**20:>16.0f}"
          f"{pb['peak_extra'] / size:>8.2f}")
    print(f"{'  of which Net construction (fillers)':<44}{ours['build_s']:>9.2f}")
    print(f"{'  of which copy_from (read + copy)':<44}{ours['copy_s']:>9.2f}"
          f"{ours['copy_s'] / base['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
