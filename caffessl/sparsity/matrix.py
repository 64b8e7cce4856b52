"""The 2-D matrix view of a param (the SSL fork's one way of seeing a weight), and block tiles over it.

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

import torch


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


def conv_groups(layer_param) -> int:
    """Net::param_groups_: convolution_param.group if the layer has a convolution_param, else 1."""
    return int(layer_param.convolution_param.group) if layer_param.HasField("convolution_param") else 1


def nonzero_rows_cols(mat: torch.Tensor, groups: int = 1):
    """Per conv group: boolean (g, R/g) rows and (g, C) columns holding at least one exact nonzero."""
    r, c = mat.shape
    sub = (mat != 0).reshape(groups, r // groups, c)
    return sub.any(dim=2), sub.any(dim=1)
