"""MKL's inspector-executor sparse BLAS through ctypes (libmkl_rt from the ``mkl`` pip package).

Only what CSRMM needs: a CSR handle over int32 (LP64) index arrays and ``C = A . B`` with a row-major
dense B (``mkl_sparse_s_mm``). ``load()`` returns None when libmkl_rt cannot be found or lacks the symbols.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

SPARSE_OPERATION_NON_TRANSPOSE = 10
SPARSE_MATRIX_TYPE_GENERAL = 20
SPARSE_FILL_MODE_LOWER = 40
SPARSE_DIAG_NON_UNIT = 50
SPARSE_INDEX_BASE_ZERO = 0
SPARSE_LAYOUT_ROW_MAJOR = 101
MKL_THREADING_GNU = 3
STATUS = {0: "SUCCESS", 1: "NOT_INITIALIZED", 2: "ALLOC_FAILED", 3: "INVALID_VALUE",
          4: "EXECUTION_FAILED", 5: "INTERNAL_ERROR", 6: "NOT_SUPPORTED"}


class MatrixDescr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("mode", ctypes.c_int), ("diag", ctypes.c_int)]


_LIB = None
_TRIED = False


def _candidates():
    for d in (os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")):
        for n in ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.dylib", "mkl_rt.2.dll"):
            p = os.path.join(d, n)
            if os.path.exists(p):
                yield p
    found = ctypes.util.find_library("mkl_rt")
    if found:
        yield found


def load():
    """The bound library (cached), or None."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.mkl_sparse_s_create_csr.restype = ctypes.c_int
            lib.mkl_sparse_s_create_csr.argtypes = [
                ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            lib.mkl_sparse_s_mm.restype = ctypes.c_int
            lib.mkl_sparse_s_mm.argtypes = [
                ctypes.c_int, ctypes.c_float, ctypes.c_void_p, MatrixDescr, ctypes.c_int,
                ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
            lib.mkl_sparse_optimize.restype = ctypes.c_int
            lib.mkl_sparse_optimize.argtypes = [ctypes.c_void_p]
            lib.mkl_sparse_set_mm_hint.restype = ctypes.c_int
            lib.mkl_sparse_set_mm_hint.argtypes = [ctypes.c_void_p, ctypes.c_int, MatrixDescr, ctypes.c_int,
                                                   ctypes.c_int, ctypes.c_int]
            lib.mkl_sparse_destroy.restype = ctypes.c_int
            lib.mkl_sparse_destroy.argtypes = [ctypes.c_void_p]
            lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
            lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
            # share torch's GNU OpenMP runtime instead of starting Intel's (two spinning pools contend)
            lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
            lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            lib.MKL_Set_Threading_Layer(MKL_THREADING_GNU)
        except (OSError, AttributeError):
            continue
        _LIB = lib
        return lib
    return None


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"MKL {what} failed: SPARSE_STATUS_{STATUS.get(status, status)}")


class MklCsr:
    """One CSR matrix (rows x cols, float32) held by MKL; ``mm(B, C)`` computes C = A . B (row-major)."""

    DESCR = MatrixDescr(SPARSE_MATRIX_TYPE_GENERAL, SPARSE_FILL_MODE_LOWER, SPARSE_DIAG_NON_UNIT)

    def __init__(self, lib, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, rows: int, cols: int):
        self.lib = lib
        # MKL keeps pointers to these arrays: hold them for the handle's lifetime
        self.crow = crow.to(torch.int32).contiguous()
        self.col = col.to(torch.int32).contiguous()
        self.val = val.to(torch.float32).contiguous()
        if self.val.numel() == 0:       # MKL rejects null pointers; an empty matrix still needs storage
            self.col, self.val = torch.zeros(1, dtype=torch.int32), torch.zeros(1)
        self.rows, self.cols = rows, cols
        self.handle = ctypes.c_void_p()
        rp = self.crow.data_ptr()
        _check(lib.mkl_sparse_s_create_csr(ctypes.byref(self.handle), SPARSE_INDEX_BASE_ZERO, rows, cols,
                                           rp, rp + 4, self.col.data_ptr(), self.val.data_ptr()),
               "mkl_sparse_s_create_csr")
        self._hinted = None

    def mm(self, b: torch.Tensor, out: torch.Tensor):
        """out (rows x n) = A . b (cols x n); both row-major contiguous float32 on the CPU."""
        n = b.shape[1]
        self.mm_raw(b.data_ptr(), n, n, 0.0, out.data_ptr(), n)
        return out

    def mm_raw(self, b_ptr: int, n: int, ldb: int, beta: float, c_ptr: int, ldc: int):
        """C = A . B + beta C on raw row-major float32 storage: B (cols x n) with row stride ``ldb``, C
        (rows x n) with row stride ``ldc`` (the caller keeps both alive and in bounds)."""
        if self._hinted != n:
            self.lib.mkl_sparse_set_mm_hint(self.handle, SPARSE_OPERATION_NON_TRANSPOSE, self.DESCR,
                                            SPARSE_LAYOUT_ROW_MAJOR, n, 1000)
            self.lib.mkl_sparse_optimize(self.handle)
            self._hinted = n
        self.lib.MKL_Set_Num_Threads_Local(torch.get_num_threads())
        _check(self.lib.mkl_sparse_s_mm(SPARSE_OPERATION_NON_TRANSPOSE, 1.0, self.handle, self.DESCR,
                                        SPARSE_LAYOUT_ROW_MAJOR, b_ptr, n, ldb, beta, c_ptr, ldc),
               "mkl_sparse_s_mm")

    def __del__(self):
        h = getattr(self, "handle", None)
        if h is not None and h.value:
            try:
                self.lib.mkl_sparse_destroy(h)
            except Exception:  # interpreter shutdown
                pass
