"""Typed errors. Every error a user can cause is a CaffeSSLError whose message names the place
(file:line:col for text files, the layer for graph errors, layer + param index + shapes for weights)."""


class CaffeSSLError(Exception):
    """Base class of every error caffessl raises for bad input."""


class PrototxtParseError(CaffeSSLError):
    """A prototxt that does not parse (message names file:line:col)."""


class FileMissingError(CaffeSSLError, FileNotFoundError):
    """A file named by the user (net, weights, mean, data source...) does not exist."""


class UnknownLayerTypeError(CaffeSSLError):
    """A layer type that is not in the registry."""


class NetGraphError(CaffeSSLError):
    """A malformed net: a bottom nobody produces, duplicate tops, bad sharing..."""


class MissingBottomError(NetGraphError):
    """A bottom blob that no earlier layer produces."""


class ShapeMismatchError(CaffeSSLError):
    """Incompatible shapes at set-up or reshape (names layer and shapes)."""


class ArrayShapeError(ShapeMismatchError, ValueError):
    """An array whose shape does not fit the record in caffe.io's helpers (pycaffe raises ValueError there)."""


class LayerConfigError(CaffeSSLError):
    """A layer parameter value Caffe rejects (wrong bottom count, bad value...)."""


class WeightsError(CaffeSSLError):
    """A caffemodel whose content does not fit the net (names layer, param index, both shapes)."""


class CaffemodelFormatError(CaffeSSLError):
    """A file that is not a (complete) caffemodel / binaryproto / solverstate."""


class SolverConfigError(CaffeSSLError):
    """A solver.prototxt that cannot run (unknown type or policy, missing nets...)."""


class DataSourceError(CaffeSSLError):
    """A data source that is missing, empty or unreadable."""


class TrainingDivergedError(CaffeSSLError):
    """The loss became NaN or Inf."""


class ExportError(CaffeSSLError):
    """A layer or value that the export format cannot express."""


class SparseTrainingError(CaffeSSLError):
    """A gradient requested through a sparse conv_mode (Caffe: "Training in sparse format is not supported")."""


class LogParseError(CaffeSSLError):
    """A file that is not a Caffe / caffessl training log (no ``Solving`` line, unreadable)."""


class PlotError(CaffeSSLError):
    """A plot that cannot be drawn (matplotlib missing, nothing to plot, unknown column)."""


class PlotUnavailableError(PlotError, ImportError):
    """Plots were asked for but matplotlib cannot be imported."""


class PruneError(CaffeSSLError):
    """A pruning request that cannot run: unknown policy, amount out of range, unknown or unprunable layer."""


class PruneGuardrailError(PruneError):
    """A policy that would leave a layer with fewer channels/weights than the guardrail allows."""


class RecipeError(CaffeSSLError):
    """A recipe file that cannot run (names the file, line and key or step)."""


class ResourceLimitError(CaffeSSLError):
    """An input that would need more than a configured limit (file size, memory): caffessl.io.limits."""


class FileTooLargeError(ResourceLimitError):
    """A file over the reader size limit (default 2 GB, as Caffe's protobuf limit)."""


class MemoryLimitError(ResourceLimitError, LayerConfigError):
    """A net whose blobs and params would need more memory than the limit (names the layers and shapes)."""


class SnapshotWriteError(CaffeSSLError):
    """A snapshot that could not be written (disk full, permissions): the previous snapshot is intact."""


class UnsupportedError(CaffeSSLError, NotImplementedError):
    """A valid Caffe feature that caffessl does not implement (names the layer and the field)."""


class DistributedError(CaffeSSLError):
    """Data-parallel training that cannot go on: a rank died or disagrees (solver, weights), a bad world."""


class DeviceError(CaffeSSLError):
    """A GPU was asked for that this machine does not have (no CUDA, an id out of range, a repeated id)."""
