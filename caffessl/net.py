"""The Net: a filtered NetParameter turned into ordered layers and named blobs, with pycaffe's surface.

Forward runs each layer's torch forward; backward is torch autograd from the net outputs (with the diffs
stored in their blobs, which start at the loss weight for loss tops, as in Caffe) -- so one blob feeding
several layers sums its gradients exactly as Caffe's Split layers do, and in-place layers simply rebind the
blob name to the new tensor. ``blob.diff`` after ``backward()`` is the gradient of the blob's *first*
version in the pass (for an in-place chain, the diff of the producing layer's output, as in Caffe).
"""
from __future__ import annotations

import logging
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from . import debug_info, mode
from .malloc import keep_freed_memory
from .blob import Blob
from .errors import (CaffeSSLError, LayerConfigError, MissingBottomError, NetGraphError, ShapeMismatchError,
                     UnsupportedError, WeightsError)
from .io.limits import MemoryBudget
from .layers.base import count_ok, get_layer_class
from .proto import caffe_pb2
from .validate import check_layer_param, check_top_shapes
from .weights_matrix import conv_groups

log = logging.getLogger("caffessl")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


@dataclass
class ForwardRecord:
    """What a forward with gradients leaves for the backward passes (pycaffe's backward, BackwardFromTo,
    layerwise_backward): the layer range it ran, the first tensor version of each blob in the pass, the
    index of the layer that produced each blob, and each layer's (bottoms, tops) tensors."""
    range: tuple
    first: dict = field(default_factory=dict)       # blob name -> first tensor version
    producer: dict = field(default_factory=dict)    # blob name -> producing layer index
    layers: dict = field(default_factory=dict)      # layer index -> (bottom tensors, top tensors)


class ParamInfo:
    """One learnable parameter as the solver sees it (Caffe's learnable_params_ entry)."""

    __slots__ = ("layer", "layer_name", "index", "tensor", "spec", "lr_mult", "decay_mult", "groups",
                 "display_name")

    def __init__(self, layer, index, tensor, spec):
        self.layer = layer
        self.layer_name = layer.name
        self.index = index
        self.tensor = tensor
        self.spec = spec
        self.lr_mult = spec.lr_mult
        self.decay_mult = spec.decay_mult
        self.groups = conv_groups(layer.param)   # Net::param_groups_
        self.display_name = spec.name or f"{layer.name}/{index}"

    def __repr__(self):
        return f"<ParamInfo {self.layer_name}[{self.index}] {tuple(self.tensor.shape)} lr_mult={self.lr_mult}>"


# -- NetState filtering (Net::FilterNet / StateMeetsRule) --------------------------------------------

def state_meets_rule(state, rule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(net_param, state):
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for lp in net_param.layer:
        if len(lp.include) and len(lp.exclude):
            raise NetGraphError(f"layer '{lp.name}': specify either include rules or exclude rules, not both")
        if len(lp.include):
            keep = any(state_meets_rule(state, r) for r in lp.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in lp.exclude)
        if keep:
            out.layer.add().CopyFrom(lp)
    return out


def _load_net_param(model):
    if isinstance(model, caffe_pb2.NetParameter):
        from .io.upgrade import upgrade_net_as_needed
        p = caffe_pb2.NetParameter()
        p.CopyFrom(model)
        return upgrade_net_as_needed(p), "<NetParameter>"
    from .io.prototxt import read_net_prototxt
    return read_net_prototxt(model), os.fspath(model)


class Net:
    """``Net(model, [weights], phase)`` / ``Net(model, phase, weights=...)`` as in pycaffe."""

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=(), device=None,
                 dtype=torch.float32, allow_python=False):
        # pycaffe's positional forms: (model, phase) and (model, weights, phase)
        args = list(args)
        if args and isinstance(args[0], (str, os.PathLike)):
            weights = args.pop(0)
        if args:
            phase = args.pop(0)
        if args:
            raise TypeError("Net(model, [weights], phase): too many positional arguments")
        keep_freed_memory()  # blobs keep last iteration's tensors: stop glibc trimming and refaulting them
        self.net_param_full, self.source = _load_net_param(model)
        if phase is None:
            phase = self.net_param_full.state.phase if self.net_param_full.HasField("state") else TEST
        self.phase = int(phase)
        self.debug_info = bool(self.net_param_full.debug_info)   # Net::Init; the solver sets it per iteration
        self.device = torch.device(device) if device is not None else mode.device()
        self.dtype = dtype
        self.allow_python = allow_python
        state = caffe_pb2.NetState()
        state.CopyFrom(self.net_param_full.state)
        state.phase = self.phase
        state.level = level or state.level
        if stages:
            del state.stage[:]
            state.stage.extend(stages)
        self.state = state
        self.net_param = filter_net(self.net_param_full, state)
        self.name = self.net_param.name
        self.force_backward = self.net_param.force_backward
        self._build()
        self._last: ForwardRecord | None = None  # the last forward with gradients (for backward)
        self._plan = None  # per-layer forward plan, built on the first forward
        self._prefetching = [l for l in self.layers if hasattr(l, "cue_prefetch")]
        if weights:
            for w in str(weights).split(","):
                self.copy_from(w)

    # -- construction (Net::Init) -------------------------------------------------------------------
    def _build(self):
        """Net::Init on the filtered NetParameter, in Caffe's steps. Splits are not inserted: a blob read by
        several layers sums its gradients through autograd, as Caffe's Split layers do."""
        self._init_graph()
        available = OrderedDict()       # blob name -> producing layer (not yet consumed)
        # duplicate layer names are allowed, as in Caffe (BVLC's LRCN example has two layers named "data"):
        # by-name lookups follow Caffe -- layer_dict / params keep the last, weights load into the first
        for lp_src in self.net_param.layer:
            layer = self._create_layer(lp_src)
            bottom_shapes = self._append_bottoms(layer, available)
            top_shapes = self._setup_layer(layer, bottom_shapes)
            self._append_tops(layer, top_shapes, available)
            self._set_loss_weights(layer)
            self._set_propagate_down(layer)
            self._append_params(layer)
            self.layers.append(layer)
            self._layer_names.append(layer.name)
            self.top_names[layer.name] = list(layer.param.top)
            self.bottom_names[layer.name] = list(layer.param.bottom)
        self._decide_backward(available)

    def _init_graph(self):
        self.layers = []
        self._layer_names = []
        self.blobs: "OrderedDict[str, Blob]" = OrderedDict()
        self.top_names = OrderedDict()
        self.bottom_names = OrderedDict()
        self.blob_loss_weights = OrderedDict()
        self._loss_tops = []           # (blob name, weight)
        self.inputs = []
        self.learnable_params: list[ParamInfo] = []
        self._param_owner_by_name = {}
        self._propagate_down = []
        self._budget = MemoryBudget(self.source)  # blobs + params, refused past the limit before allocation

    def _create_layer(self, lp_src):
        """LayerRegistry::CreateLayer on a private copy of the LayerParameter; bottom/top counts checked."""
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(lp_src)
        check_layer_param(lp, self.source)
        cls = get_layer_class(lp.type, lp.name)
        # Net::Init gives a layer the net's phase only when it names none (a `phase: TRAIN` Dropout
        # inside a TEST net keeps dropping)
        layer = cls(lp, lp.phase if lp.HasField("phase") else self.phase, self.device, self.dtype)
        layer.net = weakref.proxy(self)
        layer.budget = self._budget
        nb, nt = len(lp.bottom), len(lp.top)
        if not count_ok(cls.num_bottoms, nb):
            raise LayerConfigError(f"layer '{lp.name}' ({lp.type}) takes {_fmt_count(cls.num_bottoms)} "
                                   f"bottom blob(s), got {nb}")
        if not count_ok(cls.num_tops, nt):
            raise LayerConfigError(f"layer '{lp.name}' ({lp.type}) produces {_fmt_count(cls.num_tops)} "
                                   f"top blob(s), got {nt}")
        return layer

    def _append_bottoms(self, layer, available) -> list:
        """Net::AppendBottom: every bottom is an existing blob (and is consumed); returns their shapes."""
        lp = layer.param
        for b in lp.bottom:
            if b not in self.blobs:
                raise MissingBottomError(f"layer '{lp.name}' ({lp.type}): unknown bottom blob '{b}' "
                                         f"(no earlier layer produces it)")
            available.pop(b, None)
        return [self.blobs[b].shape for b in lp.bottom]

    def _setup_layer(self, layer, bottom_shapes) -> list:
        """Layer::SetUp: set up (blobs given in the prototxt replace the fillers), then the top shapes."""
        lp = layer.param
        layer.setup(bottom_shapes)
        if len(lp.blobs):
            self._prototxt_blobs(layer)
        top_shapes = layer.reshape(bottom_shapes)
        if len(top_shapes) != len(lp.top):
            raise LayerConfigError(f"layer '{lp.name}' ({lp.type}) produced {len(top_shapes)} tops, "
                                   f"prototxt names {len(lp.top)}")
        check_top_shapes(layer, top_shapes, self._budget)
        return top_shapes

    def _append_tops(self, layer, top_shapes, available):
        """Net::AppendTop: a new blob per top, or the bottom of the same index for an in-place top."""
        lp = layer.param
        name, nb = lp.name, len(lp.bottom)
        for j, (t, shp) in enumerate(zip(lp.top, top_shapes)):
            in_place = j < nb and lp.bottom[j] == t
            if t in self.blobs and not in_place:
                if t in lp.bottom:
                    raise NetGraphError(f"layer '{name}': top '{t}' must be produced in place from the "
                                        f"bottom of the same index")
                raise NetGraphError(f"layer '{name}': top blob '{t}' is produced by more than one layer")
            if not in_place:
                self.blobs[t] = Blob(t, shp, self.dtype, self.device)
            elif tuple(shp) != self.blobs[t].shape:
                raise ShapeMismatchError(f"layer '{name}': in-place top '{t}' changes shape "
                                         f"{self.blobs[t].shape} -> {tuple(shp)}")
            available[t] = name
        if lp.type == "Input" or getattr(type(layer), "feeds_from_blobs", False):
            self.inputs.extend(lp.top)

    def _set_loss_weights(self, layer):
        """Layer::SetLossWeights: loss_weight per top (a loss layer's first top defaults to 1); a weighted
        top's diff starts at its weight."""
        lp = layer.param
        nt = len(lp.top)
        if len(lp.loss_weight) and len(lp.loss_weight) != nt:
            raise LayerConfigError(f"layer '{lp.name}': loss_weight must be given once per top "
                                   f"({nt}), got {len(lp.loss_weight)}")
        for j, t in enumerate(lp.top):
            w = lp.loss_weight[j] if len(lp.loss_weight) else (1.0 if (type(layer).is_loss and j == 0) else 0.0)
            if w != 0:
                self._loss_tops.append((t, float(w)))
                self.blob_loss_weights[t] = float(w)
                self.blobs[t].diff_tensor.fill_(w)
            else:
                self.blob_loss_weights.setdefault(t, 0.0)

    def _set_propagate_down(self, layer):
        lp = layer.param
        pd = list(lp.propagate_down)
        if pd and len(pd) != len(lp.bottom):
            raise LayerConfigError(f"layer '{lp.name}': propagate_down must be given once per bottom")
        self._propagate_down.append(pd or [True] * len(lp.bottom))

    def _decide_backward(self, available):
        """The net's outputs (blobs no layer consumes) and which blobs are under a loss (Net::Init's walk)."""
        self.outputs = sorted(available.keys())  # Caffe keeps them in a std::set<string>: sorted by name
        self._under_loss = self._blobs_under_loss()
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self._input_set = set(self.inputs)

    def _blobs_under_loss(self) -> set:
        """Net::Init's walk from the last layer: a layer contributes to the loss when one of its tops is a loss
        top or is read by a contributing layer; the blobs it reads are then under the loss. Without
        force_backward, Caffe runs backward only for contributing layers (no loss layer: none at all)."""
        under = set()
        for layer in reversed(self.layers):
            if any(self.blob_loss_weights.get(t, 0) or t in under for t in layer.param.top):
                under.update(layer.param.bottom)
                under.update(layer.param.top)
        return under

    def _prototxt_blobs(self, layer):
        """Blobs written in the net prototxt are the layer's initial weights (Layer's constructor copies
        them, LayerSetUp then skips the fillers; a caffemodel loaded later overrides them)."""
        from .io.blobproto import blobproto_to_array
        arrays = [blobproto_to_array(bp, f"layer '{layer.name}' blob {j}") for j, bp in enumerate(layer.param.blobs)]
        try:
            self._copy_layer(layer, arrays, self.source)
        except WeightsError as e:
            raise LayerConfigError(f"{e} (blobs given in the net prototxt)") from None

    def _append_params(self, layer):
        lp = layer.param
        if len(lp.param) > len(layer.params):
            raise LayerConfigError(f"layer '{layer.name}' ({lp.type}): too many params specified: "
                                   f"{len(lp.param)} param {{}} entries for {len(layer.params)} learnable blob(s)")
        for i, p in enumerate(layer.params):
            spec = lp.param[i] if i < len(lp.param) else caffe_pb2.ParamSpec()
            pname = spec.name
            if pname and pname in self._param_owner_by_name:
                owner = self._param_owner_by_name[pname]
                o = owner.tensor
                strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
                if (strict and tuple(o.shape) != tuple(p.shape)) or (o.numel() != p.numel()):
                    raise ShapeMismatchError(
                        f"layer '{layer.name}': cannot share param '{pname}' of shape {tuple(o.shape)} "
                        f"(owner '{owner.layer_name}') with a param of shape {tuple(p.shape)}")
                if tuple(o.shape) == tuple(p.shape):
                    layer.params[i] = o
                else:   # PERMISSIVE, same count: the owner's storage in this layer's shape (Blob::ShareData)
                    with torch.enable_grad():
                        layer.params[i] = o.view(p.shape)
                self._adopt_shared_settings(owner, spec, layer.name, pname)
                continue
            p.requires_grad_(spec.lr_mult != 0)
            info = ParamInfo(layer, i, p, spec)
            self.learnable_params.append(info)
            if pname:
                self._param_owner_by_name[pname] = info

    _ADOPTABLE = ("lr_mult", "decay_mult", "breadth_decay_mult", "kernel_shape_decay_mult", "regularization_type",
                  "zerout_threshold")

    @classmethod
    def _adopt_shared_settings(cls, owner, spec, lname, pname):
        """Sharing rules for a non-owner's ParamSpec. Net::AppendParam: its lr_mult / decay_mult must equal the
        owner's when the owner set one, else the first sharer that sets it decides (the owner's default 1 is
        not binding). The SSL fork (ssl_fork.md 2.2) does the same for the breadth/kernel-shape multipliers and
        regularization_type (caffessl: zerout_threshold too); block_group_lasso on both sides is an error, on
        the non-owner only adopted; a non-owner's decay_proto is not implemented in the fork."""
        if spec.decay_proto:
            raise UnsupportedError(f"layer '{lname}': decay_proto on shared param '{pname}', which is not "
                                   f"its owner (the SSL fork aborts: NOT_IMPLEMENTED)")
        adopted = caffe_pb2.ParamSpec()
        adopted.CopyFrom(owner.spec)
        changed = False
        for f in cls._ADOPTABLE:
            if not spec.HasField(f):
                continue
            if owner.spec.HasField(f):
                if getattr(owner.spec, f) != getattr(spec, f):
                    raise LayerConfigError(f"layer '{lname}': shared param '{pname}' has mismatched {f}: "
                                           f"{getattr(spec, f)!r}, its owner '{owner.layer_name}' has "
                                           f"{getattr(owner.spec, f)!r}")
            else:
                setattr(adopted, f, getattr(spec, f))
                changed = True
        if len(spec.block_group_lasso):
            if len(owner.spec.block_group_lasso):
                raise LayerConfigError(f"layer '{lname}': duplicate block_group_lasso among shared params "
                                       f"('{pname}', owner '{owner.layer_name}')")
            adopted.block_group_lasso.extend(spec.block_group_lasso)
            changed = True
        if changed:
            owner.spec = adopted        # a copy: the owner layer's own LayerParameter is left as written
            owner.lr_mult, owner.decay_mult = adopted.lr_mult, adopted.decay_mult

    # -- pycaffe surface --------------------------------------------------------------------------
    @property
    def params(self):
        return OrderedDict((l.name, l.blobs) for l in self.layers if l.params)

    def layer_type(self, name):
        return self.layer_dict[name].type

    def set_input_arrays(self, data, labels):
        """pycaffe: feed the net's first MemoryData layer with (N,C,H,W) data and N labels."""
        layer = next((l for l in self.layers if l.type == "MemoryData"), None)
        if layer is None:
            raise NetGraphError("set_input_arrays: the net has no MemoryData layer")
        layer.set_input_arrays(data, labels)

    def _layer_index(self, name, what):
        if name is None:
            return None
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetGraphError(f"{what}: no layer named '{name}' in the net") from None

    def reshape(self):
        """Propagate the current input blob shapes through every layer (Net::Reshape)."""
        for layer, lp in zip(self.layers, (l.param for l in self.layers)):
            if getattr(layer, "feeds_from_blobs", False):
                continue  # Input tops keep the shape the user gave them (Input's Reshape is a no-op)
            bshapes = [self.blobs[b].shape for b in lp.bottom]
            tshapes = layer.reshape(bshapes)
            for j, (t, s) in enumerate(zip(lp.top, tshapes)):
                if t in lp.bottom[:j + 1] and lp.bottom[j:j + 1] == [t]:
                    continue
                self.blobs[t].reshape(*s)
            for t, w in self._loss_tops:
                if t in lp.top:
                    self.blobs[t].diff_tensor.fill_(w)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set inputs from kwargs, run [start, end], return {output: data}."""
        for name, value in kwargs.items():
            if name not in self.blobs:
                raise NetGraphError(f"forward: no blob named '{name}'")
            value = np.asarray(value)
            if value.shape[:1] != self.blobs[name].shape[:1]:
                raise ShapeMismatchError(f"forward: input '{name}' has batch {value.shape[:1]}, the blob "
                                         f"{self.blobs[name].shape} (reshape the blob first)")
            self.blobs[name].data[...] = value
        i0 = self._layer_index(start, "forward start") or 0
        i1 = self._layer_index(end, "forward end")
        i1 = len(self.layers) - 1 if i1 is None else i1
        self._forward_range(i0, i1, record=torch.is_grad_enabled())
        outs = self.outputs if end is None else list(self.layers[i1].param.top)
        res = OrderedDict((o, self.blobs[o].data) for o in list(outs) + list(blobs or []))
        return res

    def _bottom_tensor(self, name, cur, record):
        t = cur.get(name)
        if t is not None:
            return t
        blob = self.blobs[name]
        t = blob.tensor.detach()
        if record and torch.is_grad_enabled() and (self.force_backward and name in self._input_set):
            t = t.requires_grad_(True)
        cur[name] = t
        if record:
            self._last.first.setdefault(name, t)
        blob.set_tensor(t)
        return t

    def _layer_plan(self):
        """Per layer, what forward needs (read once from the protobuf): bottoms with their detach flag,
        tops, the weighted loss tops, and whether the tops are fed from the blobs (Input)."""
        plan = []
        for i, layer in enumerate(self.layers):
            lp = layer.param
            bottoms = [(b, not self._propagate_down[i][k] or k in layer.no_grad_bottoms)
                       for k, b in enumerate(lp.bottom)]
            tops = list(lp.top)
            losses = [(t, w) for t, w in self._loss_tops if t in tops]
            plan.append((layer, bottoms, tops, losses, getattr(layer, "feeds_from_blobs", False)))
        return plan

    def sync_host_writes(self):
        """Copy the host mirrors handed out on a GPU (blobs and params written through ``.data``/``.diff``)
        back to their tensors, and drop them so the next read sees the tensors again. On the CPU the
        arrays are views: nothing to do."""
        for b in self.blobs.values():
            b.sync_to_device()
        for layer in self.layers:
            for b in layer._blob_views or ():
                b.sync_to_device()

    def _forward_range(self, i0, i1, record=False):
        """Run layers i0..i1. Returns the weighted loss (a tensor)."""
        if self._plan is None:
            self._plan = self._layer_plan()
        self.sync_host_writes()
        cur = {}
        if record:   # what backward needs: first versions of the blobs, their producers, each layer's tensors
            self._last = ForwardRecord((i0, i1))
        loss = None
        blobs = self.blobs
        for idx, (layer, bottom_plan, tops_names, losses, feeds) in enumerate(self._plan[i0:i1 + 1], i0):
            bottoms = []
            for b, detach in bottom_plan:
                t = self._bottom_tensor(b, cur, record)
                bottoms.append(t.detach() if detach else t)
            if layer.has_backward:
                tops = layer.forward(bottoms)
            else:
                with torch.no_grad():
                    tops = layer.forward(bottoms)
            if feeds:
                for t in tops_names:
                    self._bottom_tensor(t, cur, record)
                    if record:
                        self._last.producer.setdefault(t, idx)
                if self.debug_info:
                    debug_info.forward(layer, [(n, cur[n]) for n in tops_names])
                continue
            if record:
                self._last.layers[idx] = (bottoms, list(tops))
            for name, t in zip(tops_names, tops):
                cur[name] = t
                blobs[name].set_tensor(t)
                if record:
                    first = self._last.first
                    if name not in first:
                        self._last.producer[name] = idx
                        first[name] = t
                        if t.requires_grad and not t.is_leaf:
                            t.retain_grad()
            for t_name, w in losses:
                t = cur[t_name]
                term = t if (w == 1 and t.dim() == 0) else t.sum() * w
                loss = term if loss is None else loss + term
            if self.debug_info:
                debug_info.forward(layer, [(n, cur[n]) for n in tops_names])
        return loss

    def forward_backward(self):
        """One Caffe ForwardBackward for the solver: returns the loss (float); param diffs accumulate.
        With ``debug_info`` the backward runs layer by layer to log each layer's diffs (caffessl.debug_info)."""
        self._last = None
        loss = self._forward_range(0, len(self.layers) - 1, record=self.debug_info)
        if loss is None:
            return 0.0
        if loss.requires_grad:
            for layer in self._prefetching:  # their threads load the next batch while backward runs
                layer.cue_prefetch()
            if self.debug_info:
                debug_info.backward(self)
            else:
                loss.backward()
        return float(loss.detach())

    def forward_loss(self):
        """Forward the whole net; return the weighted loss as a float (Net::Forward's loss)."""
        loss = self._forward_range(0, len(self.layers) - 1, record=torch.is_grad_enabled())
        return 0.0 if loss is None else float(loss.detach())

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: top diffs from kwargs (or the blobs), autograd to the inputs and params.
        ``start``/``end`` (layer names) run Caffe's BackwardFromTo: from the diffs held by ``start``'s top
        blobs (its loss weight for a loss top) down to ``end``'s bottoms; only blobs made by the layers in
        between, and ``end``'s bottoms, get new diffs, and only those layers' param diffs accumulate."""
        if self._last is None:
            raise CaffeSSLError("backward() needs a forward() with gradients enabled first")
        self.sync_host_writes()
        for name, value in kwargs.items():
            self.blobs[name].diff[...] = value
        if start is not None or end is not None:
            return self._backward_range(start, end, diffs)
        first = self._last.first
        roots, grads = [], []
        for name in self.outputs:
            t = self.blobs[name].tensor
            # an output's diff reaches only layers that contribute to a loss, unless force_backward
            if t.requires_grad and (self.force_backward or name in self._under_loss):
                roots.append(t)
                grads.append(self.blobs[name].diff_tensor.to(t.dtype))
        for name, w in self._loss_tops:
            if name in self.outputs:
                continue
            t = self.blobs[name].tensor
            if t.requires_grad:
                roots.append(t)
                grads.append(torch.full_like(t, w))
        if roots:
            torch.autograd.backward(roots, grads, retain_graph=True)
        self._take_grads([(n, t) for n, t in first.items() if n not in self.outputs])
        if self.debug_info:
            debug_info.backward(self, accumulate=False)
        return OrderedDict((n, self.blobs[n].diff) for n in list(self.inputs) + list(diffs or []))

    # -- pycaffe's batched helpers -------------------------------------------------------------------
    def _batches(self, arrays: dict):
        """pycaffe's Net._batch: ``arrays`` in batches of the net's batch size (its first blob's), the last
        one zero-padded."""
        if not arrays:
            return
        num = len(next(iter(arrays.values())))
        bs = next(iter(self.blobs.values())).shape[0]
        for i in range(0, num - num % bs, bs):
            yield {k: v[i:i + bs] for k, v in arrays.items()}
        rem = num % bs
        if rem:
            yield {k: np.concatenate([v[num - rem:], np.zeros((bs - rem,) + np.shape(v)[1:], np.float32)])
                   for k, v in arrays.items()}

    @staticmethod
    def _unpad(collected: dict, num: int) -> dict:
        return {k: np.asarray(v)[:num] for k, v in collected.items()}

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: inputs of any length run in batches (the last padded with zeros); returns
        {output (and ``blobs``): all rows}, padding dropped."""
        outs = {o: [] for o in list(self.outputs) + list(blobs or [])}
        batches = list(self._batches(kwargs)) or [{}]
        for batch in batches:
            for k, v in self.forward(blobs=blobs, **batch).items():
                outs[k].extend(np.array(v, copy=True))
        num = len(next(iter(kwargs.values()))) if kwargs else None
        return self._unpad(outs, num) if num is not None else {k: np.asarray(v) for k, v in outs.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: input arrays (by input name) and output diffs (by output name) of
        any length, in batches; returns ({outputs: rows}, {input diffs (and ``diffs``): rows}), unpadded."""
        import itertools
        outs = {o: [] for o in list(self.outputs) + list(blobs or [])}
        grads = {d: [] for d in list(self.inputs) + list(diffs or [])}
        fwd = self._batches({k: v for k, v in kwargs.items() if k in self.inputs})
        bwd = self._batches({k: v for k, v in kwargs.items() if k in self.outputs})
        for fb, bb in itertools.zip_longest(fwd, bwd, fillvalue={}):
            for k, v in self.forward(blobs=blobs, **fb).items():
                outs[k].extend(np.array(v, copy=True))
            for k, v in self.backward(diffs=diffs, **bb).items():
                grads[k].extend(np.array(v, copy=True))
        num = len(next(iter(kwargs.values()))) if kwargs else None
        if num is None:
            return ({k: np.asarray(v) for k, v in outs.items()}, {k: np.asarray(v) for k, v in grads.items()})
        return self._unpad(outs, num), self._unpad(grads, num)

    def layerwise_backward(self, seed_outputs: bool = True):
        """Caffe's Backward, one layer at a time from the last, on the graph the last recorded forward built:
        per layer, autograd from its tops (the diffs its consumers produced; a loss top's is its loss weight,
        a net output's its blob diff when ``seed_outputs``) to its bottoms and params only. Nothing is
        accumulated. Yields, per layer that runs a backward, (index, layer, [(bottom name, bottom tensor,
        its diff or None)] for the bottoms that need one, [diff or None per param], seconds)."""
        rec, losses = self._last, dict(self._loss_tops)
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            bottoms, tops = rec.layers.get(i, ((), ()))
            roots, seeds = [], []
            for top, t in zip(layer.param.top, tops):
                g = grads.pop(id(t), None)
                if g is None and (top in losses or (seed_outputs and top in self.outputs)):
                    g = self.top_seed(top, t)
                if g is not None and t.requires_grad:
                    roots.append(t)
                    seeds.append(g)
            need = [(n, b) for n, b in zip(layer.param.bottom, bottoms) if b.requires_grad]
            params = [p for p in layer.params if p.requires_grad]
            if not roots or not (need or params):
                continue
            t0 = time.perf_counter()
            res = torch.autograd.grad(roots, [b for _, b in need] + params, seeds, retain_graph=True,
                                      allow_unused=True)
            sec = time.perf_counter() - t0
            bgrads = res[:len(need)]
            for (_, b), g in zip(need, bgrads):
                if g is not None:
                    grads[id(b)] = g if id(b) not in grads else grads[id(b)] + g
            pg = iter(res[len(need):])
            yield i, layer, [(n, b, g) for (n, b), g in zip(need, bgrads)], \
                [next(pg) if p.requires_grad else None for p in layer.params], sec

    def top_seed(self, name, t):
        """The diff a backward starts from at top ``name`` (recorded tensor ``t``): a loss top's loss weight,
        else the diff its blob holds (what Caffe's Backward reads)."""
        w = self.blob_loss_weights.get(name, 0.0)
        return torch.full_like(t, w) if w else self.blobs[name].diff_tensor.to(t.dtype)

    def _take_grads(self, named):
        """Blob diffs = the recorded tensors' gradients (0 where none reached them); the tensors are reset."""
        for name, t in named:
            g = t.grad
            self.blobs[name].set_diff_tensor(g.detach().clone() if g is not None else torch.zeros_like(t.detach()))
            if g is not None:
                t.grad = None

    def _backward_range(self, start, end, diffs):
        rec = self._last
        r0, r1 = rec.range
        i_s = self._layer_index(start, "backward start")
        i_e = self._layer_index(end, "backward end")
        i_s = r1 if i_s is None else i_s
        i_e = r0 if i_e is None else i_e          # Caffe: layer 0; autograd reaches what the forward recorded
        names = self._layer_names
        if i_e > i_s:
            raise NetGraphError(f"backward: end layer '{names[i_e]}' comes after start layer '{names[i_s]}'")
        if not (r0 <= i_e and i_s <= r1):
            raise CaffeSSLError(f"backward from '{names[i_s]}' to '{names[i_e]}' needs a forward() with "
                                f"gradients enabled through those layers (the last one ran "
                                f"'{names[r0]}'..'{names[r1]}')")
        roots, grads = [], []
        for name, t in zip(self.layers[i_s].param.top, rec.layers.get(i_s, ((), ()))[1]):
            if t.requires_grad:
                roots.append(t)
                grads.append(self.top_seed(name, t))
        # blobs made below start (first versions; start's own tops keep the diffs they were given), and
        # end's bottoms as end read them
        made = [(n, rec.first[n]) for n, i in rec.producer.items() if i_e <= i < i_s]
        if end is None:      # down to the net's own inputs (input: fields, no producing layer)
            made += [(n, t) for n, t in rec.first.items() if n not in rec.producer and t.requires_grad]
        ends = list(zip(self.layers[i_e].param.bottom, rec.layers.get(i_e, ((), ()))[0]))
        params = [p for i in range(i_e, i_s + 1) for p in self.layers[i].params if p.requires_grad]
        wanted = [t for _, t in made + ends if t.requires_grad] + params
        if roots and wanted:
            torch.autograd.backward(roots, grads, retain_graph=True, inputs=wanted)
        self._take_grads(made + [(n, t) for n, t in ends if n not in dict(made)])
        outs = list(self.layers[i_e].param.bottom) if end is not None else list(self.inputs)
        return OrderedDict((n, self.blobs[n].diff) for n in list(outs) + list(diffs or []))

    def clear_param_diffs(self):
        for l in self.layers:
            for p in l.params:
                if p.is_leaf and p.grad is not None:     # a PERMISSIVE share's view: its owner's grad
                    p.grad.zero_()

    # -- weights ----------------------------------------------------------------------------------
    def copy_from(self, path, strict: bool = False):
        """Net::CopyTrainedLayersFrom: copy blobs of the layers whose names match; ignore the rest."""
        from .io.caffemodel import read_weights, weights_format
        records = read_weights(path)
        fmt = weights_format(path)
        loaded, ignored = [], []
        first = {}                      # CopyTrainedLayersFrom: the first layer of that name
        for l in self.layers:
            first.setdefault(l.name, l)
        for lname, _ltype, arrays in records:
            layer = first.get(lname)
            if layer is None:
                ignored.append(lname)
                log.info("Ignoring source layer %s", lname)
                continue
            self._copy_layer(layer, arrays, path)
            layer.on_weights_loaded(fmt)   # WeightAlign: connectivity_mode mask, conv_mode engine
            loaded.append(lname)
        if strict:
            missing = [l.name for l in self.layers if l.params and l.name not in loaded]
            if ignored or missing:
                raise WeightsError(f"{path}: does not match the net (strict): layers not in the net: "
                                   f"{ignored or 'none'}; net layers with params not in the file: "
                                   f"{missing or 'none'}")
        self.weights_report = {"loaded": loaded, "ignored": ignored}
        return self.weights_report

    def _copy_layer(self, layer, arrays, path):
        if len(arrays) != len(layer.params):
            raise WeightsError(f"{path}: incompatible number of blobs for layer '{layer.name}': the file has "
                               f"{len(arrays)}, the net's layer has {len(layer.params)}")
        for j, (arr, p) in enumerate(zip(arrays, layer.params)):
            target = tuple(p.shape)
            if tuple(arr.shape) != target:
                legacy = (1,) * (4 - len(target)) + target if len(target) <= 4 else None
                if legacy is not None and tuple(arr.shape) == legacy:
                    arr = arr.reshape(target)
                else:
                    raise WeightsError(
                        f"{path}: cannot copy param {j} weights from layer '{layer.name}'; shape mismatch. "
                        f"Source param shape is {tuple(arr.shape)}; target param shape is {target}")
            with torch.no_grad():
                p.copy_(torch.as_tensor(arr).reshape(target).to(p.dtype))

    def _arrays(self) -> list:
        return [[p.detach().cpu().numpy() for p in l.params] for l in self.layers]

    def _diffs(self) -> list:
        return [[b.diff.copy() for b in l.blobs] if l.params else [] for l in self.layers]

    def layer_arrays(self):
        return OrderedDict(zip(self._layer_names, self._arrays()))

    def layer_diffs(self):
        """Each layer's param diffs as ``net.params[name][i].diff`` shows them (a shared param: its owner's)."""
        return OrderedDict(zip(self._layer_names, self._diffs()))

    def to_proto(self):
        """Net::ToProto: the filtered net's layer parameters (blobs are added by the writers)."""
        out = caffe_pb2.NetParameter()
        out.CopyFrom(self.net_param)
        del out.layer[:]
        for l in self.layers:
            out.layer.add().CopyFrom(l.param)
        return out

    def save(self, path, write_diff: bool = False):
        """Net::ToProto + WriteProtoToBinaryFile; ``write_diff`` adds each param's diff (snapshot_diff)."""
        from .io.caffemodel import write_caffemodel
        # one entry per layer (names may repeat, as in Caffe)
        write_caffemodel(path, self.to_proto(), self._arrays(), self._diffs() if write_diff else None)

    def save_hdf5(self, path, write_diff: bool = False):
        from .io.caffemodel import write_caffemodel_hdf5
        write_caffemodel_hdf5(path, self._layer_names, self.layer_arrays(),
                              self.layer_diffs() if write_diff else None)

    def share_with(self, other: "Net"):
        """Use ``other``'s parameter tensors in the layers of the same name (Net::ShareTrainedLayersWith)."""
        for layer in self.layers:
            src = other.layer_dict.get(layer.name)
            if src is None or not src.params:
                continue
            if len(src.params) != len(layer.params):
                raise WeightsError(f"share_with: layer '{layer.name}' has {len(layer.params)} blobs, the "
                                   f"source layer has {len(src.params)}")
            for j, (a, b) in enumerate(zip(layer.params, src.params)):
                if tuple(a.shape) != tuple(b.shape):
                    raise WeightsError(f"share_with: layer '{layer.name}' param {j}: shape {tuple(a.shape)} "
                                       f"vs source {tuple(b.shape)}")
            layer.params = list(src.params)
            layer.on_weights_shared(src)

    def __repr__(self):
        return f"<caffessl.Net '{self.name}' {len(self.layers)} layers, phase {caffe_pb2.Phase.Name(self.phase)}>"


def _fmt_count(spec):
    if isinstance(spec, int):
        return str(spec)
    lo, hi = spec
    if hi is None:
        return f"at least {lo}"
    if lo is None:
        return f"at most {hi}"
    return f"{lo} to {hi}"

