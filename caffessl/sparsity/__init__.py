"""Structure of sparse weights: the fork's 2-D matrix view, structure statistics, FLOP counting, log lines,
connectivity masks."""
