"""The weight-matrix view, kept importable under its old name: it lives in :mod:`caffessl.weights_matrix`
(a module with no dependencies inside caffessl, shared by the Net, the Solver, the conv modes and sparsity/)."""
from ..weights_matrix import (add_group_lasso_, as_matrix, check_block, conv_groups, group_lasso_step,  # noqa: F401
                              matrix_shape, nonzero_rows_cols, tile_nonzero, tile_sumsq, tiles)
