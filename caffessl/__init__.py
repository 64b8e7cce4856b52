"""caffessl: a Caffe-compatible training and inference engine for Structured Sparsity Learning.

``import caffessl as caffe`` gives pycaffe's surface: ``caffe.Net(model, weights, caffe.TEST)``,
``caffe.set_mode_cpu()``, ``caffe.SGDSolver(path)``...
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors  # noqa: F401
from .mode import set_device, set_mode_cpu, set_mode_gpu, set_random_seed  # noqa: F401
from .net import TEST, TRAIN, Net  # noqa: F401
from .layers.base import layer_type_list  # noqa: F401
from .proto import caffe_pb2  # noqa: F401
from . import io  # noqa: F401,E402


def __getattr__(name):
    # solvers and the classifier are imported lazily (they pull in data layers, tqdm...)
    solvers = {"get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
               "AdaDeltaSolver", "AdamSolver", "Solver"}
    if name in solvers:
        from .solver import solver as _s
        return getattr(_s, name)
    if name == "Layer":  # pycaffe's caffe.Layer, the base class of Python layers
        from .layers.python_layer import Layer
        return Layer
    if name in ("NetSpec", "to_proto", "params", "net_spec"):  # pycaffe's net_spec (caffe.NetSpec...)
        import importlib
        mod = importlib.import_module(".net_spec", __name__)  # not `from . import`: it would recurse here
        return mod if name == "net_spec" else getattr(mod, name)
    if name == "Classifier":
        from .classifier import Classifier
        return Classifier
    raise AttributeError(f"module 'caffessl' has no attribute {name!r}")
