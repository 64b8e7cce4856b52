"""Sensitivity analysis: prune each layer alone at each ratio and measure the test error, to choose per-layer
ratios from (the table, a CSV and a plot of error vs ratio, one line per layer)."""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field

import torch

from ..errors import PruneError
from .core import WEIGHT_TYPES, prune
from .channels import channel_flow, is_producer
from .policies import STRUCTURED, check_amount


@dataclass
class Sensitivity:
    policy: str
    baseline: float                                 # error of the unpruned net
    rows: list = field(default_factory=list)        # (layer, ratio, error, non-zero weights kept fraction)

    def table(self) -> str:
        ratios = sorted({r for _, r, _, _ in self.rows})
        layers = list(dict.fromkeys(l for l, _, _, _ in self.rows))
        err = {(l, r): e for l, r, e, _ in self.rows}
        lines = [f"test error % ({self.policy}; baseline {100 * self.baseline:.2f} %)",
                 "| layer | " + " | ".join(f"{r:g}" for r in ratios) + " |",
                 "|---|" + "---|" * len(ratios)]
        for l in layers:
            lines.append(f"| {l} | " + " | ".join(f"{100 * err[(l, r)]:.2f}" for r in ratios) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["layer", "ratio", "error", "weights_kept"])
        for l, r, e, k in self.rows:
            w.writerow([l, r, f"{e:.6f}", f"{k:.6f}"])
        return out.getvalue()

    def plot(self, path) -> str:
        from ..plotting import figure, save_png
        fig = figure(7, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        for l in dict.fromkeys(r[0] for r in self.rows):
            pts = sorted((r, e) for ll, r, e, _ in self.rows if ll == l)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=l)
        ax.axhline(100 * self.baseline, color="gray", linestyle="--", label="unpruned")
        ax.set_xlabel(f"{self.policy} amount")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"sensitivity: each layer pruned alone ({self.policy})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_png(fig, path)


class CachedBatches:
    """The first ``iterations`` batches of the TEST net's data layers, replayed for every measurement."""

    def __init__(self, net, iterations: int):
        self.net = net
        self.tops = [t for l in net.layers if l.is_data for t in l.param.top]
        self.start = next(l.name for l in net.layers if not l.is_data)
        self.batches = []
        with torch.no_grad():
            for _ in range(iterations):
                net.forward()
                self.batches.append({t: net.blobs[t].data.copy() for t in self.tops})
        from .training import accuracy_blob
        self.acc = accuracy_blob(net)
        if self.acc is None:
            raise PruneError(f"net '{net.name}': the TEST net has no Accuracy layer to measure the error with")

    def error(self) -> float:
        a = 0.0
        with torch.no_grad():
            for b in self.batches:
                for t, v in b.items():
                    self.net.blobs[t].data[...] = v
                self.net.forward(start=self.start)
                a += float(self.net.blobs[self.acc].data.reshape(-1)[0])
        return 1.0 - a / len(self.batches)


def analyze(net, policy: str, ratios, *, layers=None, iterations: int = 10, progress: bool = True) -> Sensitivity:
    """Prune each layer of ``net`` (TEST phase, weights loaded) alone at each ratio; the net is restored after."""
    ratios = [check_amount(policy, r, "--ratios") for r in ratios]
    if not ratios:
        raise PruneError("--ratios: give at least one ratio")
    if layers:
        names = list(layers)
    elif policy in STRUCTURED:
        names = [l.name for i, l in enumerate(net.layers) if is_producer(l) and not channel_flow(net, i).blocker]
    else:
        names = [l.name for l in net.layers if l.type in WEIGHT_TYPES and l.params]
    batches = CachedBatches(net, iterations)
    saved = {l.name: [p.detach().clone() for p in l.params] for l in net.layers if l.params}
    result = Sensitivity(policy, batches.error())
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=len(names) * len(ratios), desc="sensitivity", leave=False)
    try:
        for name in names:
            for r in ratios:
                pr = prune(net, policy, r, layers={name: r}, min_channels=1, clamp=True)
                rep = next(x for x in pr.layers if x.layer == name)
                result.rows.append((name, r, batches.error(), rep.nonzero_after / max(rep.nonzero_before, 1)))
                with torch.no_grad():
                    for l in net.layers:
                        for p, s in zip(l.params, saved.get(l.name, [])):
                            p.copy_(s)
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return result
