"""File I/O: prototxt, caffemodel (binary and HDF5), binaryproto, legacy upgrade, pycaffe's io helpers."""
from .prototxt import read_net_prototxt, read_solver_prototxt, read_prototxt, parse_text, to_text, write_prototxt  # noqa: F401
from ..proto import caffe_pb2  # noqa: F401  (pycaffe's io module exposes caffe_pb2)
from .blobproto import read_binaryproto, write_binaryproto, array_to_blobproto  # noqa: F401
from .blobproto import arraylist_to_blobprotovector_str, blobprotovector_str_to_arraylist  # noqa: F401
from .blobproto import (pycaffe_blobproto_to_array as blobproto_to_array,  # noqa: F401
                        pycaffe_array_to_datum as array_to_datum, pycaffe_datum_to_array as datum_to_array)
from .caffemodel import read_weights, read_net_binary, write_caffemodel, write_caffemodel_hdf5  # noqa: F401
from .transformer import Transformer, load_image, resize_image, oversample, load_mean  # noqa: F401
