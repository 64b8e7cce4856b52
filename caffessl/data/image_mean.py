"""Caffe's compute_image_mean: the mean Datum of an LMDB / LevelDB, as a binaryproto for transform_param's
``mean_file``.

As the tool: every record once in key order (encoded images decoded in their own channels), each must hold
the first record's C x H x W values; the per-element sums accumulate in float32 (BlobProto's ``data``) in
record order and are divided by the count in float32; the file is a BlobProto with the legacy num (1) /
channels / height / width fields. The log gives the per-channel means (float32 sums over the plane / H*W).
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import DataSourceError
from ..log import fmt_num
from .datum import datum_to_array, parse_datum
from .db import iterate

log = logging.getLogger("caffessl")
F = np.float32


def compute_image_mean(db_path: str, backend: str = "lmdb", out: str | None = None) -> tuple[np.ndarray, int]:
    """(mean C x H x W float32, number of records); writes ``out`` (a binaryproto) when given."""
    where = "compute_image_mean"
    total, shape, count = None, None, 0
    for key, value in iterate(backend, db_path, where):
        at = f"{where}: record {key.decode('utf-8', 'replace')!r} of '{db_path}'"
        arr = datum_to_array(parse_datum(value, at), None, at)
        if total is None:
            shape = arr.shape
            total = np.zeros(arr.size, F)
            log.info("Starting iteration")
        elif arr.size != total.size:
            raise DataSourceError(f"{at}: incorrect data field size {arr.size} (the first record holds "
                                  f"{total.size}: {shape})")
        total += arr.reshape(-1).astype(F)
        count += 1
        if count % 10000 == 0:
            log.info("Processed %d files.", count)
    if total is None:
        raise DataSourceError(f"{where}: '{db_path}' holds no records")
    if count % 10000:
        log.info("Processed %d files.", count)
    mean = (total / F(count)).reshape(shape)
    if out:
        from ..io.blobproto import array_to_blobproto
        from ..io.atomic import atomic_write
        log.info("Write to %s", out)
        atomic_write(out, array_to_blobproto(mean[None], legacy_shape=True).SerializeToString())
    c = shape[0]
    log.info("Number of channels: %d", c)
    planes = mean.reshape(c, -1)
    for ch in range(c):
        log.info("mean_value channel [%d]: %s", ch, fmt_num(np.cumsum(planes[ch], dtype=F)[-1] / F(planes.shape[1])))
    return mean, count
