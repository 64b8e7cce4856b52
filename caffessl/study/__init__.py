"""The implicit-sparsity study as a tool: dead features and selectivity (``features``), decoupled weight decay
(caffessl/solver/decoupled.py) and solver sweeps from YAML (``sweep``)."""
