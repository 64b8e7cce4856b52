"""Loss layers and metrics."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, register

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_FLT_MIN = math.log(FLT_MIN)
LossParameter = caffe_pb2.LossParameter


def normalization_mode(loss_param):
    """LossParameter.normalization, with the legacy ``normalize`` flag (true: VALID, false: BATCH_SIZE)."""
    if loss_param.HasField("normalize") and not loss_param.HasField("normalization"):
        return LossParameter.VALID if loss_param.normalize else LossParameter.BATCH_SIZE
    return loss_param.normalization


def normalizer(mode, outer, inner, valid_count):
    if mode == LossParameter.FULL:
        n = outer * inner
    elif mode == LossParameter.VALID:
        n = valid_count if valid_count is not None else outer * inner
    elif mode == LossParameter.BATCH_SIZE:
        n = outer
    else:
        n = 1
    if torch.is_tensor(n):
        return n.clamp(min=1)
    return max(1, n)


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    num_bottoms = 2
    num_tops = (1, 2)
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(self.param.softmax_param.axis, len(shape))
        lp = self.param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(lp)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        outer = math.prod(shape[:self.axis])
        inner = math.prod(shape[self.axis + 1:])
        if math.prod(bottom_shapes[1]) != outer * inner:
            self.shape_error(f"label count {math.prod(bottom_shapes[1])} must equal outer*inner = "
                             f"{outer * inner} for prediction {tuple(shape)} (label {tuple(bottom_shapes[1])})")
        return [()] + ([tuple(shape)] if len(self.param.top) > 1 else [])

    def forward(self, bottoms):
        x, label = bottoms
        shape = x.shape
        outer = math.prod(shape[:self.axis])
        inner = math.prod(shape[self.axis + 1:])
        c = shape[self.axis]
        logp = torch.log_softmax(x.reshape(outer, c, inner), dim=1)
        lab = label.reshape(outer, inner).long()
        valid = None
        if self.ignore is not None:
            keep = lab != self.ignore
            lab = torch.where(keep, lab, torch.zeros_like(lab))
        if bool(((lab < 0) | (lab >= c)).any()):
            self.fail(f"label values must lie in [0, {c}) (or equal ignore_label)")
        picked = logp.gather(1, lab.unsqueeze(1)).squeeze(1)
        # Caffe takes log(max(prob, FLT_MIN)) but its gradient is still prob - 1
        picked = picked + (picked.clamp(min=LOG_FLT_MIN) - picked).detach()
        if self.ignore is not None:
            picked = picked * keep
            valid = keep.sum()
        n = normalizer(self.mode, outer, inner, valid)
        loss = -picked.sum() / n
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(torch.exp(logp).reshape(shape))
        return tops


@register("Accuracy")
class Accuracy(Layer):
    num_bottoms = 2
    num_tops = (1, 2)
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.ignore = p.ignore_label if p.HasField("ignore_label") else None
        if self.top_k > shape[self.axis]:
            self.fail(f"top_k ({self.top_k}) must not exceed the number of classes ({shape[self.axis]})")

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        outer = math.prod(shape[:self.axis])
        inner = math.prod(shape[self.axis + 1:])
        if math.prod(bottom_shapes[1]) != outer * inner:
            self.shape_error(f"label count {math.prod(bottom_shapes[1])} must equal outer*inner = "
                             f"{outer * inner} for prediction {tuple(shape)}")
        tops = [()]
        if len(self.param.top) > 1:
            tops.append((shape[self.axis],))
        return tops

    def forward(self, bottoms):
        x, label = bottoms
        shape = x.shape
        outer = math.prod(shape[:self.axis])
        inner = math.prod(shape[self.axis + 1:])
        c = shape[self.axis]
        scores = x.reshape(outer, c, inner).permute(0, 2, 1).reshape(-1, c)
        lab = label.reshape(-1).long()
        keep = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        scores, lab = scores[keep], lab[keep]
        true = scores.gather(1, lab.unsqueeze(1))
        # Caffe counts every class scoring >= the true class (the true class included)
        better = (scores >= true).sum(dim=1) - 1
        hit = (better < self.top_k).to(x.dtype)
        count = lab.numel()
        acc = hit.sum() / count if count else torch.zeros((), dtype=x.dtype, device=x.device)
        tops = [acc.reshape(())]
        if len(self.param.top) > 1:
            nums = torch.bincount(lab, minlength=c).to(x.dtype)
            hits = torch.bincount(lab, weights=hit, minlength=c).to(x.dtype)
            tops.append(torch.where(nums > 0, hits / nums.clamp(min=1), torch.zeros_like(nums)))
        return tops
