"""One rank of a pycaffe-surface data-parallel run (started by the tests through caffessl's launcher):
joins the gloo group from the environment, builds each configured solver inside it, steps one iteration at
a time recording a SHA-256 of the weights' bytes after every step, saves the final weights."""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import torch.distributed as dist


def digest(net):
    h = hashlib.sha256()
    for name, blobs in net.params.items():
        for b in blobs:
            h.update(np.ascontiguousarray(b.data).tobytes())
    return h.hexdigest()


def main(cfg_path):
    cfg = json.loads(open(cfg_path).read())
    os.chdir(cfg["cwd"])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    import caffessl as caffe
    from caffessl.errors import DistributedError
    out = {}
    for run in cfg["runs"]:
        solver = caffe.get_solver(run["solver"])
        if "actions" in run:     # {call number: action} of this rank's action function; then solve()
            plan = {int(k): v for k, v in run["actions"][rank].items()}
            calls = []
            solver.action_fn = lambda: (calls.append(1), plan.get(len(calls), "none"))[1]
            solver.solve()
            out[run["name"]] = {"iter": solver.iter, "early_exit": solver.requested_early_exit}
            continue
        assert solver.parallel is not None and solver.parallel.world == dist.get_world_size()
        if run.get("weights"):
            solver.net.copy_from(run["weights"])
        steps = []
        for _ in range(run["iters"]):
            solver.step(1)
            steps.append(digest(solver.net))
        solver.parallel.check_weights()
        np.savez(f"{run['name']}_rank{rank}.npz", **{f"{n}/{i}": b.data for n, bl in solver.net.params.items()
                                                    for i, b in enumerate(bl)})
        out[run["name"]] = {"steps": steps, "test_nets": len(solver.test_nets)}
        if run.get("perturb_rank") == rank:           # the consistency check must catch a changed weight
            solver.net.params["conv1"][0].data.flat[0] += 1e-7
        try:
            solver.parallel.check_weights()
            out[run["name"]]["check_after_perturb"] = "passed"
        except DistributedError as e:
            out[run["name"]]["check_after_perturb"] = str(e)
    with open(f"result_rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
