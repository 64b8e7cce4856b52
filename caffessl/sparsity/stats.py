"""Structure statistics of one param's R x C matrix view (element, column, row and block sparsity, zero
counts), kept importable under their old name: they live in :mod:`caffessl.weights_matrix`."""
from ..weights_matrix import (block_sparsity, column_sparsity, element_sparsity, row_sparsity,  # noqa: F401
                              zero_stats)
