"""LOWERED_CSRMM: the weight matrix in CSR times the lowered input.

Built once from the weights: the groups' M x K blocks, restricted to the lowered columns that hold a nonzero,
become ONE block-diagonal CSR matrix (O x sum of kept columns) -- so a grouped conv is a single sparse
multiply. Forward gathers those lowered rows of a chunk of images and computes CSR . Col:

* CPU: MKL's ``mkl_sparse_s_mm`` through ctypes (``mkl.py``) -- the faster route in bench/conv_modes.py;
  torch's CSR matmul is the fallback, with one logging.warning, when libmkl_rt cannot be loaded;
* CUDA: torch's CSR matmul (cuSPARSE).

``direct`` (CPU, MKL, stride 1 -- conv2-5 of AlexNet): the same sum without the lowering. Per kernel position
(ky, kx) the weights W[:, :, ky, kx] form a block-diagonal CSR matrix A_p (O x C); the padded images are laid
out (C, images, Hp, Wp), so that the input rows shifted by that position are a strided view of it (one row
per channel, row stride images*Hp*Wp, start offset ky*dh*Wp + kx*dw), which MKL reads in place (ldb); the
output Out (O x images*Hp*Wp) accumulates A_p . X_p over positions (beta = 1), and the valid (oh x ow) window
of each image is cropped out of it. Nothing of size K x N is written: on AlexNet's conv3-5 it runs 1.0-1.7x
the lowered form, on conv2 0.8-1.2x (bench/RESULTS.md); the (Hp*Wp)/(oh*ow) extra columns are the price.
"""
from __future__ import annotations

import logging
import warnings

import torch

from . import mkl
from .lowering import (
    ConvGeometry,
    LoweredRows,
    PadBuffer,
    image_chunks,
    padded_images,
    store,
    structure,
    weight_matrix,
)

log = logging.getLogger("caffessl")
_warned = False

CPU_BACKEND = "mkl"     # "mkl" or "torch": the CPU route (bench/conv_modes.py compares them)
# MKL's SpMM streams the dense operand once per output row: chunks of images whose temporaries stay
# cache-sized run faster than the whole batch (bench/conv_modes.py).
CHUNK_BYTES = 2 << 20


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

    def __init__(self, geom: ConvGeometry, w: torch.Tensor, layer_name: str = "?", backend: str | None = None,
                 direct: bool = True):
        self.geom = geom
        self.direct = None
        st = self.structure = structure(w, geom.group)
        wm = weight_matrix(w.detach(), geom.group)
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
            elif direct and tuple(geom.stride) == (1, 1):
                self.direct = _DirectMkl(lib, w.detach(), geom)
            else:
                self._lowering(st, geom)
                self.mkl = mkl.MklCsr(lib, crow.cpu(), col.cpu(), val.cpu(), geom.num_output, self.cols)
        if backend == "torch":
            self._lowering(st, geom)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self.csr = torch.sparse_csr_tensor(crow, col, val, (geom.num_output, self.cols))
        self.backend = backend

    def _lowering(self, st, geom):
        self.lowered = LoweredRows(st.col_kept, geom)
        self.pad_buf = PadBuffer()

    def __call__(self, x, w, b):
        g = self.geom
        x = x.contiguous()
        n, (h, wd) = x.shape[0], x.shape[2:]
        oh, ow = g.out_hw(h, wd)
        o = g.num_output
        bias = None if b is None else b.reshape(-1, 1, 1, 1)
        if self.cols == 0 or self.nnz == 0:
            out = x.new_zeros((n, o, oh, ow))
            if b is not None:
                out += b.reshape(1, -1, 1, 1)
        else:
            out = x.new_empty((n, o, oh, ow))
            if self.direct is not None:
                self.direct(x, out, oh, ow, bias)
            else:
                ph, pw = g.pad
                low = self.lowered
                wl = wd + 2 * pw if low.wide else ow             # lowered row width per output row
                per_image = self.cols * oh * wl + o * oh * wl + g.channels * (h + 2 * ph) * (wd + 2 * pw)
                for i, m in image_chunks(n, per_image * x.element_size(), CHUNK_BYTES):
                    cols = low(padded_images(x, g, i, m, self.pad_buf, low.slack), oh, ow)
                    cols = cols.view(self.cols, m * oh * wl)
                    if self.backend == "mkl":
                        y = self.mkl.mm(cols, x.new_empty((o, m * oh * wl)))
                    else:
                        y = torch.sparse.mm(self.csr, cols)
                    store(out[i:i + m].transpose(0, 1), y.view(o, m, oh, wl)[..., :ow], bias)
        return out


class _DirectMkl:
    """The ``direct`` form (module docstring): one MKL CSR matrix per kernel position holding a nonzero."""

    def __init__(self, lib, w: torch.Tensor, geom: ConvGeometry):
        self.geom = geom
        g, m = geom.group, geom.M
        kh, kw = geom.kernel
        self.mats = []                                   # (ky, kx, MklCsr (O x C))
        for ky in range(kh):
            for kx in range(kw):
                blocks = [w[gi * m:(gi + 1) * m, :, ky, kx] for gi in range(g)]
                crow, col, val, _ = block_diagonal_csr_parts(blocks, geom.num_output)
                if val.numel():
                    self.mats.append((ky, kx, mkl.MklCsr(lib, crow.cpu(), col.cpu(), val.cpu(),
                                                         geom.num_output, geom.channels)))
        self.pad_buf = PadBuffer()

    def __call__(self, x: torch.Tensor, out: torch.Tensor, oh: int, ow: int, bias=None):
        """Fill out (N, O, oh, ow) with the convolution of x (N, C, H, W) (+ bias, shaped (O, 1, 1, 1))."""
        g = self.geom
        n, c, h, wd = x.shape
        (ph, pw), (dh, dw), (kh, kw) = g.pad, g.dilation, g.kernel
        hp, wp = h + 2 * ph, wd + 2 * pw
        slack = (kh - 1) * dh * wp + (kw - 1) * dw       # the last channel's shifted rows read this far past it
        o, el = g.num_output, x.element_size()
        for i, m in image_chunks(n, (c + o) * hp * wp * el, CHUNK_BYTES):
            xb = self.pad_buf(x[i:i + m].transpose(0, 1), ph, pw, slack)     # (C, m, Hp, Wp), contiguous
            ncols = m * hp * wp
            acc = x.new_empty((o, ncols))
            beta = 0.0
            for ky, kx, a in self.mats:
                a.mm_raw(xb.data_ptr() + (ky * dh * wp + kx * dw) * el, ncols, ncols, beta, acc.data_ptr(), ncols)
                beta = 1.0
            store(out[i:i + m].transpose(0, 1), acc.view(o, m, hp, wp)[:, :, :oh, :ow], bias)
