"""The snapshot policy: ``<prefix>_iter_N.caffemodel[.h5]`` + ``<prefix>_iter_N.solverstate[.h5]``, as Caffe
names them. The file formats are in caffessl/io/ (caffemodel.py, solverstate.py); the solverstate names
stay importable from here for existing callers."""
from __future__ import annotations

from ..io.solverstate import (SolverStateData, read_solverstate, write_solverstate,  # noqa: F401
                              write_solverstate_hdf5)


def snapshot_filename(prefix: str, it: int, ext: str) -> str:
    return f"{prefix}_iter_{it}{ext}"
