"""The schema's value rules, written once and checked when a net is set up (before any layer is built).

``check_layer_param(lp, source)`` walks every parameter message a LayerParameter sets and applies:

* every float field is finite (except the few where an infinity means something, ``FINITE_EXEMPT``);
* every uint32 field that Caffe stores in an int is at most 2^31 - 1 (``UINT32_FULL`` lists the others);
* the field rules of ``FIELD_RULES`` (a non-negative ``eps``, a dropout ratio in [0, 1)...);
* the cross-field rules of ``MESSAGE_RULES`` (an Exp/Log/Power whose constants overflow float32, a filler
  whose bounds cannot be drawn from).

``check_top_shapes(layer, shapes, budget)`` refuses negative or zero dimensions and charges the shapes to the
net's ``caffessl.io.limits.MemoryBudget`` before the blobs exist. Errors name the file, the layer and the field.
"""
from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor

from .errors import LayerConfigError, ShapeMismatchError

FLOAT32_MAX = 3.4028234663852886e38
LOG_FLOAT32_MAX = math.log(FLOAT32_MAX)

# fields where +/-inf is a meaningful value
FINITE_EXEMPT = {("ClipParameter", "min"), ("ClipParameter", "max"), ("ThresholdParameter", "threshold")}

FIELD_RULES = {
    ("BatchNormParameter", "eps"): (lambda v: v > 0, "must be > 0"),
    ("BatchNormParameter", "moving_average_fraction"): (lambda v: v >= 0, "must be >= 0"),
    ("MVNParameter", "eps"): (lambda v: v >= 0, "must be >= 0"),
    ("DropoutParameter", "dropout_ratio"): (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("LRNParameter", "k"): (lambda v: v >= 0, "must be >= 0"),
    ("FillerParameter", "std"): (lambda v: v >= 0, "must be >= 0"),
}


# uint32 fields Caffe reads into an unsigned variable; every other uint32 lands in a (signed) int
UINT32_FULL = {("DataParameter", "rand_skip"), ("ImageDataParameter", "rand_skip"), ("DataParameter", "prefetch")}
INT_MAX = 2 ** 31 - 1


def _pow_finite(base: float, expo: float) -> bool:
    """base ** expo (base -1: e) stays a finite float32."""
    if base == -1:
        return expo * 1.0 <= LOG_FLOAT32_MAX
    if base <= 0:
        return False
    return expo * math.log(base) <= LOG_FLOAT32_MAX


def _exp(p):
    if p.base != -1 and not p.base > 0:
        return f"base must be -1 (e) or positive, got {p.base}"
    if not _pow_finite(p.base, p.shift):
        return f"base ^ shift ({p.base} ^ {p.shift}) overflows float32"
    return None


def _log(p):
    if p.base != -1 and not (p.base > 0 and p.base != 1):
        return f"base must be -1 (e) or positive and not 1, got {p.base}"
    return None


def _filler(p):
    if p.type == "uniform" and not p.max - p.min <= FLOAT32_MAX:
        return f"uniform bounds [{p.min}, {p.max}] are too far apart to draw from"
    return None


def _power(p):
    if p.power * p.scale == 0 and p.power != 0:     # a constant top: shift ^ power
        try:
            value = math.pow(p.shift, p.power)
        except (OverflowError, ValueError):
            value = float("inf")
        if not abs(value) <= FLOAT32_MAX:
            return f"the constant output shift ^ power ({p.shift} ^ {p.power}) is not a finite float32"
    return None


MESSAGE_RULES = {"PowerParameter": _power, "ExpParameter": _exp, "LogParameter": _log, "FillerParameter": _filler}


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)       # protobuf >= 5.28 drops FieldDescriptor.label in upb
    return rep if rep is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def _walk(msg, path: str, out: list):
    for fd, value in msg.ListFields():
        name = f"{path}.{fd.name}" if path else fd.name
        rep = _repeated(fd)
        values = value if rep else [value]
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            for i, m in enumerate(values):
                if fd.message_type.name in ("BlobProto", "NetParameter"):
                    continue   # weights and nested nets are checked where they are read
                sub = f"{name}[{i}]" if rep else name
                rule = MESSAGE_RULES.get(fd.message_type.name)
                problem = rule(m) if rule else None
                if problem:
                    out.append(f"{sub}: {problem}")
                _walk(m, sub, out)
        elif fd.type == FieldDescriptor.TYPE_UINT32 and (msg.DESCRIPTOR.name, fd.name) not in UINT32_FULL:
            for v in values:
                if v > INT_MAX:
                    out.append(f"{name} is {v}; Caffe reads it into an int (at most {INT_MAX})")
        elif fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            key = (msg.DESCRIPTOR.name, fd.name)
            for v in values:
                if not math.isfinite(v) and key not in FINITE_EXEMPT:
                    out.append(f"{name} is {v}; it must be a finite number")
                elif key in FIELD_RULES and not FIELD_RULES[key][0](v):
                    out.append(f"{name} is {v}; it {FIELD_RULES[key][1]}")


def check_layer_param(lp, source: str) -> None:
    """Raise LayerConfigError naming the file, the layer and the field for the first rule ``lp`` breaks."""
    problems: list = []
    _walk(lp, "", problems)
    if problems:
        raise LayerConfigError(f"{source}: layer '{lp.name}' ({lp.type}): {problems[0]}")


def check_top_shapes(layer, shapes, budget) -> None:
    """Every top dimension is a positive integer; the tops are charged to the memory budget."""
    for name, shp in zip(layer.param.top, shapes):
        if name in layer.param.bottom:
            continue   # in place: no new blob
        dims = tuple(int(d) for d in shp)
        if any(d <= 0 for d in dims):
            raise ShapeMismatchError(f"{budget.source}: layer '{layer.name}' ({layer.type}): top '{name}' would "
                                     f"have shape {dims}; every dimension must be positive")
        budget.charge(layer.name, f"top '{name}'", dims)


def check_param_shape(layer, shape) -> tuple:
    """A learnable blob's shape: non-negative integers, charged (data, diff, history) to the net's budget."""
    dims = tuple(int(s) for s in shape)
    if any(d < 0 for d in dims):
        raise ShapeMismatchError(f"{layer.where_defined()}: param {len(layer.params)} would have shape {dims}; "
                                 f"dimensions must not be negative")
    budget = getattr(layer, "budget", None)
    if budget is not None:
        budget.charge(layer.name, f"param {len(layer.params)}", dims, copies=3)
    return dims

