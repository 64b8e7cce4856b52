"""Gradient all-reduce and start-up broadcast over flat buffers (one collective per dtype and device, as
Caffe 1.0's NCCL path reduces one contiguous diff buffer).

``GradientAllReduce`` sums the learnable params' diffs of every rank and scales them by 1/N (Caffe:
ncclAllReduce(sum) then caffe_gpu_scal(1/solver_count)); it carries a few extra float slots through the same
collective, so agreeing on a signal request costs no extra message.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..errors import DistributedError
from .group import first_line


def _groups(tensors):
    """Indices of ``tensors`` grouped by (dtype, device), in first-seen order."""
    out: dict = {}
    for i, t in enumerate(tensors):
        out.setdefault((t.dtype, t.device), []).append(i)
    return list(out.values())


def collective(what: str, fn, *args, **kwargs):
    """Run a torch.distributed call; a peer that died or timed out becomes one DistributedError line."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ValueError) as e:   # gloo: "Connection closed by peer", NCCL/gloo timeouts
        r = dist.get_rank() if dist.is_initialized() else 0
        raise DistributedError(f"rank {r}: {what} failed -- another rank stopped, was killed or is unreachable "
                               f"({first_line(e)})") from None


class GradientAllReduce:
    """Averages ``grads`` (tensors, updated in place) over the world; ``extra`` floats ride along, summed."""

    def __init__(self, grads, n_extra: int = 0):
        self.grads = list(grads)
        self.groups = _groups(self.grads)
        self.n_extra = int(n_extra)
        self.world = dist.get_world_size()
        self._buffers = [None] * len(self.groups)

    def _buffer(self, k, numel, like):
        b = self._buffers[k]
        if b is None or b.numel() != numel:
            b = self._buffers[k] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return b

    def __call__(self, extra=(), what="all-reduce of the gradients") -> list[float]:
        """Average the gradients in place; return the world's sums of ``extra`` (len n_extra)."""
        sums = [0.0] * self.n_extra
        for k, idx in enumerate(self.groups):
            ts = [self.grads[i] for i in idx]
            n_extra = self.n_extra if k == 0 else 0
            numel = sum(t.numel() for t in ts)
            buf = self._buffer(k, numel + n_extra, ts[0])
            torch.cat([t.reshape(-1) for t in ts], out=buf[:numel])
            if n_extra:
                buf[numel:] = torch.tensor(list(extra), dtype=buf.dtype)
            collective(what, dist.all_reduce, buf, op=dist.ReduceOp.SUM)
            if n_extra:
                sums = [float(v) for v in buf[numel:].cpu()]
            buf[:numel].mul_(1.0 / self.world)
            off = 0
            for t in ts:
                t.copy_(buf[off:off + t.numel()].view(t.shape))
                off += t.numel()
        return sums


def broadcast_from_root(tensors, what="broadcast of the weights from rank 0") -> None:
    """Copy rank 0's values of ``tensors`` into every rank's (in place), one flat buffer per dtype/device."""
    tensors = list(tensors)
    for idx in _groups(tensors):
        ts = [tensors[i] for i in idx]
        with torch.no_grad():
            buf = torch.cat([t.detach().reshape(-1) for t in ts])
            collective(what, dist.broadcast, buf, src=0)
            off = 0
            for t in ts:
                t.detach().copy_(buf[off:off + t.numel()].view(t.shape))
                off += t.numel()
