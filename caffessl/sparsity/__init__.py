"""Structure of sparse weights: per-layer analysis, FLOP counting, plots and slimming. The weight-matrix view
and its statistics live in caffessl.weights_matrix; connectivity masks on the layers (Layer.mask)."""
