"""convert_imageset: a "path label" list of images -> an LMDB or LevelDB of Datum records (raw or encoded)."""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataSourceError
from .datum import array_to_datum, encoded_datum
from .image import encode_image, read_image
from .db import open_writer

log = logging.getLogger("caffessl")


def read_list(listfile: str) -> list[tuple[str, int]]:
    """convert_imageset's list: the path, the last space, an integer label."""
    from .loaders import read_image_list
    return read_image_list(listfile, "convert_imageset")


def convert_imageset(root: str, listfile: str, db_path: str, resize_height: int = 0, resize_width: int = 0,
                     shuffle: bool = False, gray: bool = False, encoded: bool = False, encode_type: str = "",
                     check_size: bool = False, seed: int | None = None, backend: str = "lmdb") -> int:
    """Returns the number of records written. Keys are ``%08d_<path>`` as in Caffe's tool."""
    lines = read_list(listfile)
    if shuffle:
        np.random.RandomState(seed).shuffle(lines) if seed is not None else np.random.shuffle(lines)
    is_color = not gray
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
        encoded = True
    count, skipped, first_size = 0, 0, None
    with open_writer(backend, db_path) as db:
        for i, (path, label) in enumerate(lines):
            full = root + path
            enc = encode_type.lower().lstrip(".")
            if encoded and not enc:  # guess the encoding from the file name
                enc = os.path.splitext(path)[1].lower().lstrip(".")
                if not enc:
                    log.warning("Failed to guess the encoding of '%s'", path)
            try:
                img = read_image(full, resize_height, resize_width, is_color, "convert_imageset")
            except DataSourceError as e:  # Caffe logs the error and skips the image
                log.error("%s", e)
                skipped += 1
                continue
            if enc:
                if (img.shape[0] == 3) == is_color and not resize_height and not resize_width \
                        and _match_ext(path, enc):
                    with open(full, "rb") as f:  # ReadFileToDatum: the file's own bytes
                        datum = encoded_datum(f.read(), label)
                else:
                    datum = encoded_datum(encode_image(img, enc), label)
            else:
                datum = array_to_datum(img, label)
                if check_size:
                    if first_size is None:
                        first_size = len(datum.data)
                    elif len(datum.data) != first_size:
                        raise DataSourceError(f"convert_imageset: {full} has {len(datum.data)} bytes "
                                              f"(shape {img.shape}), the first image {first_size} (--check_size)")
            db.put(b"%08d_" % i + path.encode("utf-8"), datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                log.info("Processed %d files.", count)
    if skipped:
        log.warning("convert_imageset: skipped %d image(s) that could not be read", skipped)
    return count


def _match_ext(fn: str, enc: str) -> bool:
    ext = os.path.splitext(fn)[1].lower().lstrip(".") or fn.lower()
    enc = enc.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")
