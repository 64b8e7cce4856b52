"""InnerProduct with the same ideas (an extension: the fork has no sparse IP modes).

The weight matrix is (num_output x K) -- rows are output neurons, columns input features (``transpose``
stores it as K x num_output; the view is the same). CCNMM drops all-zero rows and columns: the input's
kept features are gathered (B x K'), multiplied by the packed R x K' block and scattered to the kept
outputs; dropped outputs are bias-only. CSRMM multiplies the CSR matrix (kept columns) with the gathered
input, through MKL on the CPU (torch CSR elsewhere).
"""
from __future__ import annotations

import warnings

import torch

from . import csrmm, mkl
from .lowering import Structure
from .matmul import linear


def ip_matrix(w: torch.Tensor, transpose: bool) -> torch.Tensor:
    return w.t() if transpose else w


def ip_structure(wm: torch.Tensor) -> Structure:
    nz = wm.detach() != 0
    return Structure(row_kept=nz.any(1), col_kept=nz.any(0).unsqueeze(0), nnz=int(nz.sum()), numel=nz.numel())


class DenseIP:
    name = "LOWERED_GEMM"
    differentiable = True

    def __init__(self, wm, transpose):
        self.transpose = transpose

    def __call__(self, x, w, b):
        if self.transpose:
            return x @ w + b if b is not None else x @ w
        return linear(x, w, b)


class _Squeezed:
    differentiable = False

    def __init__(self, wm: torch.Tensor):
        st = self.structure = ip_structure(wm)
        self.n_out = wm.shape[0]
        self.cols = st.col_kept[0].nonzero().squeeze(1)
        self.rows = st.row_kept.nonzero().squeeze(1)
        self.all_cols = self.cols.numel() == wm.shape[1]

    def gather(self, x):
        return x if self.all_cols else x.index_select(1, self.cols)

    def scatter(self, yk, x, b):
        if self.rows.numel() == self.n_out:
            out = yk
        else:
            out = x.new_zeros((x.shape[0], self.n_out))
            out.index_copy_(1, self.rows, yk)
        return out + b if b is not None else out


class CCNMMIP(_Squeezed):
    name = "LOWERED_CCNMM"

    def __init__(self, wm, transpose):
        super().__init__(wm)
        self.wk = wm.detach().index_select(0, self.rows).index_select(1, self.cols).contiguous()

    def __call__(self, x, w, b):
        return self.scatter(linear(self.gather(x), self.wk), x, b)


class CSRMMIP(_Squeezed):
    name = "LOWERED_CSRMM"

    def __init__(self, wm, transpose, backend=None):
        super().__init__(wm)
        wk = wm.detach().index_select(1, self.cols)
        self.rows = torch.arange(self.n_out, device=wm.device)      # CSR keeps empty rows for free
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "Sparse CSR tensor support is in beta"
            csr = wk.to_sparse_csr()
        crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
        backend = backend or (csrmm.CPU_BACKEND if wm.device.type == "cpu" else "torch")
        if wm.device.type != "cpu" or wm.dtype != torch.float32:
            backend = "torch"
        if backend == "mkl" and (val.numel() == 0 or wk.shape[1] == 0):
            backend = "torch"              # nothing to multiply: MKL rejects empty matrices
        if backend == "mkl":
            lib = mkl.load()
            if lib is None:
                csrmm._warn_no_mkl()
                backend = "torch"
            else:
                self.mkl = mkl.MklCsr(lib, crow, col, val, self.n_out, wk.shape[1])
        self.csr = csr if backend == "torch" else None
        self.backend = backend

    def __call__(self, x, w, b):
        xk = self.gather(x)
        if xk.shape[1] == 0:
            yk = x.new_zeros((x.shape[0], self.n_out))
        elif self.backend == "mkl":
            xt = xk.t().contiguous()
            yk = self.mkl.mm(xt, x.new_empty((self.n_out, xt.shape[1]))).t()
        else:
            yk = torch.sparse.mm(self.csr, xk.t()).t()
        return self.scatter(yk, x, b)
