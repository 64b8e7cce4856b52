"""Training: the solver loop (solver.py), lr policies, update rules, regularization, stabilization, snapshots."""
