"""``auto``: pick a kernel per layer from the weights' measured structure.

Rule (constants fitted on bench/conv_modes.py, CPU, 2 threads; see bench/RESULTS.md "## Conv modes"):

* f = remaining-FLOP fraction of CCNMM = sum over groups (kept rows x kept cols) / (rows x cols);
* d = element density = nonzeros / (rows x cols).

1. CCNMM   if f <= CCNMM_MAX_FRACTION (structured sparsity leaves at most that share of the work);
2. CSRMM   elif d <= CSR_MAX_DENSITY (>= 94% zeros but without structure to squeeze: MKL's SpMM runs at
   ~1/10 of oneDNN's dense rate here, so at 90% zeros CSRMM mostly loses to dense (0.35-1.26x, faster in 0-4
   of 10 AlexNet cells per run), at 95% it mostly wins (1.04-2.18x in 8-9 of 10 cells per run; conv1 at
   batch 1 0.79-1.01x));
3. GEMM    otherwise (the dense default, F.conv2d / F.linear).
"""
from __future__ import annotations

CCNMM_MAX_FRACTION = 0.6
CSR_MAX_DENSITY = 0.06


def choose(structure) -> str:
    f = structure.remaining_fraction()
    d = structure.nnz / structure.numel if structure.numel else 0.0
    if f <= CCNMM_MAX_FRACTION:
        return "ccnmm"
    if d <= CSR_MAX_DENSITY:
        return "csrmm"
    return "gemm"
