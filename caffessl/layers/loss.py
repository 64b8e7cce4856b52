"""Loss layers and metrics."""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..proto import caffe_pb2
from .base import Layer, register

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_FLT_MIN = math.log(FLT_MIN)
# nll_loss's ignore_index when no ignore_label is set: -(2**62 + 1) is no float32 value, so no label equals it
_NO_LABEL = -(2 ** 62) - 1
LossParameter = caffe_pb2.LossParameter
log = logging.getLogger("caffessl")


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


def outer_inner_classes(shape, axis):
    """Caffe's outer_num_ (axes before ``axis``), inner_num_ (axes after) and the class count at ``axis``."""
    return math.prod(shape[:axis]), math.prod(shape[axis + 1:]), shape[axis]


def check_label_count(layer, bottom_shapes):
    """Labels must number outer x inner of the prediction around ``layer.axis`` (Caffe's CHECK_EQ)."""
    shape = bottom_shapes[0]
    outer, inner, _ = outer_inner_classes(shape, layer.axis)
    if math.prod(bottom_shapes[1]) != outer * inner:
        layer.shape_error(f"label count {math.prod(bottom_shapes[1])} must equal outer*inner = {outer * inner} "
                          f"for prediction {tuple(shape)} (label {tuple(bottom_shapes[1])})")


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """-log(max(softmax(x)[label], FLT_MIN)) summed over the non-ignored positions, divided by the normalizer.

    A second top holds the softmax probabilities (loss weight 0 unless the prototxt says otherwise). The
    SSL fork's Caffe aborts on a 2-top SoftmaxWithLoss (its internal Softmax inherits the loss_weight list;
    golden case softmaxloss_2d_with_prob_top); we support it, with the loss equal to the one-top layer's.
    """
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
        check_label_count(self, bottom_shapes)
        return [()] + ([tuple(shape)] if len(self.param.top) > 1 else [])

    def forward(self, bottoms):
        x, label = bottoms
        shape = x.shape
        outer, inner, c = outer_inner_classes(shape, self.axis)
        # (N, C) as it comes when it can: every reshape is one more autograd node
        x3 = x if (x.dim() == 2 and self.axis == 1) else x.reshape(outer, c, inner)
        logp = torch.log_softmax(x3, dim=1)
        lab = label.reshape((outer,) if x3.dim() == 2 else (outer, inner)).long()
        ignore = self.ignore if self.ignore is not None else _NO_LABEL
        clamp = float(logp.detach().min()) < LOG_FLT_MIN  # some -log p may exceed Caffe's -log(FLT_MIN)
        n = normalizer(self.mode, outer, inner, None)
        # the common case -- nothing ignored or clamped, divided by 1 or outer*inner -- is one graph node
        fused = not clamp and self.ignore is None and n in (1, outer * inner)
        try:  # nll_loss rejects labels outside [0, c) (but ignore_label)
            if fused:
                loss = F.nll_loss(logp, lab, reduction="sum" if n == 1 else "mean", ignore_index=ignore)
            else:
                losses = F.nll_loss(logp, lab, reduction="none", ignore_index=ignore)  # 0 where ignored
        except (IndexError, RuntimeError):
            self.fail(f"label values must lie in [0, {c}) (or equal ignore_label)")
        if not fused:
            if clamp:  # Caffe takes log(max(prob, FLT_MIN)) but its gradient is still prob - 1
                losses = losses + (losses.clamp(max=-LOG_FLT_MIN) - losses).detach()
            valid = (lab != ignore).sum() if self.ignore is not None else None
            loss = losses.sum() / normalizer(self.mode, outer, inner, valid)
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
        check_label_count(self, bottom_shapes)
        tops = [()]
        if len(self.param.top) > 1:
            tops.append((shape[self.axis],))
        return tops

    def forward(self, bottoms):
        x, label = bottoms
        shape = x.shape
        outer, inner, c = outer_inner_classes(shape, self.axis)
        scores = x.reshape(outer, c, inner).permute(0, 2, 1).reshape(-1, c)
        lab = label.reshape(-1).long()
        keep = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        scores, lab = scores[keep], lab[keep]
        if bool(((lab < 0) | (lab >= c)).any()):
            self.fail(f"label values must lie in [0, {c}) (or equal ignore_label); got min {int(lab.min())} "
                      f"max {int(lab.max())}")
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


# -- helpers --------------------------------------------------------------------------------------------

class _GivenGrad(torch.autograd.Function):
    """A loss value with Caffe's closed-form gradient: apply(value, x_1, g_1, ..., x_n, g_n).

    ``value`` and the ``g_i`` are computed without autograd (Caffe's Forward and Backward formulas for a
    unit top diff); the gradient reaching ``x_i`` is ``top_diff * g_i``. First order only.
    """

    @staticmethod
    def forward(ctx, value, *pairs):
        ctx.n = len(pairs) // 2
        ctx.save_for_backward(*pairs[1::2])
        return value.clone()

    @staticmethod
    def backward(ctx, g):
        grads = ctx.saved_tensors
        out = [None]
        for gr in grads:
            out.extend([g * gr, None])
        return tuple(out)


def given_grad(value, *pairs):
    return _GivenGrad.apply(value, *pairs)


class _LossLayer(Layer):
    """Caffe's LossLayer: bottom 0 and bottom 1 have the same first dimension; the top is a scalar."""
    num_bottoms = 2
    num_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def reshape(self, bottom_shapes):
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not a or not b or a[0] != b[0]:
            self.shape_error(f"the data {a} and label {b} should have the same first dimension")
        self.check_shapes([tuple(s) for s in bottom_shapes])
        return [()]

    def check_shapes(self, shapes):
        """Layer-specific shape checks (raise via self.shape_error)."""

    def labels(self, label, num, classes):
        """Integer labels (static_cast<int>), checked to lie in [0, classes)."""
        lab = label.reshape(num).to(torch.int64)
        if bool(((lab < 0) | (lab >= classes)).any()):
            self.fail(f"label values must lie in [0, {classes}); got min {int(lab.min())} max {int(lab.max())}")
        return lab


# -- losses -----------------------------------------------------------------------------------------------

@register("EuclideanLoss")
class EuclideanLoss(_LossLayer):
    """sum((a - b)^2) / (2 N); both bottoms receive a gradient (+-(a - b) / N)."""
    no_grad_bottoms = ()

    def check_shapes(self, shapes):
        a, b = shapes
        if math.prod(a[1:]) != math.prod(b[1:]):
            self.shape_error(f"inputs {a} and {b} must have the same dimension")

    def forward(self, bottoms):
        a, b = bottoms
        d = a.reshape(a.shape[0], -1) - b.reshape(b.shape[0], -1)
        return [(d * d).sum() / a.shape[0] / 2]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(_LossLayer):
    """-sum(t log(sigmoid(x)) + (1 - t) log(1 - sigmoid(x))) / N, N = bottom[0].shape[0].

    This Caffe version divides by the batch size, not the element count, and has no ignore_label or
    normalization for this layer (golden README section 8): loss_param is not read, as in Caffe.
    Gradient: (sigmoid(x) - t) / N; none to the targets.
    """

    def setup(self, bottom_shapes):
        lp = self.param.loss_param
        if lp.HasField("ignore_label") or lp.HasField("normalization") or lp.HasField("normalize"):
            log.warning("layer '%s' (SigmoidCrossEntropyLoss): loss_param is ignored by this Caffe version's "
                        "SigmoidCrossEntropyLoss (it always divides by the batch size)", self.name)

    def check_shapes(self, shapes):
        if math.prod(shapes[0]) != math.prod(shapes[1]):
            self.shape_error(f"the prediction {shapes[0]} and target {shapes[1]} must have the same count")

    def forward(self, bottoms):
        x, t = bottoms
        num = x.shape[0]
        with torch.no_grad():
            t = t.reshape(x.shape).to(x.dtype)
            pos = (x >= 0).to(x.dtype)
            value = -(x * (t - pos) - torch.log(1 + torch.exp(x - 2 * x * pos))).sum() / num
            grad = (0.5 * torch.tanh(0.5 * x) + 0.5 - t) / num
        return [given_grad(value, x, grad)]


@register("HingeLoss")
class HingeLoss(_LossLayer):
    """One-vs-all hinge: sum_{n,k} max(0, 1 - d(l_n = k) x_nk)^p / N with d = +1 / -1, p = 1 (L1) or 2 (L2).

    Caffe's Forward writes the intermediate m = max(0, 1 + s x) (s = -1 at the label, +1 elsewhere) into the
    bottom *diff* and Backward reads it back from there: the gradient is sign(s m) / N (L1, sign(0) = 0) or
    2 s m / N (L2), times the top diff. It only works because Caffe does not clear bottom diffs between
    Forward and Backward (golden README item 20); the golden gradient is that closed form. We keep m as a
    saved tensor instead of in the diff -- the same numbers, without the side effect that Caffe leaves m
    in x's diff when no gradient is propagated.
    """

    def setup(self, bottom_shapes):
        from ..proto import caffe_pb2
        self.norm = self.param.hinge_loss_param.norm
        if self.norm not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            self.fail(f"unknown hinge_loss_param.norm {self.norm}")
        self.L1 = self.norm == caffe_pb2.HingeLossParameter.L1

    def check_shapes(self, shapes):
        if math.prod(shapes[1]) != shapes[0][0]:
            self.shape_error(f"needs one label per item: label {shapes[1]} for prediction {shapes[0]}")

    def forward(self, bottoms):
        x, label = bottoms
        num = x.shape[0]
        with torch.no_grad():
            x2 = x.reshape(num, -1)
            lab = self.labels(label, num, x2.shape[1])
            sign = torch.ones_like(x2)
            sign.scatter_(1, lab.unsqueeze(1), -1.0)
            m = torch.clamp(1 + sign * x2, min=0)
            if self.L1:
                value = m.sum() / num
                grad = torch.sign(sign * m) / num
            else:
                value = (m * m).sum() / num
                grad = 2 * sign * m / num
        return [given_grad(value, x, grad.reshape(x.shape))]


def _prob_loss_shapes(layer, shapes):
    """InfogainLoss / MultinomialLogisticLoss: one label per item (label of shape (N) or (N, 1, 1, 1))."""
    p, lab = shapes[0], shapes[1]
    if math.prod(lab) != p[0]:
        layer.shape_error(f"needs one label per item: label {lab} for probabilities {p}")


LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_LossLayer):
    """-sum_n log(max(p[n, label_n], 1e-20)) / N over probabilities p (N, dim)."""

    def check_shapes(self, shapes):
        _prob_loss_shapes(self, shapes)

    def forward(self, bottoms):
        p, label = bottoms
        num = p.shape[0]
        with torch.no_grad():
            p2 = p.reshape(num, -1)
            lab = self.labels(label, num, p2.shape[1])
            picked = p2.gather(1, lab.unsqueeze(1)).clamp(min=LOG_THRESHOLD)
            value = -torch.log(picked).sum() / num
            grad = torch.zeros_like(p2)
            grad.scatter_(1, lab.unsqueeze(1), -1.0 / picked / num)
        return [given_grad(value, p, grad.reshape(p.shape))]


@register("InfogainLoss")
class InfogainLoss(_LossLayer):
    """-sum_n sum_k H[label_n, k] log(max(p_nk, 1e-20)) / N over probabilities p (N, dim).

    This Caffe version takes probabilities (no internal softmax, no axis). H (dim x dim) comes from
    infogain_loss_param.source (a binaryproto, path relative to the working directory as in Caffe) or from
    a third bottom. Gradient: -H[label_n, k] / max(p_nk, 1e-20) / N; none to the labels or to H.
    """
    num_bottoms = (2, 3)
    no_grad_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.infogain_loss_param
        if p.HasField("axis"):
            raise UnsupportedError(
                f"layer '{self.name}' (InfogainLoss): infogain_loss_param.axis belongs to a later Caffe whose "
                f"InfogainLoss applies a softmax; this (SSL fork) version takes probabilities and has no axis")
        self.H = None
        if len(bottom_shapes) < 3:
            if not p.source:
                self.fail("needs infogain_loss_param.source or a third bottom with the infogain matrix")
            from ..io.blobproto import read_binaryproto
            self.H = torch.from_numpy(read_binaryproto(p.source)).to(self.dtype).to(self.device)

    def check_shapes(self, shapes):
        _prob_loss_shapes(self, shapes)
        dim = math.prod(shapes[0][1:])
        hshape = tuple(self.H.shape) if self.H is not None else shapes[2]
        if math.prod(hshape) != dim * dim or any(d != 1 for d in hshape[:-2]):
            self.shape_error(f"infogain matrix {hshape} must be {dim} x {dim} for probabilities {shapes[0]}")

    def forward(self, bottoms):
        p, label = bottoms[0], bottoms[1]
        num = p.shape[0]
        with torch.no_grad():
            p2 = p.reshape(num, -1)
            dim = p2.shape[1]
            H = (self.H if self.H is not None else bottoms[2]).reshape(dim, dim).to(p.dtype)
            lab = self.labels(label, num, dim)
            rows = H.index_select(0, lab)
            prob = p2.clamp(min=LOG_THRESHOLD)
            value = -(rows * torch.log(prob)).sum() / num
            grad = -rows / prob / num
        return [given_grad(value, p, grad.reshape(p.shape))]


@register("ContrastiveLoss")
class ContrastiveLoss(_LossLayer):
    """Hadsell et al.: sum_n [y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2] / (2N), d_n = ||a_n - b_n||.

    legacy_version uses max(margin - d_n^2, 0) for dissimilar pairs. y is read as static_cast<int>.
    Backward is Caffe's: for dissimilar pairs (non-legacy) the gradient on a is
    -(margin - d) / (d + 1e-4) (a - b) / N -- note the 1e-4 in the denominator, which makes it differ from
    the exact derivative by a relative 1e-4 / d. b gets the opposite; y gets none.
    """
    num_bottoms = 3
    no_grad_bottoms = (2,)

    def check_shapes(self, shapes):
        a, b, y = shapes
        if len(a) < 2 or a[1] != (b[1] if len(b) > 1 else None) or math.prod(a[2:]) != 1 or math.prod(b[2:]) != 1:
            self.shape_error(f"a {a} and b {b} must both be (N, C[, 1, 1]) with the same C")
        if a[0] != b[0] or math.prod(y) != a[0]:
            self.shape_error(f"a {a}, b {b} and the similarity {y} must have the same number of items")

    def forward(self, bottoms):
        a, b, y = bottoms
        p = self.param.contrastive_loss_param
        margin, legacy = p.margin, p.legacy_version
        num = a.shape[0]
        with torch.no_grad():
            d = a.reshape(num, -1) - b.reshape(num, -1)
            dist_sq = (d * d).sum(dim=1)
            similar = y.reshape(num).to(torch.int64) != 0
            if legacy:
                mdist = margin - dist_sq
                dissim = torch.clamp(mdist, min=0)
                beta = -torch.ones_like(dist_sq)
            else:
                dist = torch.sqrt(dist_sq)
                mdist = margin - dist
                dissim = torch.clamp(mdist, min=0) ** 2
                beta = -mdist / (dist + 1e-4)
            value = torch.where(similar, dist_sq, dissim).sum() / num / 2
            coef = torch.where(similar, torch.ones_like(dist_sq),
                               torch.where(mdist > 0, beta, torch.zeros_like(beta)))
            ga = (coef.unsqueeze(1) * d / num)
        return [given_grad(value, a, ga.reshape(a.shape), b, (-ga).reshape(b.shape))]
