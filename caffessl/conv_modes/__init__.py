"""Inference-time convolution implementations (the SSL fork's ``conv_mode``), for Convolution and InnerProduct.

* ``LOWERED_GEMM``  -- dense (F.conv2d; ``gemm.LoweredGemmConv`` is the explicit im2col + GEMM);
* ``LOWERED_CSRMM`` -- CSR weights x lowered input (MKL sparse BLAS on the CPU, torch/cuSPARSE on CUDA);
* ``LOWERED_CCNMM`` -- all-zero filters and lowered columns removed, a smaller GEMM (oneDNN) or dense conv;
* ``DIRECT_SCONV``  -- computed as CSRMM (same arithmetic; the fork's direct-sparse kernel is an MKL/intel
  branch feature); ``DIRECT_DCONV`` falls through to GEMM as in the fork;
* ``auto``          -- per layer from the measured sparsity (``auto.py``).

The structures are built once from the weights and rebuilt lazily after the weights change. Non-GEMM
kernels are forward-only: a gradient through them raises ``SparseTrainingError``, as Caffe FATALs.
``set_conv_mode(net, mode)`` is the ``--conv-mode`` override of ``caffessl test`` / ``caffessl time``.
"""
from __future__ import annotations

import logging

from ..errors import LayerConfigError, UnsupportedError
from ..proto import caffe_pb2
from . import auto as _auto
from .ccnmm import CCNMMConv
from .csrmm import CSRMMConv
from .engine import LayerEngine
from .gemm import DenseConv, LoweredGemmConv  # noqa: F401
from .inner_product import CCNMMIP, CSRMMIP, DenseIP, ip_matrix
from .lowering import ConvGeometry

log = logging.getLogger("caffessl")

CP = caffe_pb2.ConvolutionParameter
LOWERED_GEMM, LOWERED_CSRMM, LOWERED_CCNMM = CP.LOWERED_GEMM, CP.LOWERED_CSRMM, CP.LOWERED_CCNMM
DIRECT_SCONV, DIRECT_DCONV = CP.DIRECT_SCONV, CP.DIRECT_DCONV
AUTO = -1   # not a ConvMode value: the "auto" override (a layer's conv_mode attribute may hold it)

MODES = {"gemm": LOWERED_GEMM, "csrmm": LOWERED_CSRMM, "ccnmm": LOWERED_CCNMM, "auto": AUTO,
         "direct_sconv": DIRECT_SCONV, "direct_dconv": DIRECT_DCONV}
_KIND = {LOWERED_GEMM: "gemm", DIRECT_DCONV: "gemm", LOWERED_CSRMM: "csrmm", DIRECT_SCONV: "csrmm",
         LOWERED_CCNMM: "ccnmm", AUTO: "auto"}
_CONV_KERNELS = {"gemm": DenseConv, "csrmm": CSRMMConv, "ccnmm": CCNMMConv}
_IP_KERNELS = {"gemm": DenseIP, "csrmm": CSRMMIP, "ccnmm": CCNMMIP}


def parse_mode(mode) -> int:
    """'gemm' | 'csrmm' | 'ccnmm' | 'auto' | a ConvMode name or number -> ConvMode value (or AUTO)."""
    if isinstance(mode, int) and (mode == AUTO or mode in _KIND):
        return mode
    key = str(mode).strip().lower()
    key = key[len("lowered_"):] if key.startswith("lowered_") else key
    if key in MODES:
        return MODES[key]
    raise LayerConfigError(f"unknown conv mode {mode!r}: expected one of gemm, csrmm, ccnmm, auto "
                           f"(or a ConvolutionParameter.ConvMode name)")


def mode_name(mode: int) -> str:
    return "auto" if mode == AUTO else CP.ConvMode.Name(mode)


def _conv_chooser(kind):
    def choose(layer, w):
        geom = ConvGeometry.of_layer(layer)
        k = kind
        if k == "auto":
            from .lowering import structure
            k = _auto.choose(structure(w, geom.group))
        cls = _CONV_KERNELS[k]
        return cls(geom, w) if cls is DenseConv else cls(geom, w, layer.name)
    return choose


def _ip_chooser(kind):
    def choose(layer, w):
        wm = ip_matrix(w, layer.transpose)
        k = kind
        if k == "auto":
            from .inner_product import ip_structure
            k = _auto.choose(ip_structure(wm))
        return _IP_KERNELS[k](wm, layer.transpose)
    return choose


def make_engine(layer, mode=None):
    """The engine for ``layer`` (Convolution or InnerProduct) in ``mode`` (default: ``layer.conv_mode``),
    or None where the layer's own dense path is the answer (LOWERED_GEMM, DIRECT_DCONV)."""
    mode = parse_mode(getattr(layer, "conv_mode", LOWERED_GEMM) if mode is None else mode)
    kind = _KIND[mode]
    if kind == "gemm":
        return None
    where = f"layer '{layer.name}' ({layer.type}"
    if layer.type == "InnerProduct":
        choose = _ip_chooser(kind)
        return LayerEngine(where, mode_name(mode), lambda w: choose(layer, w))
    if layer.type != "Convolution":
        raise LayerConfigError(f"layer '{layer.name}' ({layer.type}): conv_mode applies to Convolution and "
                               f"InnerProduct layers")
    if getattr(layer, "nsp", 2) != 2:
        if kind == "auto":
            return None
        raise UnsupportedError(f"layer '{layer.name}' (Convolution): conv_mode {mode_name(mode)} needs a "
                                  f"2-D convolution (the fork's masked im2col is 2-D only); this one has "
                                  f"{layer.nsp} spatial axes")
    choose = _conv_chooser(kind)
    return LayerEngine(where, mode_name(mode), lambda w: choose(layer, w))


def set_conv_mode(net, mode):
    """Override conv_mode on every Convolution and InnerProduct layer of ``net`` (``--conv-mode``).

    Returns {layer name: mode name}. Deconvolution is left alone (in the fork its forward is a backward
    GEMM, which no sparse mode supports)."""
    value = parse_mode(mode)
    done = {}
    for layer in net.layers:
        if not layer.sparse_modes or not layer.params:
            continue
        layer.conv_mode = value
        layer.engine = make_engine(layer, value)
        done[layer.name] = mode_name(value)
    return done


def active_mode(layer) -> str:
    """The kernel a layer runs now: its engine's (auto resolved), else LOWERED_GEMM."""
    eng = getattr(layer, "engine", None)
    if eng is None or (layer.type == "Convolution" and getattr(layer, "conv_mode", 0) == LOWERED_GEMM):
        return "LOWERED_GEMM"
    return eng.active_name(layer.params[0])
