"""Import every layer family so that each registers its types (one registry: base.LAYERS)."""
from . import common, data, loss, neuron, normalization, python_layer, recurrent, vision  # noqa: F401
