"""File I/O: prototxt, caffemodel (binary and HDF5), binaryproto, legacy upgrade, pycaffe's io helpers."""
from .prototxt import read_net_prototxt, read_solver_prototxt, read_prototxt, parse_text, to_text, write_prototxt  # noqa: F401
from .blobproto import read_binaryproto, write_binaryproto, blobproto_to_array, array_to_blobproto  # noqa: F401
from .caffemodel import read_weights, read_net_binary, write_caffemodel, write_caffemodel_hdf5  # noqa: F401
from .transformer import Transformer, load_image, resize_image, oversample, load_mean  # noqa: F401
