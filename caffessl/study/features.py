"""Implicit filter-level sparsity (Mehta, Kim, Theobalt, "On Implicit Filter Level Sparsity in Convolutional
Neural Networks", CVPR 2019): which features of a trained net are dead, and how selective the live ones are.

A *feature* is one output channel of a Convolution / InnerProduct layer, observed after the ReLU that follows it
(through an optional BatchNorm and Scale: conv -> [BatchNorm] -> [Scale] -> ReLU, in place or not); without a
ReLU in that chain it is the layer's own output. Over ``iterations`` batches of the net's data:

* pooled activation of sample n, feature c:  a[n, c] = max over the feature map of |activation|;
* corpus max:  M[c] = max_n a[n, c];  the feature is **inactive by activation** if M[c] < ``act_threshold``
  (the study's 1e-12);
* **inactive by γ**: the Scale layer of the chain has |γ_c| < ``gamma_threshold`` (1e-3); None without a Scale;
* **selectivity** of a live feature: the fraction of samples with a[n, c] / M[c] <= ``sel_threshold`` (1e-3),
  i.e. that do not activate it (universality = 1 - selectivity); the mean is over live features;
* **zero filters**: rows of the layer's weight matrix that are exactly 0 (what SSL's row group Lasso produces),
  and their overlap with the inactive features.

Memory is bounded: selectivity needs M before it can normalize, so the data is streamed **twice** (two passes of
``iterations`` batches, the net rebuilt and the random seed reset before each, so the data source restarts and
random transforms repeat); per layer only O(features) numbers are kept (M, the counts), never per-sample values.
The second pass recomputes M and the result says whether both passes saw the same data (``passes_agree``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import CaffeSSLError, LayerConfigError
from ..sparsity.matrix import as_matrix

FEATURE_TYPES = ("Convolution", "InnerProduct")
CHAIN_TYPES = ("BatchNorm", "Scale", "ReLU")
ACT_THRESHOLD, GAMMA_THRESHOLD, SEL_THRESHOLD = 1e-12, 1e-3, 1e-3
HIST_BINS = 10


@dataclass
class Probe:
    """Where one layer's features are observed: after layer ``index`` (the conv or its ReLU), in blob ``blob``."""
    layer: str
    type: str
    index: int
    blob: str
    after: str                  # the layer whose output is read ("conv1" or "relu1")
    scale_layer: str | None     # the Scale of the chain (holds γ), if any


@dataclass
class LayerFeatures:
    layer: str
    type: str
    observed_after: str
    features: int
    inactive_act: list                 # feature indices with M < act_threshold
    inactive_gamma: list | None        # feature indices with |γ| < gamma_threshold (None: no Scale)
    zero_filters: list                 # all-zero rows of the weight matrix
    selectivity: list = field(repr=False, default_factory=list)   # per feature; NaN for inactive ones
    corpus_max: list = field(repr=False, default_factory=list)

    @property
    def live_selectivity(self) -> np.ndarray:
        s = np.asarray(self.selectivity, dtype=np.float64)
        return s[~np.isnan(s)]

    @property
    def mean_selectivity(self) -> float:
        s = self.live_selectivity
        return float(s.mean()) if s.size else float("nan")

    def histogram(self, bins: int = HIST_BINS) -> list:
        return np.histogram(self.live_selectivity, bins=bins, range=(0.0, 1.0))[0].tolist()

    def to_dict(self) -> dict:
        zero, dead = set(self.zero_filters), set(self.inactive_act)
        return {"layer": self.layer, "type": self.type, "observed_after": self.observed_after,
                "features": self.features,
                "inactive_by_activation": len(self.inactive_act), "inactive_by_activation_idx": self.inactive_act,
                "inactive_by_gamma": None if self.inactive_gamma is None else len(self.inactive_gamma),
                "inactive_by_gamma_idx": self.inactive_gamma,
                "zero_filters": len(self.zero_filters), "zero_filters_idx": self.zero_filters,
                "zero_and_inactive": len(zero & dead), "inactive_not_zero": len(dead - zero),
                "zero_but_active": len(zero - dead),
                "mean_selectivity": _json_float(self.mean_selectivity),
                "selectivity_histogram": self.histogram(),
                "selectivity": [_json_float(v) for v in self.selectivity]}


def _json_float(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class FeatureReport:
    layers: list
    samples: int
    iterations: int
    thresholds: dict
    passes_agree: bool

    def totals(self) -> dict:
        feats = sum(l.features for l in self.layers)
        act = sum(len(l.inactive_act) for l in self.layers)
        with_g = [l for l in self.layers if l.inactive_gamma is not None]
        g_feats = sum(l.features for l in with_g)
        gam = sum(len(l.inactive_gamma) for l in with_g)
        live = np.concatenate([l.live_selectivity for l in self.layers]) if self.layers else np.zeros(0)
        return {"features": feats, "inactive_by_activation": act,
                "pct_inactive_by_activation": 100.0 * act / feats if feats else 0.0,
                "features_with_gamma": g_feats, "inactive_by_gamma": gam,
                "pct_inactive_by_gamma": 100.0 * gam / g_feats if g_feats else None,
                "zero_filters": sum(len(l.zero_filters) for l in self.layers),
                "mean_selectivity": float(live.mean()) if live.size else None}

    def to_dict(self) -> dict:
        return {"samples": self.samples, "iterations": self.iterations, "thresholds": self.thresholds,
                "passes_agree": self.passes_agree, "totals": self.totals(),
                "layers": [l.to_dict() for l in self.layers]}

    def table(self) -> str:
        head = ("layer", "after", "features", "inact(act)", "inact(gamma)", "zero filt", "zero&inact",
                "mean sel")
        rows = []
        for l in self.layers:
            d = l.to_dict()
            rows.append((l.layer, l.observed_after, str(l.features), str(d["inactive_by_activation"]),
                         "-" if d["inactive_by_gamma"] is None else str(d["inactive_by_gamma"]),
                         str(d["zero_filters"]), str(d["zero_and_inactive"]),
                         "-" if d["mean_selectivity"] is None else f"{d['mean_selectivity']:.3f}"))
        t = self.totals()
        rows.append(("total", "", str(t["features"]), f"{t['inactive_by_activation']} "
                     f"({t['pct_inactive_by_activation']:.1f}%)",
                     "-" if t["pct_inactive_by_gamma"] is None else
                     f"{t['inactive_by_gamma']} ({t['pct_inactive_by_gamma']:.1f}%)",
                     str(t["zero_filters"]), "", "-" if t["mean_selectivity"] is None else
                     f"{t['mean_selectivity']:.3f}"))
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"{self.samples} samples in {self.iterations} batches; inactive: max |activation| < "
                     f"{self.thresholds['activation']:g}, |gamma| < {self.thresholds['gamma']:g}; selectivity: "
                     f"share of samples with activation/max <= {self.thresholds['selectivity']:g}")
        if not self.passes_agree:
            lines.append("WARNING: the two passes over the data saw different maxima (a shuffling or randomly "
                         "transformed source?): selectivity is approximate")
        return "\n".join(lines)


# -- the graph: which blob to read for each layer ------------------------------------------------------------
def probes(net) -> list[Probe]:
    """One probe per Convolution / InnerProduct layer with weights, following conv -> [BN] -> [Scale] -> ReLU."""
    consumers: dict = {}
    for i, layer in enumerate(net.layers):
        for b in layer.param.bottom:
            consumers.setdefault(b, []).append(i)
    out = []
    for i, layer in enumerate(net.layers):
        lp = layer.param
        if lp.type not in FEATURE_TYPES or not layer.params:
            continue
        blob, idx, after, scale, relu_at = lp.top[0], i, lp.name, None, None
        cur_blob, cur_idx = blob, i
        while True:
            nxt = [j for j in consumers.get(cur_blob, []) if j > cur_idx]
            if not nxt:
                break
            j = nxt[0]
            nl = net.layers[j].param
            if nl.type not in CHAIN_TYPES or len(nl.bottom) != 1:
                break
            if nl.type == "Scale" and scale is None:
                scale = nl.name
            cur_blob, cur_idx = nl.top[0], j
            if nl.type == "ReLU":
                relu_at = (j, nl.top[0], nl.name)
                break
        if relu_at is not None:
            idx, blob, after = relu_at
        out.append(Probe(lp.name, lp.type, idx, blob, after, scale))
    return out


def _pooled(t: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N, C): max over the feature map of |activation|."""
    t = t.detach()
    if t.dim() < 2:
        raise LayerConfigError(f"feature blob of shape {tuple(t.shape)}: need (N, C, ...)")
    return t.abs().flatten(2).amax(dim=2) if t.dim() > 2 else t.abs()


def _stream(net, plist, iterations: int, batches, fn):
    """Run ``iterations`` forwards (layers 0 .. last probe), calling fn(k, pooled (N, C)) for probe k."""
    order = sorted(range(len(plist)), key=lambda k: plist[k].index)
    it = iter(batches) if batches is not None else None
    with torch.no_grad():
        for _ in range(iterations):
            if it is not None:
                try:
                    feed = next(it)
                except StopIteration:
                    raise CaffeSSLError(f"the batches ran out before {iterations} iterations") from None
                for name, value in feed.items():
                    net.blobs[name].data[...] = value
            start = 0
            for k in order:
                p = plist[k]
                if p.index >= start:
                    net._forward_range(start, p.index)
                    start = p.index + 1
                fn(k, _pooled(net.blobs[p.blob].tensor))


def _zero_rows(layer) -> list:
    m = as_matrix(layer.params[0].detach())
    return torch.nonzero(~(m != 0).any(dim=1)).flatten().tolist()


def feature_report(make_net, iterations: int, *, batches=None, act_threshold: float = ACT_THRESHOLD,
                   gamma_threshold: float = GAMMA_THRESHOLD, sel_threshold: float = SEL_THRESHOLD,
                   seed: int = 0) -> FeatureReport:
    """Stream ``iterations`` batches twice through ``make_net()`` (a fresh Net each pass) and measure every
    feature. ``batches``: a callable returning an iterable of {blob name: array} fed before each forward (for
    nets with Input layers); None when the net's own data layers produce the batches."""
    from .. import mode
    if iterations < 1:
        raise CaffeSSLError(f"iterations must be >= 1, got {iterations}")
    for name, v in (("act_threshold", act_threshold), ("gamma_threshold", gamma_threshold),
                    ("sel_threshold", sel_threshold)):
        if not v >= 0:
            raise CaffeSSLError(f"{name} must be >= 0, got {v}")
    mode.set_random_seed(seed)
    net = make_net()
    if batches is None and net.inputs:
        raise LayerConfigError(f"net '{net.name}' reads its data from Input blob(s) {', '.join(net.inputs)}: the "
                               f"features need a net whose data layers produce the batches (the train/test "
                               f"prototxt, not a deploy one)")
    plist = probes(net)
    if not plist:
        raise LayerConfigError(f"net '{net.name}' has no Convolution / InnerProduct layer with weights")
    maxes: list = [None] * len(plist)
    samples = [0]

    def first(k, a):
        m = a.amax(dim=0)
        maxes[k] = m if maxes[k] is None else torch.maximum(maxes[k], m)
        if k == 0:
            samples[0] += a.shape[0]

    _stream(net, plist, iterations, batches() if batches else None, first)
    # pass 2: a fresh net from the same seed re-reads the same batches; count the non-activating samples
    mode.set_random_seed(seed)
    net = make_net()
    counts = [torch.zeros_like(m) for m in maxes]
    maxes2: list = [None] * len(plist)
    limits = [m * sel_threshold for m in maxes]

    def second(k, a):
        counts[k] += (a <= limits[k]).sum(dim=0).to(counts[k].dtype)
        m = a.amax(dim=0)
        maxes2[k] = m if maxes2[k] is None else torch.maximum(maxes2[k], m)

    _stream(net, plist, iterations, batches() if batches else None, second)
    agree = all(torch.equal(a, b) for a, b in zip(maxes, maxes2))
    layers = []
    for k, p in enumerate(plist):
        m = maxes[k].double().cpu().numpy()
        dead = m < act_threshold
        sel = counts[k].double().cpu().numpy() / samples[0]
        sel[dead] = np.nan
        gamma_dead = None
        if p.scale_layer is not None:
            g = net.layer_dict[p.scale_layer].params[0].detach().flatten().double().cpu().numpy()
            gamma_dead = np.nonzero(np.abs(g) < gamma_threshold)[0].tolist()
        layers.append(LayerFeatures(p.layer, p.type, p.after, int(m.shape[0]), np.nonzero(dead)[0].tolist(),
                                    gamma_dead, _zero_rows(net.layer_dict[p.layer]), sel.tolist(), m.tolist()))
    return FeatureReport(layers, samples[0], iterations,
                         {"activation": act_threshold, "gamma": gamma_threshold, "selectivity": sel_threshold},
                         agree)


def features(model, weights=None, *, phase=None, iterations: int = 50, **kwargs) -> FeatureReport:
    """The ``caffessl features`` analysis of ``model`` (prototxt path or NetParameter) with ``weights``."""
    from ..net import TEST, Net
    from ..sparsity.analyze import load_net

    def make():
        if weights:
            return load_net(model, weights, TEST if phase is None else phase)
        return Net(model, TEST if phase is None else phase)

    return feature_report(make, iterations, **kwargs)
