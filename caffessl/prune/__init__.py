"""Pruning methods SSL is compared with, on Caffe nets: the policies (``prune``), channel masks
(``insert_masks``), solver-history zeroing, sensitivity analysis and YAML recipes (``caffessl.prune.recipe``).

    net = caffessl.Net("lenet_train_test.prototxt", caffessl.TEST, weights="lenet.caffemodel")
    result = prune(net, "reduction-rate", 0.25)           # in place; result.table(), result.ft_param
    save(result, net, "lenet_rr.caffemodel", "lenet_rr_ft.prototxt")
"""
from .core import LayerReport, PruneResult, finetune_param, prune, save
from .history import zero_history
from .masks import insert_masks
from .policies import POLICIES

__all__ = ["POLICIES", "LayerReport", "PruneResult", "finetune_param", "insert_masks", "prune", "save",
           "zero_history"]
