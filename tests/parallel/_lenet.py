"""A small LeNet case for data-parallel tests: generated 28x28 digits-like records in LMDBs (plain lmdb
library), LeNet's prototxt from models/lenet with the sources and batch size replaced, solvers."""
from __future__ import annotations

import numpy as np

from tests.data.helpers import raw_datum, write_lmdb
from tests.golden import REPO

LENET = REPO / "models" / "lenet" / "lenet_train_test.prototxt"


def write_records(path, n, seed):
    """``n`` raw Datums: noise plus a bright bar whose position is the label (learnable, deterministic)."""
    rng = np.random.RandomState(seed)
    recs = []
    for i in range(n):
        label = int(rng.randint(10))
        img = rng.randint(0, 60, size=(1, 28, 28)).astype(np.uint8)
        img[0, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        recs.append((b"%08d" % i, raw_datum(img, label)))
    write_lmdb(path, recs)


def make_data(root, n_train=240, n_test=40):
    write_records(root / "train_lmdb", n_train, 1)
    write_records(root / "test_lmdb", n_test, 2)


def lenet_text(batch, ssl=False, extra_layer=""):
    """LeNet (models/lenet) over train_lmdb / test_lmdb; ``ssl``: group lasso params + connectivity masks on
    conv1/conv2/ip1 (zero groups of loaded weights stay zero)."""
    text = LENET.read_text()
    text = text.replace("data/mnist/mnist_train_lmdb", "train_lmdb").replace("data/mnist/mnist_test_lmdb",
                                                                           "test_lmdb")
    text = text.replace("batch_size: 64", f"batch_size: {batch}").replace("batch_size: 100", "batch_size: 20")
    if ssl:
        for layer in ("conv1", "conv2", "ip1"):
            text = text.replace(f'name: "{layer}"\n', f'name: "{layer}"\n  connectivity_mode: DISCONNECTED_GRPWISE\n', 1)
        text = text.replace("param { lr_mult: 1 }", "param { lr_mult: 1 decay_mult: 1 kernel_shape_decay_mult: 1 "
                                                    "breadth_decay_mult: 1 }")
    if extra_layer:
        text = text.replace('layer {\n  name: "conv1"', extra_layer + '\nlayer {\n  name: "conv1"', 1)
    return text


def solver_text(net, max_iter=20, display=5, ssl=False, **extra):
    lines = [f'net: "{net}"', "base_lr: 0.05", "momentum: 0.9", "weight_decay: 0.0005", 'lr_policy: "inv"',
             "gamma: 0.0001", "power: 0.75", f"display: {display}", f"max_iter: {max_iter}", "random_seed: 7",
             "solver_mode: CPU", "test_iter: 2", "test_interval: 10", "snapshot_after_train: false"]
    if ssl:
        lines += ["breadth_decay: 0.02", "kernel_shape_decay: 0.02",
                  "ssl_stabilize_param { zerout_threshold: 0.003 }"]
    for k, v in extra.items():
        lines = [ln for ln in lines if not ln.startswith(k + ":")]
        lines.append(f'{k}: "{v}"' if isinstance(v, str) else f"{k}: {str(v).lower()}")
    return "\n".join(lines) + "\n"
