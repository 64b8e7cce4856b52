"""Upgrading V0 and V1 nets (``layers { ... }``) to the current ``layer { ... }`` format.

The steps and their order are those of Caffe's upgrade_proto.cpp (UpgradeNetAsNeeded):

1. V0 -> V1 (``layers { layer { type: "conv" ... } }``): padding layers are merged into the conv/pool layer
   they feed, then each V0 field moves into its type-specific parameter message (UpgradeV0Net).
2. Data transformation: ``scale / mean_file / crop_size / mirror`` inside data_param, image_data_param or
   window_data_param move to ``transform_param`` (UpgradeNetDataTransformation).
3. V1 -> V2: the enum type becomes the type string, ``blobs_lr`` / ``weight_decay`` / ``param`` /
   ``blob_share_mode`` become ``param { lr_mult decay_mult name share_mode }``; blobs are kept
   (UpgradeV1Net).

``upgrade_batchnorm`` is the later BatchNorm step (UpgradeNetBatchNorm) for V2 nets.
"""
from __future__ import annotations

import logging

from ..errors import NetGraphError, UnknownLayerTypeError
from ..proto import caffe_pb2

log = logging.getLogger("caffessl")

V1 = caffe_pb2.V1LayerParameter

# UpgradeV1LayerType: V1 enum name -> layer type string
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# UpgradeV0LayerType: V0 type string -> V1 enum name
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 field -> {V0 type: (param message, field)} ; "*" applies to any type (UpgradeV0LayerParameter)
_V0_FIELDS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"), "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}


def _set(msg, field, value):
    """Set ``msg.field = value`` for scalars, append for repeated fields, CopyFrom for messages."""
    fd = msg.DESCRIPTOR.fields_by_name[field]
    if fd.is_repeated:
        getattr(msg, field).append(value)
    elif fd.message_type is not None:
        getattr(msg, field).CopyFrom(value)
    else:
        setattr(msg, field, value)


# -- V0 -> V1 ------------------------------------------------------------------------------------------

def net_needs_v0_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def upgrade_v0_padding_layers(net, source):
    """UpgradeV0PaddingLayers: drop "padding" layers, moving their pad into the conv/pool they feed."""
    out = list(net.layers)
    last_top = {name: -1 for name in net.input}
    kept = []
    for i, conn in enumerate(out):
        v0 = conn.layer
        new = None
        if v0.type != "padding":
            new = V1()
            new.CopyFrom(conn)
            kept.append(new)
        for j, b in enumerate(conn.bottom):
            if b not in last_top:
                raise NetGraphError(f"{source}: V0 layer '{v0.name}': unknown bottom blob '{b}'")
            idx = last_top[b]
            if idx == -1:
                continue
            src = out[idx]
            if src.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise NetGraphError(f"{source}: V0 layer '{v0.name}': a padding layer feeds a "
                                        f"non-convolution/non-pooling layer of type '{v0.type}'")
                if len(conn.bottom) != 1 or len(src.bottom) != 1 or len(src.top) != 1:
                    raise NetGraphError(f"{source}: V0 layer '{v0.name}': padding layers must have one "
                                        f"bottom and one top and feed a single-bottom layer")
                new.layer.pad = src.layer.pad
                new.bottom[j] = src.bottom[0]
        for t in conn.top:
            last_top[t] = i
    del net.layers[:]
    net.layers.extend(kept)


def upgrade_v0_layer(conn, source):
    """UpgradeV0LayerParameter: one V0 layer (inside a V1 connection) -> a V1 layer."""
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return out
    v0 = conn.layer
    t = v0.type
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if t not in V0_TYPES:
            raise UnknownLayerTypeError(f"{source}: V0 layer '{v0.name}': unknown layer type '{t}'")
        out.type = V1.LayerType.Value(V0_TYPES[t])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        target = targets.get("*") or targets.get(t)
        if target is None:
            # Caffe logs "Unknown parameter <field> for layer type <type>" and drops it
            log.error("%s: V0 layer '%s': parameter %s does not apply to layer type %s; dropped "
                      "(as Caffe does)", source, v0.name, field, t)
            continue
        pmsg, pfield = target
        value = getattr(v0, field)
        if field == "pool":
            value = caffe_pb2.PoolingParameter.PoolMethod.Value(
                caffe_pb2.V0LayerParameter.PoolMethod.Name(value))
        if pfield is None:  # a whole message
            getattr(out, pmsg).CopyFrom(value)
        else:
            _set(getattr(out, pmsg), pfield, value)
    return out


def upgrade_v0_net(net, source):
    """UpgradeV0Net: padding layers first, then every layer; keeps name, input, input_dim, force_backward."""
    padded = caffe_pb2.NetParameter()
    padded.CopyFrom(net)
    upgrade_v0_padding_layers(padded, source)
    layers = [upgrade_v0_layer(c, source) for c in padded.layers]
    keep_name = net.name if net.HasField("name") else None
    inputs, dims = list(net.input), list(net.input_dim)
    fb = net.force_backward if net.HasField("force_backward") else None
    net.Clear()
    if keep_name is not None:
        net.name = keep_name
    net.layers.extend(layers)
    net.input.extend(inputs)
    net.input_dim.extend(dims)
    if fb is not None:
        net.force_backward = fb


# -- data transformation -------------------------------------------------------------------------------

_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_data_transformation(net) -> None:
    """UpgradeNetDataTransformation: scale/mean_file/crop_size/mirror of V1 data layers -> transform_param."""
    for l in net.layers:
        pname = _DATA_PARAMS.get(V1.LayerType.Name(l.type))
        if pname is None:
            continue
        p = getattr(l, pname)
        for f in _TRANSFORM_FIELDS:
            if p.HasField(f):
                setattr(l.transform_param, f, getattr(p, f))
                p.ClearField(f)


# -- V1 -> V2 ------------------------------------------------------------------------------------------

_V1_COPIED = [f.name for f in V1.DESCRIPTOR.fields
              if f.message_type is not None and (f.name.endswith("_param"))
              and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name]


def v1_type_name(v1_layer, source) -> str:
    enum_name = V1.LayerType.Name(v1_layer.type) if v1_layer.type in V1.LayerType.values() else None
    if enum_name is None or enum_name not in V1_TYPE_NAMES:
        raise UnknownLayerTypeError(f"{source}: V1 layer '{v1_layer.name}': unknown V1 layer type "
                                    f"{enum_name or v1_layer.type}")
    return V1_TYPE_NAMES[enum_name]


def upgrade_v1_layer(v1, source):
    """UpgradeV1LayerParameter: one V1 layer -> a LayerParameter."""
    if v1.HasField("layer"):
        raise NetGraphError(f"{source}: V1 layer '{v1.name}' still holds a V0 layer after the V0 upgrade")
    lp = caffe_pb2.LayerParameter()
    lp.bottom.extend(v1.bottom)
    lp.top.extend(v1.top)
    if v1.HasField("name"):
        lp.name = v1.name
    lp.include.extend(v1.include)
    lp.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        lp.type = v1_type_name(v1, source)
    lp.blobs.extend(v1.blobs)

    def spec(i):
        while len(lp.param) <= i:
            lp.param.add()
        return lp.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, wd in enumerate(v1.weight_decay):
        spec(i).decay_mult = wd
    lp.loss_weight.extend(v1.loss_weight)
    for f in _V1_COPIED:
        if v1.HasField(f):
            getattr(lp, f).CopyFrom(getattr(v1, f))
    return lp


def upgrade_v1_net(net, source: str = "<net>"):
    """UpgradeNetAsNeeded's V0, data-transformation and V1 steps on ``net`` (in place)."""
    if len(net.layer):
        raise NetGraphError(f"{source}: refusing to upgrade a net that has both 'layer' and legacy "
                            f"'layers' fields")
    if net_needs_v0_upgrade(net):
        log.info("%s: upgrading V0LayerParameter net", source)
        upgrade_v0_net(net, source)
    upgrade_data_transformation(net)
    log.info("%s: upgrading V1LayerParameter net", source)
    new_layers = [upgrade_v1_layer(l, source) for l in net.layers]
    net.ClearField("layers")
    net.layer.extend(new_layers)
    return net


# -- BatchNorm -----------------------------------------------------------------------------------------

def upgrade_batchnorm(net) -> None:
    """UpgradeNetBatchNorm (the BVLC version the SSL fork is based on, Nov 2016): a BatchNorm layer that
    declares three ``param`` specs (the old way of freezing its statistics) has them removed; the layer
    itself fixes lr_mult 0 for its three blobs."""
    for lp in net.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            lp.ClearField("param")
