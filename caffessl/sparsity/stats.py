"""Structure statistics of one param's R x C matrix view: element, column, row and block sparsity."""
from __future__ import annotations

import numpy as np
import torch

from .matrix import as_matrix, tile_nonzero


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
