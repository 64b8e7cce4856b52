"""``prune(net, policy, amount)``: apply one policy to a Net's weights in place, with the guardrails, and give
back what fine-tuning needs (a ``_ft`` NetParameter with ``connectivity_mode`` set on every layer it changed)
and a per-layer report.

Guardrails: a layer keeps at least ``min_channels`` filters (default 1; a policy that would keep fewer stops
with a PruneGuardrailError naming the layer, unless ``clamp`` keeps the strongest ``min_channels`` instead or
``min_channels=0`` allows emptying it -- ``slim`` then keeps one channel, or removes a residual branch whose
weights are all zero); with ``depth`` a layer inside a residual branch (its output reaches one input of an Eltwise
SUM through single-reader per-channel layers and convolutions) may be emptied instead: the whole branch goes --
the branch's last Convolution/InnerProduct is zeroed too, so that ``slim`` turns the branch into a Bias (depth
removal); ``round_to`` rounds each structured layer's kept count up to a multiple (e.g. 8).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PruneError, PruneGuardrailError
from ..proto import caffe_pb2
from ..sparsity.flops import net_flops
from . import policies as P
from .channels import channel_flow, is_producer, producer_rows, remove_channels

_Mode = caffe_pb2.LayerParameter
WEIGHT_TYPES = ("Convolution", "InnerProduct", "Deconvolution")


@dataclass
class LayerReport:
    layer: str
    type: str
    channels: int                 # filters / output neurons
    kept: int                     # filters with a non-zero weight left
    nonzero_before: int
    nonzero_after: int
    flops_before: int = 0
    flops_after: int = 0
    note: str = ""


@dataclass
class PruneResult:
    policy: str
    amount: float
    layers: list                                   # LayerReport per weight layer of the net
    ft_param: "caffe_pb2.NetParameter"             # the net to fine-tune with (connectivity_mode set)
    zeroed: dict = field(default_factory=dict)     # layer -> [bool array per blob: set to 0 by pruning]
    removed_layers: list = field(default_factory=list)   # absorbed mask layers

    @property
    def nonzero(self) -> tuple[int, int]:
        return (sum(r.nonzero_before for r in self.layers), sum(r.nonzero_after for r in self.layers))

    def table(self) -> str:
        """The report as a markdown table."""
        lines = ["| layer | type | filters kept | non-zero weights | MACs kept | note |", "|---|---|---|---|---|---|"]
        for r in self.layers:
            frac = r.flops_after / r.flops_before if r.flops_before else 0.0
            lines.append(f"| {r.layer} | {r.type} | {r.kept}/{r.channels} | {r.nonzero_before} -> "
                         f"{r.nonzero_after} | {frac:.1%} | {r.note} |")
        b, a = self.nonzero
        lines.append(f"| total | | | {b} -> {a} ({b / max(a, 1):.2f}x fewer) | | |")
        return "\n".join(lines)


def parse_layers(spec) -> dict:
    """``"conv1,conv2=0.5"`` or a list/dict -> {name: amount or None}."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        return {str(k): v for k, v in spec.items()}
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = {}
    for it in items:
        it = str(it).strip()
        if not it:
            continue
        name, _, val = it.partition("=")
        out[name.strip()] = val.strip() if val else None
    return out


def _check_layers(net, chosen: dict) -> None:
    names = list(net.layer_dict)
    for name in chosen:
        if name not in net.layer_dict:
            near = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise PruneError(f"--layers: no layer named '{name}' in net '{net.name}'{hint}")


def _snapshot(net):
    return {l.name: [p.detach().clone() for p in l.params] for l in net.layers if l.params}


def _nonzero_rows(layer) -> int:
    return int((producer_rows(layer, layer.params[0]) != 0).any(dim=1).sum())


def residual_tail(net, p: int) -> int | None:
    """The last Convolution/InnerProduct of the residual branch that layer ``p`` is in: ``p``'s output must
    reach one input of a two-input Eltwise SUM (the other input's coefficient 1) through layers that each are
    the only reader of their input -- per-channel layers and single-input convolutions / inner products. None
    when there is no such branch (removing ``p`` would then cut the net)."""
    from ..sparsity.channels import graph, role
    consumers, ins, outs = graph(net)
    tail, i = p, p
    while True:
        if len(outs[i]) != 1 or len(consumers.get(outs[i][0], [])) != 1:
            return None
        (j, b), = consumers[outs[i][0]]
        layer = net.layers[j]
        if layer.type == "Eltwise":
            ep = layer.param.eltwise_param
            coeff = list(ep.coeff) or [1.0, 1.0]
            ok = ep.operation == caffe_pb2.EltwiseParameter.SUM and len(layer.param.bottom) == 2
            return tail if ok and coeff[1 - b] == 1.0 else None
        if len(ins[j]) != 1 or layer.type == "Split":
            return None
        if layer.type in WEIGHT_TYPES and layer.params:
            tail = j
        elif role(layer) not in ("pass", "flatten"):      # what slim's depth rule passes through, too
            return None
        i = j


def _guard(net, index, kept, total, min_channels, clamp, depth, what) -> int | None:
    """None: the layer keeps enough; else the index of the residual branch's last weight layer to zero with
    it (``depth``, which wins over ``clamp`` where the layer is in a residual branch); stops when neither the
    guardrail nor ``clamp`` allows it."""
    if kept >= min_channels:
        return None
    name = net.layers[index].name
    tail = residual_tail(net, index)
    if depth and tail is not None:
        return tail
    if clamp:
        return None
    hint = ", --depth to remove its residual branch" if tail is not None else ""
    raise PruneGuardrailError(
        f"{what} would keep {kept} of {total} filters of layer '{name}' (the guardrail keeps at least "
        f"{min_channels}); lower the amount, pass --clamp to keep the {min_channels} strongest{hint}, or "
        f"--min-channels 0 to allow it")


def _remove_depth(net, index, tail, notes) -> None:
    """Empty layer ``index`` and zero its branch's last weight layer: the branch adds a per-channel constant."""
    layer, last = net.layers[index], net.layers[tail]
    with torch.no_grad():
        layer.params[0].zero_()
        last.params[0].zero_()
    notes.setdefault(layer.name, "emptied: its residual branch is removed (depth; `slim` makes it a Bias)")
    if tail != index:
        notes[last.name] = f"zeroed: the end of {layer.name}'s removed residual branch"


def _structured(net, policy, amount, chosen, min_channels, round_to, clamp, depth, notes):
    """reduction-rate / bn-gamma / mask-threshold: pick channels per producer, then remove them."""
    flows = {}
    for i, layer in enumerate(net.layers):
        if not is_producer(layer):
            continue
        flow = channel_flow(net, i)
        named = layer.name in chosen
        if flow.blocker:
            if named:
                raise PruneError(f"layer '{layer.name}': its channels cannot be removed: {flow.blocker}")
            continue
        if chosen and not named:
            continue
        flows[layer.name] = flow
    scores, selectors = {}, {}
    for name, flow in flows.items():
        layer = net.layers[flow.producer]
        rows = producer_rows(layer, layer.params[0])
        if policy == "reduction-rate":
            scores[name] = P.filter_norms(rows)
        else:
            sc = _channel_scale(net, flow, policy)
            if sc is None:
                if name in chosen:
                    want = "a Scale after a BatchNorm (or alone)" if policy == "bn-gamma" else \
                        "a mask (a Scale without bias; `prune --insert-masks` adds them)"
                    raise PruneError(f"layer '{name}': policy {policy} needs {want} on its channels")
                continue
            scores[name], selectors[name] = sc[1].params[0], sc
    if not scores:
        raise PruneError(f"policy {policy}: no layer of net '{net.name}' has channels it can remove")
    threshold = P.global_quantile(list(scores.values()), amount) if policy == "bn-gamma" else None
    for name, s in scores.items():
        flow = flows[name]
        layer = net.layers[flow.producer]
        a = P.check_amount(policy, chosen[name], f"--layers {name}=") if chosen.get(name) is not None else amount
        if policy == "reduction-rate":
            keep = P.reduction_rate_keep(producer_rows(layer, layer.params[0]), a, round_to)
        elif policy == "bn-gamma":      # |gamma| under the quantile goes, and gamma = 0 always (a constant channel:
            # with most gammas at 0 -- the L1 plus Zerout's 1e-4 -- the quantile itself is 0, and none is under it)
            keep = P.below_keep(s, threshold if chosen.get(name) is None else P.global_quantile([s], a))
            keep &= s.detach().cpu().numpy() != 0
        else:
            keep = P.below_keep(s, a, inclusive=True)
        keep = P.round_kept(s.abs(), keep, round_to) if policy != "reduction-rate" else keep
        tail = _guard(net, flow.producer, int(keep.sum()), keep.size, min_channels, clamp, depth,
                      f"{policy} {a:g}")
        if tail is None and keep.sum() < min_channels:
            keep = P.strongest(s.abs(), min_channels)
        if policy == "mask-threshold":
            _absorb_mask(layer, selectors[name][1])
        if tail is not None:
            keep[:] = False
        unfolded = remove_channels(net, flow, ~keep)
        if tail is not None:
            _remove_depth(net, flow.producer, tail, notes)
            continue
        mine = [f"{int((~keep).sum())} filter(s) removed"]
        if unfolded:
            mine.append(f"{unfolded} not folded exactly (padding or no bias downstream)")
        notes[name] = "; ".join(mine + ([notes[name]] if notes.get(name) else []))
        for i in flow.absorbers:
            notes.setdefault(net.layers[i].name, f"inputs of {name}'s removed channels")
    return [sel[1].name for sel in selectors.values()] if policy == "mask-threshold" else []


def _channel_scale(net, flow, policy):
    """(index, layer) of the per-channel factor the policy reads: bn-gamma -- the first Scale of the flow;
    mask-threshold -- a Scale without bias term before any BatchNorm."""
    for i in flow.passes:
        layer = net.layers[i]
        if layer.type == "BatchNorm" and policy == "mask-threshold":
            return None
        if layer.type == "Scale" and layer.params:
            if policy == "mask-threshold" and layer.param.scale_param.bias_term:
                continue
            return i, layer
    return None


def _absorb_mask(producer, mask_layer) -> None:
    """W[c] *= m[c], b[c] *= m[c]; the mask becomes 1 (the identity), so that the layer can be dropped."""
    with torch.no_grad():
        m = mask_layer.params[0]
        rows = producer_rows(producer, producer.params[0])
        rows.mul_(m.reshape(-1, 1).to(rows.dtype))
        if len(producer.params) > 1:
            producer.params[1].mul_(m.reshape(producer.params[1].shape))
        m.fill_(1)


def _elementwise(net, policy, amount, chosen, min_channels, clamp, depth, notes):
    """zeros / magnitude on every weight layer (or the chosen ones)."""
    for index, layer in enumerate(net.layers):
        if layer.type not in WEIGHT_TYPES or not layer.params or (chosen and layer.name not in chosen):
            continue
        a = P.check_amount(policy, chosen[layer.name], f"--layers {layer.name}=") \
            if chosen.get(layer.name) is not None else amount
        w = layer.params[0]
        thr = a if policy == "zeros" else P.magnitude_threshold(w, a)
        keep = P.element_keep(w, thr)
        kept = int(producer_rows(layer, keep).any(dim=1).sum())
        tail = _guard(net, index, kept, producer_rows(layer, keep).shape[0], min_channels, clamp, depth,
                      f"{policy} {a:g}")
        if tail is not None:
            _remove_depth(net, index, tail, notes)
            continue
        if kept < min_channels:                # clamp: the strongest filters keep all their weights
            strong = torch.as_tensor(P.strongest(P.filter_norms(producer_rows(layer, w)), min_channels))
            keep_rows = producer_rows(layer, keep)          # a view of ``keep``
            keep_rows[strong] = producer_rows(layer, w != 0)[strong]
        with torch.no_grad():
            w.mul_(keep.to(w.dtype))
        notes.setdefault(layer.name, f"|w| < {thr:.4g}")


def prune(net, policy: str, amount=None, *, layers=None, min_channels: int = 1, round_to: int = 1,
          clamp: bool = False, depth: bool = False) -> PruneResult:
    """Prune ``net`` (weights loaded; TEST phase recommended: BatchNorm uses its global statistics) in place.

    ``layers``: names (or ``name=amount`` overrides) to prune; default: every layer the policy applies to.
    ``depth``: a layer the policy would empty may go with its whole residual branch (see the module doc).
    Returns the report, the fine-tuning NetParameter and which values were zeroed (for the solver history).
    """
    P.check_policy(policy)
    amount = P.check_amount(policy, amount)
    if min_channels < 0:
        raise PruneError(f"--min-channels must be >= 0, got {min_channels}")
    if round_to < 1:
        raise PruneError(f"--round-to must be >= 1, got {round_to}")
    chosen = parse_layers(layers)
    _check_layers(net, chosen)
    for name in chosen:
        if net.layer_dict[name].type not in WEIGHT_TYPES or not net.layer_dict[name].params:
            raise PruneError(f"--layers: layer '{name}' is a {net.layer_dict[name].type} layer; name "
                             f"Convolution / InnerProduct layers")
    before = _snapshot(net)
    flops_before = {f.name: f.remaining for f in net_flops(net)}
    rows_before = {l.name: _nonzero_rows(l) for l in net.layers if l.type in WEIGHT_TYPES and l.params}
    notes: dict = {}
    removed_layers = []
    if policy in P.STRUCTURED:
        removed_layers = _structured(net, policy, amount, chosen, min_channels, round_to, clamp, depth,
                                     notes)
    else:
        _elementwise(net, policy, amount, chosen, min_channels, clamp, depth, notes)
    zeroed, touched = {}, set()
    for layer in net.layers:
        if layer.name not in before:
            continue
        z = [((b != 0) & (p.detach() == 0)).cpu().numpy() for b, p in zip(before[layer.name], layer.params)]
        if any(x.any() for x in z):
            zeroed[layer.name] = z
            touched.add(layer.name)
            if getattr(layer, "engine", None) is not None:     # a sparse conv_mode built from the old weights
                layer.on_weights_loaded("binary")
    touched |= {n for n in notes if policy in ("zeros", "magnitude") or n in zeroed}
    flops_after = {f.name: f.remaining for f in net_flops(net)}
    reports = []
    for layer in net.layers:
        if layer.name not in rows_before:
            continue
        nz_b = int((before[layer.name][0] != 0).sum())
        reports.append(LayerReport(layer.name, layer.type, producer_rows(layer, layer.params[0]).shape[0],
                                   _nonzero_rows(layer), nz_b, int((layer.params[0] != 0).sum()),
                                   flops_before.get(layer.name, 0), flops_after.get(layer.name, 0),
                                   notes.get(layer.name, "") if layer.name in touched else "not pruned"))
    mode = _Mode.DISCONNECTED_ELTWISE if policy == "magnitude" else _Mode.DISCONNECTED_GRPWISE
    ft = finetune_param(net.net_param_full, {n for n in touched if net.layer_dict[n].type in WEIGHT_TYPES},
                        mode, removed_layers)
    return PruneResult(policy, amount, reports, ft, zeroed, removed_layers)


def finetune_param(net_param, layers: set, mode: int, drop=()) -> "caffe_pb2.NetParameter":
    """A copy of ``net_param`` with ``connectivity_mode`` on ``layers`` (an ELTWISE already there stays) and the
    layers in ``drop`` (absorbed in-place masks) taken out."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    keep = [lp for lp in out.layer if lp.name not in drop]
    for lp in keep:
        if lp.name in layers and lp.connectivity_mode != _Mode.DISCONNECTED_ELTWISE:
            lp.connectivity_mode = mode
    for lp in out.layer:
        if lp.name in drop and lp.top[0] != lp.bottom[0]:        # not in place: readers take its bottom
            for other in keep:
                for j, b in enumerate(other.bottom):
                    if b == lp.top[0]:
                        other.bottom[j] = lp.bottom[0]
    del out.layer[:]
    out.layer.extend(keep)
    return out


def weight_arrays(net, net_param) -> "dict":
    """{layer: [arrays]} of ``net``'s layers that ``net_param`` still has (for writing the caffemodel)."""
    names = {lp.name for lp in net_param.layer}
    return {l.name: [p.detach().cpu().numpy() for p in l.params] for l in net.layers if l.name in names}


def save(result: PruneResult, net, weights_out, model_out=None) -> None:
    """Write the pruned caffemodel (layers of the fine-tuning net) and, with ``model_out``, its prototxt."""
    from ..io.caffemodel import write_caffemodel
    from ..io.prototxt import write_prototxt
    built = caffe_pb2.NetParameter()
    built.CopyFrom(result.ft_param)
    del built.layer[:]
    built.layer.extend(lp for lp in result.ft_param.layer if lp.name in net.layer_dict)
    write_caffemodel(weights_out, built, weight_arrays(net, built))
    if model_out:
        write_prototxt(model_out, result.ft_param)
