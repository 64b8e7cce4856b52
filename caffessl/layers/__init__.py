"""Layer implementations by family; importing this package fills the registry (``base.LAYERS``).

The package doubles as pycaffe's ``caffe.layers`` (``from caffessl import layers as L``): a name that is
neither an attribute nor a submodule is a NetSpec layer factory, so ``L.Convolution(n.data, ...)`` works
(see :mod:`caffessl.net_spec`).
"""
import importlib as _importlib
import importlib.util as _importlib_util

from .base import LAYERS, Layer, get_layer_class, layer_type_list, register  # noqa: F401


def __getattr__(name):
    # only reached when normal lookup fails: a submodule not imported yet, or a layer type name
    if name.startswith("_") or not name.isidentifier():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f"{__name__}.{name}")
    from .. import net_spec
    return getattr(net_spec.layers, name)
