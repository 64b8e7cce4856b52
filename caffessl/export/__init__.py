"""Exporting nets to other formats: ``caffessl.export.onnx.export(net, path)``."""
