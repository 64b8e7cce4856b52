"""Generated protobuf bindings for the caffessl Caffe schema.

`caffe_pb2` is generated from proto/caffe.proto by tools/gen_proto.py
(do not edit it by hand).
"""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
