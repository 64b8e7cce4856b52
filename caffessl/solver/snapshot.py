"""The snapshot policy: ``<prefix>_iter_N.caffemodel[.h5]`` + ``<prefix>_iter_N.solverstate[.h5]``, as Caffe
names them (the file formats are in caffessl/io/: caffemodel.py, solverstate.py)."""
from __future__ import annotations


def snapshot_filename(prefix: str, it: int, ext: str) -> str:
    return f"{prefix}_iter_{it}{ext}"
