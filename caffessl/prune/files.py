"""File-level pruning, shared by ``caffessl prune`` and the recipe runner: load, prune (``rounds`` times with
retraining in between), write the caffemodel + fine-tuning prototxt, and zero a solverstate's history."""
from __future__ import annotations

import os
import tempfile

from ..errors import PruneError
from .core import prune, save


def default_ft_model(out_weights) -> str:
    root = os.fspath(out_weights)
    for ext in (".caffemodel.h5", ".caffemodel", ".h5"):
        if root.endswith(ext):
            root = root[: -len(ext)]
            break
    return root + "_ft.prototxt"


def prune_files(model, weights, policy, amount, out_weights, out_model=None, *, layers=None, min_channels=1,
                round_to=1, clamp=False, depth=False, rounds=1, solver=None, overrides=None, data=None,
                solverstate=None, out_solverstate=None, progress=True, log_file=None):
    """Returns the PruneResult of each round. With ``solver``, every round is followed by retraining the
    fine-tuning net (pruned connections frozen) from the pruned weights; ``out_weights`` gets the last
    round's (retrained) weights."""
    from ..net import TEST, TRAIN, Net
    from .training import solver_param, train
    if rounds < 1:
        raise PruneError(f"--rounds must be >= 1, got {rounds}")
    if rounds > 1 and not solver:
        raise PruneError(f"--rounds {rounds} retrains between rounds: give --solver")
    if out_solverstate and not solverstate:
        raise PruneError("--out-solverstate needs --solverstate (the state whose history is zeroed)")
    out_model = out_model or default_ft_model(out_weights)
    if data:
        from ..io.prototxt import read_net_prototxt
        from .training import prepare_mnist
        prepare_mnist(read_net_prototxt(model), data)
    net = Net(model, phase=TEST, weights=weights)
    results = []
    current = weights
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_weights))) as tmp:
        for r in range(rounds):
            res = prune(net, policy, amount, layers=layers, min_channels=min_channels, round_to=round_to,
                        clamp=clamp, depth=depth)
            results.append(res)
            if not solver:
                break
            pruned = os.path.join(tmp, f"round{r}.caffemodel")
            save(res, net, pruned)
            sp = solver_param(solver, res.ft_param, overrides)
            current = os.path.join(tmp, f"round{r}_trained.caffemodel")
            train(sp, pruned, current, data=data, progress=progress, log_file=log_file, source=os.fspath(solver))
            net = Net(res.ft_param, phase=TEST, weights=current)
        save(results[-1], net, out_weights, out_model)
    if solverstate:
        from ..io.solverstate import read_solverstate, write_solverstate
        from .history import zero_history
        st = read_solverstate(solverstate)
        train_net = Net(model, phase=TRAIN)
        zero_history(st, list(train_net.learnable_params), results[-1].zeroed)
        st.learned_net = os.fspath(out_weights)
        write_solverstate(out_solverstate or solverstate, st)
    return results, out_model
