"""Text protobuf (prototxt) reading and writing with file:line:col errors."""
from __future__ import annotations

import os

from google.protobuf import text_format

from ..errors import PrototxtParseError
from ..proto import caffe_pb2
from .upgrade import upgrade_net_as_needed, upgrade_solver_as_needed


def _read_text(path) -> str:
    from .limits import read_file
    path = os.fspath(path)
    raw = read_file(path, "prototxt")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrototxtParseError(
            f"{path}: not a text prototxt (byte {e.start} is not UTF-8; is it a binary caffemodel?)") from None


def parse_text(text: str, message, source: str = "<string>"):
    """Merge prototxt ``text`` into ``message``; errors name source:line:col."""
    try:
        text_format.Merge(text, message, allow_unknown_field=False)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e)
        # protobuf prefixes "line:col : "; keep only the reason
        if line is not None and msg.startswith(f"{line}:"):
            msg = msg.split(" : ", 1)[-1]
        where = f"{source}:{line}:{col}" if line is not None else source
        raise PrototxtParseError(f"{where}: {msg}") from None
    return message


def read_prototxt(path, message):
    return parse_text(_read_text(path), message, os.fspath(path))


def read_net_prototxt(path) -> "caffe_pb2.NetParameter":
    """Read a NetParameter from a prototxt and upgrade legacy (V0/V1) content as Caffe does."""
    net = read_prototxt(path, caffe_pb2.NetParameter())
    return upgrade_net_as_needed(net, os.fspath(path))


def read_solver_prototxt(path) -> "caffe_pb2.SolverParameter":
    sp = read_prototxt(path, caffe_pb2.SolverParameter())
    return upgrade_solver_as_needed(sp, os.fspath(path))


def to_text(message) -> str:
    return text_format.MessageToString(message)


def write_prototxt(path, message) -> None:
    from .atomic import atomic_write
    atomic_write(path, to_text(message).encode("utf-8"))
