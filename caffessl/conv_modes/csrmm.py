"""LOWERED_CSRMM: the weight matrix in CSR times the lowered input.

Built once from the weights: the groups' M x K blocks, restricted to the lowered columns that hold a nonzero,
become ONE block-diagonal CSR matrix (O x sum of kept columns) -- so a grouped conv is a single sparse
multiply. Forward gathers those lowered rows of the whole batch and computes CSR . Col:

* CPU: MKL's ``mkl_sparse_s_mm`` through ctypes (``mkl.py``) -- the faster route in bench/conv_modes.py;
  torch's CSR matmul is the fallback, with one logging.warning, when libmkl_rt cannot be loaded;
* CUDA: torch's CSR matmul (cuSPARSE).
"""
from __future__ import annotations

import logging
import warnings

import torch

from . import mkl
from .lowering import ConvGeometry, LoweredRows, image_chunks, padded_images, structure, weight_matrix

log = logging.getLogger("caffessl")
_warned = False

CPU_BACKEND = "mkl"     # "mkl" or "torch": the CPU route (bench/conv_modes.py compares them)


def _warn_no_mkl():
    global _warned
    if not _warned:
        _warned = True
        logging.warning("LOWERED_CSRMM: MKL (libmkl_rt) could not be loaded; using torch's CSR matmul "
                        "instead (pip install mkl for the MKL sparse BLAS route)")


def block_diagonal_csr_parts(blocks, num_rows: int):
    """Dense per-group blocks (M x k_g) -> (crow, col, val) of the block-diagonal CSR matrix."""
    m = blocks[0].shape[0] if blocks else 0
    total = sum(b.shape[1] for b in blocks)
    dense = blocks[0].new_zeros((num_rows, total))
    c0 = 0
    for gi, b in enumerate(blocks):
        dense[gi * m:(gi + 1) * m, c0:c0 + b.shape[1]] = b
        c0 += b.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "Sparse CSR tensor support is in beta"
        csr = dense.to_sparse_csr()
    return csr.crow_indices(), csr.col_indices(), csr.values(), total


class CSRMMConv:
    name = "LOWERED_CSRMM"
    differentiable = False

    def __init__(self, geom: ConvGeometry, w: torch.Tensor, layer_name: str = "?", backend: str | None = None):
        self.geom = geom
        st = self.structure = structure(w, geom.group)
        wm = weight_matrix(w.detach(), geom.group)
        self.lowered = LoweredRows(st.col_kept, geom)
        blocks = [wm[gi][:, st.col_kept[gi]] for gi in range(geom.group)]   # a handful of groups
        crow, col, val, self.cols = block_diagonal_csr_parts(blocks, geom.num_output)
        self.nnz = int(val.numel())
        backend = backend or (CPU_BACKEND if w.device.type == "cpu" else "torch")
        if w.device.type != "cpu" or w.dtype != torch.float32:
            backend = "torch"            # MKL's route is the CPU float32 one
        if backend == "mkl" and self.nnz == 0:
            backend = "torch"              # nothing to multiply: MKL rejects empty matrices
        if backend == "mkl":
            lib = mkl.load()
            if lib is None:
                _warn_no_mkl()
                backend = "torch"
            else:
                self.mkl = mkl.MklCsr(lib, crow.cpu(), col.cpu(), val.cpu(), geom.num_output, self.cols)
        if backend == "torch":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self.csr = torch.sparse_csr_tensor(crow, col, val, (geom.num_output, self.cols))
        self.backend = backend

    def __call__(self, x, w, b):
        g = self.geom
        x = x.contiguous()
        n, (h, wd) = x.shape[0], x.shape[2:]
        oh, ow = g.out_hw(h, wd)
        o, l = g.num_output, oh * ow
        if self.cols == 0 or self.nnz == 0:
            out = x.new_zeros((n, o, oh, ow))
        else:
            ph, pw = g.pad
            per_image = (self.cols * l + o * l + (g.channels * (h + 2 * ph) * (wd + 2 * pw) if ph or pw else 0))
            out = x.new_empty((n, o, oh, ow))
            for i, m in image_chunks(n, per_image * x.element_size()):
                cols = self.lowered(padded_images(x, g, i, m), oh, ow).view(self.cols, m * l)
                if self.backend == "mkl":
                    y = self.mkl.mm(cols, x.new_empty((o, m * l)))
                else:
                    y = torch.sparse.mm(self.csr, cols)
                out[i:i + m].view(m, o, l).transpose(0, 1).copy_(y.view(o, m, l))
        if b is not None:
            out += b.reshape(1, -1, 1, 1)
        return out
