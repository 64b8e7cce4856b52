"""The solverstate file format (binary protobuf and HDF5), beside the caffemodel's (caffemodel.py). When and
under which names the solver writes them is the solver's business (solver/snapshot.py).

SolverState holds ``iter``, ``learned_net`` (the caffemodel path as written, relative to the CWD),
``current_step`` and the history blobs in Caffe's order (Adam/AdaDelta: all first moments, then all second).
The HDF5 form has datasets ``iter``, ``learned_net``, ``current_step`` and a group ``history`` with ``0``, ``1``...
Both are written atomically, and both read files written by real Caffe.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CaffemodelFormatError
from ..proto import caffe_pb2
from .atomic import atomic_path, atomic_write
from .blobproto import array_to_blobproto, blobproto_to_array
from .caffemodel import is_hdf5
from .files import existing_file, read_bytes
from .wire import decode


@dataclass
class SolverStateData:
    iter: int
    learned_net: str
    current_step: int
    history: list = field(default_factory=list)   # float32 numpy arrays


def write_solverstate(path, st: SolverStateData) -> None:
    state = caffe_pb2.SolverState()
    state.iter = st.iter
    state.learned_net = st.learned_net
    state.current_step = st.current_step
    for h in st.history:
        state.history.add().CopyFrom(array_to_blobproto(h))
    atomic_write(path, state.SerializeToString())


def write_solverstate_hdf5(path, st: SolverStateData) -> None:
    import h5py
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            # Caffe's hdf5_save_int / hdf5_save_string: int32 of shape (1,), a NUL-terminated C string
            f.create_dataset("iter", data=np.array([st.iter], dtype=np.int32))
            name = st.learned_net.encode("utf-8")
            f.create_dataset("learned_net", data=np.array(name, dtype=f"S{len(name) + 1}"))
            f.create_dataset("current_step", data=np.array([st.current_step], dtype=np.int32))
            g = f.create_group("history", track_order=True)
            for i, h in enumerate(st.history):
                g.create_dataset(str(i), data=np.asarray(h, dtype=np.float32))


def read_solverstate(path) -> SolverStateData:
    """Read a binary or HDF5 solverstate (ours or real Caffe's); typed errors for missing/corrupt files and
    for impossible values (check_solverstate)."""
    path = existing_file(path, "solverstate file")
    if is_hdf5(path):
        return check_solverstate(_read_hdf5(path), path)
    raw = read_bytes(path, "solverstate")
    state = decode(caffe_pb2.SolverState(), raw, CaffemodelFormatError, f"{path}: not a solverstate, or truncated")
    if not raw or not state.HasField("iter"):
        raise CaffemodelFormatError(f"{path}: not a solverstate (it has no 'iter' field)")
    hist = [blobproto_to_array(b, f"{path}: history blob {i}") for i, b in enumerate(state.history)]
    return check_solverstate(SolverStateData(state.iter, state.learned_net if state.HasField("learned_net")
                                             else "", state.current_step, hist), path)


def _read_hdf5(path) -> SolverStateData:
    from .hdf5_read import open_hdf5
    with open_hdf5(path, "solverstate.h5") as h:
        f = h.file
        it = h.integer(f, "iter", "dataset 'iter'", lo=-2 ** 31)
        learned = h.string(f, "learned_net", "dataset 'learned_net'") if h.has(f, "learned_net") else ""
        step = h.integer(f, "current_step", "dataset 'current_step'", lo=-2 ** 31) \
            if h.has(f, "current_step") else 0
        g = h.group(f, "history", "group 'history'")
        n = len(h.keys(g, "group 'history'"))
        hist = [h.array(g, str(i), f"history blob {i}") for i in range(n)]
    return SolverStateData(it, learned, step, hist)


def check_solverstate(st, path: str):
    """A restored solver state's values are possible: iter and current_step in [0, 2^31), finite history."""
    for name in ("iter", "current_step"):
        v = getattr(st, name)
        if not 0 <= v < 2 ** 31:
            raise CaffemodelFormatError(f"{path}: solverstate field '{name}' is {v}; it must be in [0, 2^31)")
    for i, h in enumerate(st.history):
        if not np.isfinite(h).all():
            raise CaffemodelFormatError(f"{path}: solverstate history blob {i} holds NaN or Inf values")
    if not isinstance(st.learned_net, str):
        raise CaffemodelFormatError(f"{path}: solverstate field 'learned_net' is not UTF-8 text")
    if "\0" in st.learned_net:
        raise CaffemodelFormatError(f"{path}: solverstate field 'learned_net' holds a NUL character")
    return st
