"""pycaffe's NetSpec: write a net in Python, get a ``caffe_pb2.NetParameter``.

Scripts written for pycaffe run unchanged::

    import caffessl as caffe
    from caffessl import layers as L, params as P

    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    print(n.to_proto())

The rules are pycaffe's:

* ``L.<Type>(*bottoms, **kwargs)`` makes a :class:`Function` (one layer). ``ntop`` (default 1) is the
  number of tops: 0 returns the Function, 1 its Top, more a tuple of Tops. ``in_place=True`` makes the
  tops the bottoms.
* A keyword ending in ``param`` (``param``, ``transform_param``...) is a LayerParameter field. Any other
  keyword goes to the layer's own parameter message (``convolution_param`` for Convolution, found by
  :func:`param_name_dict`) when that message has the field, else to the LayerParameter itself
  (``loss_weight``, ``include``...).
* The name a Top is assigned to in a NetSpec is its name; a layer is named after its first top; anything
  unnamed gets ``<Type><n>`` with one counter per type (``Convolution1``, ``Slice2``...).

Beyond pycaffe: an enum can be given by its name (``pool='MAX'``), tuples work like lists, and a mistake
(unknown field, wrong value type, a bottom that is not a Top) raises a typed caffessl error when the layer
is written, naming the layer type and the field.
"""
from __future__ import annotations

import functools
import numbers
from collections import Counter, OrderedDict

from google.protobuf.message import Message

from .errors import LayerConfigError, NetGraphError
from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params", "to_proto",
           "assign_proto", "param_name_dict"]


# -- the schema's map from layer type to its parameter message ---------------------------------------

@functools.lru_cache(maxsize=None)
def _param_names() -> dict[str, str]:
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                type_name = type_name[:-len("Parameter")]
            out[type_name] = field.name[:-len("_param")]
    return out


def param_name_dict() -> dict[str, str]:
    """Layer type name -> prefix of its ``*_param`` field, from LayerParameter's message types
    (``'Convolution' -> 'convolution'``, ``'Transformation' -> 'transform'``), as in pycaffe."""
    return dict(_param_names())


# -- assigning Python values to protobuf fields ----------------------------------------------------------

class _FieldError(Exception):
    """Internal: a value that does not fit a field; ``path`` is the dotted field path."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason)
        self.path, self.reason = path, reason


def _scalar(field, value, path):
    """The value to store in a scalar field: enum names are looked up in the field's enum."""
    enum = field.enum_type
    if enum is not None and isinstance(value, str):
        v = enum.values_by_name.get(value)
        if v is None:
            raise _FieldError(path, f"'{value}' is not a {enum.name} value "
                                    f"(one of {', '.join(enum.values_by_name)})")
        return v.number
    return value


def _fill(msg, value, path):
    """Fill sub-message ``msg`` from a dict (recursively) or merge a message of the same type."""
    if isinstance(value, Message):
        if value.DESCRIPTOR.full_name != msg.DESCRIPTOR.full_name:
            raise _FieldError(path, f"expects a {msg.DESCRIPTOR.name} or a dict, got a "
                                    f"{value.DESCRIPTOR.name}")
        msg.MergeFrom(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _assign(msg, k, v, f"{path}.{k}")
    else:
        raise _FieldError(path, f"expects a dict of {msg.DESCRIPTOR.name} fields, got {value!r}")


def _assign(proto, name, value, path):
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise _FieldError(path, f"{proto.DESCRIPTOR.name} has no field '{name}'")
    try:
        if field.is_repeated:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            container = getattr(proto, name)
            for i, item in enumerate(items):
                if field.message_type is not None:
                    _fill(container.add(), item, f"{path}[{i}]")
                else:
                    container.append(_scalar(field, item, path))
        elif field.message_type is not None:
            _fill(getattr(proto, name), value, path)
        else:
            setattr(proto, name, _scalar(field, value, path))
    except (TypeError, ValueError) as e:   # protobuf's own type / range / enum checks
        raise _FieldError(path, f"bad value {value!r}: {e}") from None


def assign_proto(proto, name, value) -> None:
    """pycaffe's ``assign_proto``: a scalar into a repeated field is wrapped in a list, a list extends
    (a list of dicts adds one sub-message per dict), a dict fills a sub-message, a scalar is set."""
    try:
        _assign(proto, name, value, name)
    except _FieldError as e:
        raise LayerConfigError(f"{proto.DESCRIPTOR.name}.{e.path}: {e.reason}") from None


def _hint(name: str) -> str:
    """Which ``*_param`` messages have a field ``name`` (for types like Deconvolution that read
    another type's message and so need it spelled out, as in pycaffe)."""
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    owners = [f"{prefix}_param" for prefix in _param_names().values()
              if name in fields[f"{prefix}_param"].message_type.fields_by_name]
    if not owners:
        return ""
    return f"; it is a field of {', '.join(owners)}: pass e.g. {owners[0]}=dict({name}=...)"


# -- the graph: Tops and Functions --------------------------------------------------------------------

class Top:
    """One output of a Function (``fn.tops[n]``)."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> "caffe_pb2.NetParameter":
        """The net that computes this top (every name automatic)."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer: its type, its bottoms (Tops), its keyword parameters and its tops."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        self.inputs = tuple(inputs)
        for i, inp in enumerate(self.inputs):
            if not isinstance(inp, Top):
                raise NetGraphError(
                    f"{type_name} layer: bottom {i} is a {type(inp).__name__}, not a Top "
                    f"(a multi-top layer returns a tuple of Tops; a layer with ntop=0 has none)")
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if isinstance(self.ntop, bool) or not isinstance(self.ntop, numbers.Integral) or self.ntop < 0:
            raise LayerConfigError(f"{type_name} layer: ntop must be an integer >= 0, got {self.ntop!r}")
        self.ntop = int(self.ntop)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))
        self._params_proto()  # report a bad field where the layer is written, not at to_proto

    def _params_proto(self) -> "caffe_pb2.LayerParameter":
        """A LayerParameter holding only the keyword parameters, placed by pycaffe's rules."""
        layer = caffe_pb2.LayerParameter()
        prefix = _param_names().get(self.type_name)
        own = getattr(layer, f"{prefix}_param") if prefix is not None else None
        for k, v in self.params.items():
            if k.endswith("param") or own is None or k not in own.DESCRIPTOR.fields_by_name:
                target = layer
            else:
                target = own
            if target is layer and k not in layer.DESCRIPTOR.fields_by_name:
                where = ("LayerParameter" if own is None or k.endswith("param")
                         else f"{prefix}_param nor of LayerParameter")
                raise LayerConfigError(
                    f"{self.type_name} layer: unknown parameter '{k}' (not a field of {where}){_hint(k)}")
            try:
                _assign(target, k, v, k if target is layer else f"{prefix}_param.{k}")
            except _FieldError as e:
                raise LayerConfigError(f"{self.type_name} layer: parameter '{e.path}': {e.reason}") from None
        return layer

    def _get_name(self, names, autonames) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _get_top_name(self, top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])   # the name the producer actually writes
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._get_top_name(t, names, autonames) for t in self.tops)
        layer.name = self._get_name(names, autonames)
        # keyword parameters last, as pycaffe assigns them (an explicit name= overrides the generated one)
        layer.MergeFrom(self._params_proto())
        layers[self] = layer

    def to_proto(self) -> "caffe_pb2.NetParameter":
        return to_proto(self)

    def __repr__(self):
        return f"<Function {self.type_name} ({len(self.inputs)} bottoms, {self.ntop} tops)>"


def _net(layers) -> "caffe_pb2.NetParameter":
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def to_proto(*tops) -> "caffe_pb2.NetParameter":
    """The net computing ``tops`` (Tops, or Functions with ntop=0), layers in dependency order and
    every name automatic."""
    layers, names, autonames = OrderedDict(), {}, Counter()
    for top in tops:
        _check_node(top, "to_proto argument")
        top._to_proto(layers, names, autonames)
    return _net(layers)


def _check_node(value, where):
    if not isinstance(value, (Top, Function)):
        hint = " (unpack a multi-top layer: n.a, n.b = L.Slice(..., ntop=2))" if isinstance(value, tuple) else ""
        raise NetGraphError(f"{where}: expected a Top (what L.<Type>(...) returns), got a "
                            f"{type(value).__name__}{hint}")


class NetSpec:
    """Named tops; ``to_proto()`` writes the net that computes them all, in the order assigned."""

    def __init__(self):
        object.__setattr__(self, "tops", OrderedDict())

    def __setattr__(self, name, value):
        _check_node(value, f"NetSpec.{name}")
        self.tops[name] = value

    def __getattr__(self, name):
        tops = self.__dict__.get("tops")
        if tops is None or name not in tops:
            raise AttributeError(f"NetSpec has no top {name!r}")
        return tops[name]

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, key):
        return self.tops[key]

    def __delitem__(self, key):
        del self.tops[key]

    def __delattr__(self, name):
        if name not in self.tops:
            raise AttributeError(f"NetSpec has no top {name!r}")
        del self.tops[name]

    def __contains__(self, key):
        return key in self.tops

    def keys(self):
        return list(self.tops.keys())

    def to_proto(self) -> "caffe_pb2.NetParameter":
        names = {v: k for k, v in self.tops.items()}
        layers, autonames = OrderedDict(), Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        return _net(layers)


# -- L and P ---------------------------------------------------------------------------------------------

class Layers:
    """``L.<Type>(*bottoms, **params)`` for any layer type name."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = layer_fn.__qualname__ = name
        layer_fn.__doc__ = f"A {name} layer: L.{name}(*bottoms, ntop=1, in_place=False, **params)."
        return layer_fn


class Parameters:
    """``P.<Name>.<VALUE>``: enum values of ``caffe_pb2.<Name>Parameter`` (``P.Pooling.MAX``)."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, f"{name}Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no message {name}Parameter")
        return _ParamValues(name, message)


class _ParamValues:
    def __init__(self, name, message):
        self._name, self._message = name, message

    def __getattr__(self, value):
        if value.startswith("_"):
            raise AttributeError(value)
        try:
            return getattr(self._message, value)
        except AttributeError:
            raise AttributeError(f"{self._name}Parameter has no value {value!r}") from None


layers = Layers()
params = Parameters()
