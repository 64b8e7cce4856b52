"""The 2-D matrix view of a weight (SSL's one way of seeing it), with everything computed on that view:
group norms, structure statistics, connectivity masks, the zero threshold and the GEMM FLOP count.

This module depends on torch and numpy only -- nothing inside caffessl -- so that the Net, the layers, the
Solver, the conv modes and the sparsity tools can all import it (docs/ARCHITECTURE.md).

A blob of shape (s0, s1, ...) is an R x C matrix with R = s0 and C = count / s0, row-major over the
remaining axes (sgd_solver.cpp: ``equivalent_ch = count / shape(0)``):

* Convolution (num_output, C_in/g, kh, kw): row r = filter r, column j = (c*kh + y)*kw + x -- Caffe's
  lowered weight matrix with the conv groups stacked vertically (group gi owns rows [gi*R/g, (gi+1)*R/g));
* InnerProduct (num_output, K): rows = output neurons, columns = input neurons;
* biases and other 1-D blobs: R = length, C = 1.

Every structure the fork regularizes or reports is a tiling of this matrix into ``ydimen x xdimen``
blocks: a row is the block (1, C), a per-conv-group column is (R/g, 1), a whole layer is (R, C). So one
function -- one reshape and one reduction -- computes every group norm, with no Python loop over groups.
"""
from __future__ import annotations

import numpy as np
import torch

# -- the view ------------------------------------------------------------------------------------------


def matrix_shape(shape) -> tuple[int, int]:
    """(R, C) of the fork's 2-D view of a blob of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        return 1, 1
    r = shape[0]
    count = 1
    for s in shape:
        count *= s
    return r, (count // r if r else 0)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """The R x C view of ``t`` (no copy for a contiguous tensor)."""
    r, c = matrix_shape(t.shape)
    return t.reshape(r, c)


def conv_groups(layer_param) -> int:
    """Net::param_groups_: convolution_param.group if the layer has a convolution_param, else 1."""
    return int(layer_param.convolution_param.group) if layer_param.HasField("convolution_param") else 1


def tiles(mat: torch.Tensor, ydimen: int, xdimen: int) -> torch.Tensor:
    """(R/ydimen, ydimen, C/xdimen, xdimen) view of an R x C matrix: tile (by, bx) is ``[by, :, bx, :]``.

    The caller has checked that the block divides the matrix (see :func:`check_block`)."""
    r, c = mat.shape
    return mat.reshape(r // ydimen, ydimen, c // xdimen, xdimen)


def check_block(shape, ydimen: int, xdimen: int) -> str | None:
    """None if a ydimen x xdimen block tiles the matrix of ``shape`` exactly, else what is wrong."""
    r, c = matrix_shape(shape)
    if ydimen <= 0 or xdimen <= 0:
        return f"block size {xdimen}x{ydimen} (xdimen x ydimen) must be positive"
    if ydimen > r or xdimen > c or r % ydimen or c % xdimen:
        return (f"block xdimen={xdimen} ydimen={ydimen} does not tile the {r}x{c} (R x C) weight matrix "
                f"(R must be a multiple of ydimen and C of xdimen; partial blocks are not allowed)")
    return None


# -- group norms (the SSL regularizers) ----------------------------------------------------------------


def tile_sumsq(mat: torch.Tensor, ydimen: int, xdimen: int, sq: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squares of every tile, shaped (R/ydimen, 1, C/xdimen, 1) so it broadcasts over ``tiles``.
    ``sq`` may pass ``mat * mat`` precomputed (shared by several tilings of one param)."""
    r, c = mat.shape
    if sq is None:
        sq = mat * mat
    if ydimen == 1:       # rows, per-2-D-kernel...: a contiguous inner reduction (a GEMV is faster)
        s = sq.reshape(-1, xdimen).mv(sq.new_ones(xdimen))
    elif xdimen == 1:     # columns (per conv group): reduce over the rows of each tile
        s = sq.reshape(r // ydimen, ydimen, c).sum(dim=1)
    else:
        s = sq.reshape(r // ydimen, ydimen, c // xdimen, xdimen).sum(dim=3).sum(dim=1)
    return s.reshape(r // ydimen, 1, c // xdimen, 1)


def tile_nonzero(mat: torch.Tensor, ydimen: int, xdimen: int) -> torch.Tensor:
    """Boolean (R/ydimen, C/xdimen): the tile holds at least one exact nonzero."""
    return (tiles(mat, ydimen, xdimen) != 0).any(dim=3).any(dim=1)


def add_group_lasso_(grad: torch.Tensor, mat: torch.Tensor, ydimen: int, xdimen: int, lam: float,
                     sq: torch.Tensor | None = None) -> torch.Tensor:
    """grad (R x C, in place) += lam * w / ||tile|| (0 for an all-zero tile); returns the tile norms."""
    norms = tile_sumsq(mat, ydimen, xdimen, sq).sqrt_()
    safe = norms.masked_fill(norms == 0, 1)   # an all-zero tile is 0 / 1 = 0
    tiles(grad, ydimen, xdimen).addcdiv_(tiles(mat, ydimen, xdimen), safe, value=lam)
    return norms


def group_lasso_step(mat: torch.Tensor, ydimen: int, xdimen: int):
    """For the tiling of ``mat`` into ydimen x xdimen blocks: (w / ||tile|| with 0 for an all-zero tile,
    shaped like ``mat``; the norms (R/ydimen, 1, C/xdimen, 1)).

    This is the subgradient of sum_tiles ||tile||_2 that the fork adds (``vsDivCheckZero``: a tile whose
    sum of squares is exactly 0 contributes 0; there is no epsilon)."""
    norms = tile_sumsq(mat, ydimen, xdimen).sqrt_()
    safe = norms.masked_fill(norms == 0, 1)
    q = tiles(mat, ydimen, xdimen) / safe   # an all-zero tile is 0 / 1 = 0
    return q.reshape(mat.shape), norms


# -- structure -----------------------------------------------------------------------------------------


def nonzero_rows_cols(mat: torch.Tensor, groups: int = 1):
    """Per conv group: boolean (g, R/g) rows and (g, C) columns holding at least one exact nonzero."""
    r, c = mat.shape
    sub = (mat != 0).reshape(groups, r // groups, c)
    return sub.any(dim=2), sub.any(dim=1)


def _pct(zeros, total) -> float:
    # the fork computes the fraction in Dtype (float) and scales by 100
    if total == 0:
        return 0.0
    return float(np.float32(100) * (np.float32(zeros) / np.float32(total)))


def element_sparsity(t: torch.Tensor, threshold: float) -> float:
    """100 x fraction of entries with |w| < threshold (Blob::GetSparsity)."""
    return _pct(int((t.detach().abs() < threshold).sum()), t.numel())


def column_sparsity(t: torch.Tensor) -> float:
    """100 x fraction of all-zero columns of the whole R x C matrix (conv groups ignored, as in the fork)."""
    m = as_matrix(t.detach())
    return _pct(int((~(m != 0).any(dim=0)).sum()), m.shape[1])


def row_sparsity(t: torch.Tensor) -> float:
    """100 x fraction of all-zero rows."""
    m = as_matrix(t.detach())
    return _pct(int((~(m != 0).any(dim=1)).sum()), m.shape[0])


def block_sparsity(t: torch.Tensor, ydimen: int, xdimen: int) -> float:
    """100 x fraction of all-zero ydimen x xdimen tiles (the caller checked that the block divides)."""
    nz = tile_nonzero(as_matrix(t.detach()), ydimen, xdimen)
    return _pct(int((~nz).sum()), nz.numel())


def zero_stats(t: torch.Tensor) -> dict:
    """Exact zeros, all-zero rows and all-zero columns of the R x C view (golden trajectory's zero_stats)."""
    m = as_matrix(t.detach())
    nz = m != 0
    return {"zeros": int((~nz).sum()), "count": m.numel(),
            "zero_rows": int((~nz.any(dim=1)).sum()), "rows": m.shape[0],
            "zero_cols": int((~nz.any(dim=0)).sum()), "cols": m.shape[1]}


def matrix_flops(weight: torch.Tensor, groups: int = 1, positions: int = 1):
    """(dense, remaining, rows_kept, mean cols_kept) multiply-accumulates of a weight's lowered GEMM(s).

    A conv group's GEMM is (R/g x C) . (C x positions); after dropping its all-zero rows and columns it is
    (r_kept x c_kept) . (c_kept x positions). Bias and activation work is not counted (the quantity the
    SSL paper's FLOP percentages compare)."""
    m = as_matrix(weight.detach())
    r, c = m.shape
    rows, cols = nonzero_rows_cols(m, groups)          # (g, R/g), (g, C)
    rk = rows.sum(dim=1).cpu().numpy().astype(np.int64)
    ck = cols.sum(dim=1).cpu().numpy().astype(np.int64)
    dense = int(r * c * positions)
    remaining = int((rk * ck).sum() * positions)
    return dense, remaining, int(rk.sum()), float(ck.mean())


# -- zero threshold and connectivity masks -------------------------------------------------------------

_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


def zerout_(t: torch.Tensor, threshold: float) -> torch.Tensor:
    """Blob::Zerout in place: every entry with -threshold < w < threshold becomes exactly 0."""
    if threshold > 0:
        if t.dtype in _NP_DTYPE:
            # |w| < thr  <=>  |w| <= the largest value of the dtype below thr: hardshrink's test, one fused
            # pass (masked_fill_ on t.abs() < thr needs three); NaN stays, zeros come out as +0 either way
            dt = _NP_DTYPE[t.dtype]
            lam = float(np.nextafter(dt(threshold), dt(0)))
            d = t.detach()
            torch.hardshrink(d, lam, out=d)
        else:
            t.masked_fill_(t.abs() < threshold, 0)
    return t


def eltwise_mask(w: torch.Tensor) -> torch.Tensor:
    """DISCONNECTED_ELTWISE: 1 where the weight is nonzero (every zero weight is frozen); dtype of ``w``."""
    return (w.detach() != 0).to(w.dtype)


def groupwise_mask(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """DISCONNECTED_GRPWISE: per conv group, mask[r, c] = (row r has a nonzero) and (column c has a
    nonzero) -- only weights in an all-zero row or column are frozen; shaped and typed like ``w``."""
    m = as_matrix(w.detach())
    r, c = m.shape
    rows, cols = nonzero_rows_cols(m, groups)                 # (g, R/g), (g, C)
    keep = (rows.unsqueeze(2) & cols.unsqueeze(1)).reshape(r, c)
    return keep.to(w.dtype).reshape(w.shape)
