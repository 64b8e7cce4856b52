"""Layer implementations by family; importing this package fills the registry (``base.LAYERS``)."""
from .base import LAYERS, Layer, get_layer_class, layer_type_list, register  # noqa: F401
