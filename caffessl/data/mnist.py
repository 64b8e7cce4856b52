"""MNIST IDX files -> LMDBs (or LevelDBs) of raw Datum records, as Caffe's convert_mnist_data /
create_mnist.sh do: Datum(channels=1, height=28, width=28, data=uint8 pixels, label), keys ``%08d`` in file
order, databases ``mnist_{train,test}_<backend>``."""
from __future__ import annotations

import logging
import os

from ..errors import DataSourceError
from .datum import array_to_datum
from .idx import IMAGES_MAGIC, LABELS_MAGIC, find_idx, read_idx
from .db import open_writer

log = logging.getLogger("caffessl")

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def convert_mnist_data(image_file: str, label_file: str, db_path: str, limit: int | None = None,
                       backend: str = "lmdb") -> int:
    """One split; returns the number of records written."""
    images = read_idx(image_file, IMAGES_MAGIC)
    labels = read_idx(label_file, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataSourceError(f"{image_file} holds {images.shape[0]} images but {label_file} "
                              f"{labels.shape[0]} labels")
    n = images.shape[0] if limit is None else min(limit, images.shape[0])
    log.info("A total of %d items. Rows: %d Cols: %d", n, images.shape[1], images.shape[2])
    with open_writer(backend, db_path) as db:
        for i in range(n):
            db.put(b"%08d" % i, array_to_datum(images[i][None], int(labels[i])).SerializeToString())
    return n


def db_paths(out_dir: str, backend: str = "lmdb") -> dict[str, str]:
    return {s: os.path.join(out_dir, f"mnist_{s}_{backend.lower()}") for s in SPLITS}


def convert_mnist(src_dir: str, out_dir: str, limit: int | None = None, backend: str = "lmdb") -> dict[str, str]:
    """Both splits from ``src_dir`` into ``out_dir/mnist_{train,test}_<backend>``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = db_paths(out_dir, backend)
    for split, (img, lab) in SPLITS.items():
        convert_mnist_data(find_idx(src_dir, img), find_idx(src_dir, lab), paths[split], limit, backend)
    return paths


def ensure_mnist_lmdb(src_dir: str, out_dir: str) -> dict[str, str]:
    """Idempotent: convert a split only when its LMDB is missing; returns {'train': path, 'test': path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = db_paths(out_dir)
    for split, (img, lab) in SPLITS.items():
        p = paths[split]
        if os.path.isfile(os.path.join(p, "data.mdb")):
            continue
        if os.path.exists(p):
            raise DataSourceError(f"{p}: exists but is not an LMDB (no data.mdb); remove it to reconvert")
        tmp = p + ".partial"
        if os.path.exists(tmp):
            import shutil
            shutil.rmtree(tmp)
        convert_mnist_data(find_idx(src_dir, img), find_idx(src_dir, lab), tmp)
        os.replace(tmp, p)
    return paths
