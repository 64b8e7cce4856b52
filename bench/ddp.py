"""Data-parallel training throughput: images/s of LeNet for 1 and 2 gloo processes on this machine (and the
ratio), and for 1..N GPUs (NCCL) where CUDA devices are present.

Run from the repository root:  python bench/ddp.py [--iters 60] [--warmup 10] [--batch 64] [--procs 1,2]

Each configuration is a fresh world started by caffessl's launcher (caffessl/parallel/launch.py, as
`caffessl train --procs=N` / `--gpu=...` start it): every rank builds the solver inside the process group, trains
``--warmup`` iterations, then ``--iters`` timed iterations between two barriers; images/s = ranks x batch x
iters / wall time of rank 0. The 1-process row is the same script in a world of one (no all-reduce): the
baseline of the ratio. LeNet on generated 28x28 records in an LMDB (data loading included), SGD momentum 0.9.
Ideal scaling is ratio = number of processes; on a machine with fewer free cores than processes the ratio
shows the contention, not the method.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _make_case(d: Path, batch: int):
    from tests.parallel._lenet import lenet_text, make_data, solver_text
    make_data(d, n_train=2048, n_test=20)
    (d / "net.prototxt").write_text(lenet_text(batch))
    (d / "s.prototxt").write_text(solver_text("net.prototxt", max_iter=10 ** 6, display=0, test_interval=0,
                                              test_iter=0).replace("test_iter: 0\n", ""))


def worker(cfg_path):
    import torch
    import torch.distributed as dist
    cfg = json.loads(Path(cfg_path).read_text())
    os.chdir(cfg["dir"])
    torch.set_num_threads(cfg["threads"])
    import caffessl as caffe
    if cfg["gpu"]:
        lr = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(lr)
        caffe.set_device(lr)
        caffe.set_mode_gpu()
    dist.init_process_group("nccl" if cfg["gpu"] else "gloo")
    solver = caffe.get_solver("s.prototxt")
    solver.step(cfg["warmup"])
    if cfg["gpu"]:
        torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    solver.step(cfg["iters"])
    if cfg["gpu"]:
        torch.cuda.synchronize()
    dist.barrier()
    dt = time.perf_counter() - t0
    if dist.get_rank() == 0:
        Path(cfg["out"]).write_text(json.dumps({"seconds": dt}))
    dist.destroy_process_group()


def run(d: Path, n: int, gpu: bool, args) -> float:
    from caffessl.parallel.launch import launch
    out = d / f"result_{'gpu' if gpu else 'cpu'}_{n}.json"
    cfg = d / f"cfg_{n}_{gpu}.json"
    threads = args.threads or max(1, (os.cpu_count() or 1) // n)
    cfg.write_text(json.dumps({"dir": str(d), "gpu": gpu, "warmup": args.warmup, "iters": args.iters,
                               "out": str(out), "threads": threads}))
    launch([sys.executable, str(Path(__file__).resolve()), "--worker", str(cfg)], n)
    seconds = json.loads(out.read_text())["seconds"]
    return n * args.batch * args.iters / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--procs", default="1,2", help="CPU process counts to run (the first is the baseline)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / processes)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker)
    import torch
    print(f"# python bench/ddp.py --iters {args.iters} --warmup {args.warmup} --batch {args.batch} "
          f"--procs {args.procs}   (torch {torch.__version__}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _make_case(d, args.batch)
        rows = []
        counts = [int(x) for x in args.procs.split(",")]
        base = None
        for n in counts:
            ips = run(d, n, False, args)
            base = base or ips
            rows.append(("gloo CPU", n, ips, ips / base))
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpu:
            gbase = None
            for n in range(1, n_gpu + 1):
                ips = run(d, n, True, args)
                gbase = gbase or ips
                rows.append(("NCCL GPU", n, ips, ips / gbase))
    print(f"{'backend':<10} {'ranks':>5} {'images/s':>10} {'ratio':>7}")
    for backend, n, ips, ratio in rows:
        print(f"{backend:<10} {n:>5} {ips:>10.1f} {ratio:>6.2f}x")
    if not n_gpu:
        print("no CUDA device is present on this machine: the GPU rows (1..N GPUs, NCCL) were not run")


if __name__ == "__main__":
    main()
