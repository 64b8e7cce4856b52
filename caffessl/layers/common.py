"""Common layers: InnerProduct, Softmax, and the structural layers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..conv_modes.matmul import linear
from ..errors import ShapeMismatchError
from .base import Layer, register


@register("InnerProduct")
class InnerProduct(Layer):
    num_bottoms = 1
    num_tops = 1
    weight_matrix = True
    sparse_modes = True
    engine = None  # a caffessl.conv_modes engine, set by conv_modes.set_conv_mode (sparse inference)

    def setup(self, bottom_shapes):
        p = self.param.inner_product_param
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.K = math.prod(shape[self.axis:])
        self.N = p.num_output
        if self.N <= 0:
            self.fail("inner_product_param.num_output must be positive")
        self.transpose = p.transpose
        wshape = (self.K, self.N) if self.transpose else (self.N, self.K)
        self.new_param(wshape, p.weight_filler)
        if p.bias_term:
            self.new_param((self.N,), p.bias_filler)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        k = math.prod(shape[self.axis:])
        if k != self.K:
            self.shape_error(f"input {tuple(shape)} has {k} features from axis {self.axis}; "
                             f"the weights expect {self.K}")
        return [tuple(shape[:self.axis]) + (self.N,)]

    def forward(self, bottoms):
        x = bottoms[0]
        lead = x.shape[:self.axis]
        flat = x.dim() == 2 and self.axis == 1  # already (M, K): no reshape nodes in the graph
        x2 = x if flat else x.reshape(-1, self.K)
        w = self.params[0]
        b = self.params[1] if len(self.params) > 1 else None
        if self.engine is not None:
            y = self.engine(x2, w, b)
        elif self.transpose:
            y = x2 @ w if b is None else torch.addmm(b, x2, w)
        else:
            y = linear(x2, w, b)     # oneDNN's matmul (and its backward): 1.3-2.4x F.linear's MKL here
        return [y if len(lead) == 1 else y.reshape(*lead, self.N)]


@register("Softmax")
class Softmax(Layer):
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        self.axis = self.canonical_axis(self.param.softmax_param.axis, len(bottom_shapes[0]))

    def forward(self, bottoms):
        return [torch.softmax(bottoms[0], dim=self.axis)]


# -- structural layers --------------------------------------------------------------------------------

def _axis_or_legacy(layer, p, legacy_field, num_axes):
    """Concat/Slice: ``axis`` or the deprecated non-negative ``<legacy_field>``, never both (Caffe's CHECK)."""
    if p.HasField(legacy_field):
        if p.HasField("axis"):
            layer.fail(f"specify either axis or {legacy_field}, not both")
        axis = getattr(p, legacy_field)
        if axis >= num_axes:
            layer.fail(f"{legacy_field} {axis} out of range for a {num_axes}-axis blob", ShapeMismatchError)
        return axis
    return layer.canonical_axis(p.axis, num_axes)


@register("Concat")
class Concat(Layer):
    num_bottoms = (1, None)
    num_tops = 1

    def setup(self, bottom_shapes):
        self.axis = _axis_or_legacy(self, self.param.concat_param, "concat_dim", len(bottom_shapes[0]))

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        total = 0
        for i, s in enumerate(bottom_shapes):
            s = tuple(s)
            if len(s) != len(first) or s[:self.axis] + s[self.axis + 1:] != first[:self.axis] + first[self.axis + 1:]:
                self.shape_error(f"bottom {i} {s} does not match bottom 0 {first} outside the concat axis "
                                 f"{self.axis}")
            total += s[self.axis]
        return [first[:self.axis] + (total,) + first[self.axis + 1:]]

    def forward(self, bottoms):
        if len(bottoms) == 1:
            return [bottoms[0].view_as(bottoms[0])]
        return [torch.cat(bottoms, dim=self.axis)]


@register("Slice")
class Slice(Layer):
    num_bottoms = 1
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        p = self.param.slice_param
        self.axis = _axis_or_legacy(self, p, "slice_dim", len(bottom_shapes[0]))
        self.points = list(p.slice_point)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        dim = shape[self.axis]
        n = len(self.param.top)
        if self.points:
            if len(self.points) != n - 1:
                self.fail(f"{len(self.points)} slice_point(s) for {n} tops (need {n - 1})")
            edges = [0] + self.points + [dim]
            sizes = [b - a for a, b in zip(edges, edges[1:])]
            if any(s <= 0 for s in sizes):
                self.shape_error(f"slice_point {self.points} must be strictly increasing inside (0, {dim}) "
                                 f"for axis {self.axis} of {shape}")
        else:
            if dim % n:
                self.shape_error(f"axis {self.axis} of {shape} ({dim}) cannot be split evenly into {n} tops")
            sizes = [dim // n] * n
        self.sizes = sizes
        return [shape[:self.axis] + (s,) + shape[self.axis + 1:] for s in sizes]

    def forward(self, bottoms):
        x = bottoms[0]
        if len(self.sizes) == 1:
            return [x.view_as(x)]
        return list(torch.split(x, self.sizes, dim=self.axis))


@register("Split")
class Split(Layer):
    """One bottom copied to every top; the bottom's gradient is the sum of the tops' (autograd)."""
    num_bottoms = 1
    num_tops = (1, None)

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * len(self.param.top)

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.view_as(x) for _ in self.param.top]


@register("Flatten")
class Flatten(Layer):
    """Axes [axis, end_axis] folded into one."""
    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        p = self.param.flatten_param
        shape = tuple(bottom_shapes[0])
        a = self.canonical_axis(p.axis, len(shape))
        e = self.canonical_axis(p.end_axis, len(shape))
        if e < a:
            self.fail(f"end_axis {p.end_axis} comes before axis {p.axis} for bottom {shape}")
        return [shape[:a] + (math.prod(shape[a:e + 1]),) + shape[e + 1:]]

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.reshape([tuple(bottoms[0].shape)])[0])]


@register("Reshape")
class Reshape(Layer):
    """reshape_param.shape replaces axes [axis, axis + num_axes): 0 copies the bottom's dim, one -1 is inferred."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        dims = list(self.param.reshape_param.shape.dim)
        if dims.count(-1) > 1:
            self.fail(f"new shape {dims} contains more than one -1")
        if any(d < -1 for d in dims):
            self.fail(f"new shape {dims} has a dimension below -1")
        self.dims = dims

    def reshape(self, bottom_shapes):
        p = self.param.reshape_param
        shape = tuple(bottom_shapes[0])
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            self.fail(f"axis {p.axis} out of range for bottom {shape}", ShapeMismatchError)
        if p.num_axes < -1:
            self.fail(f"num_axes must be >= 0, or -1 for all, got {p.num_axes}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            self.fail(f"axis + num_axes = {end} is out of range for bottom {shape}", ShapeMismatchError)
        new = list(self.dims)
        for i, d in enumerate(new):
            if d == 0:
                if start + i >= n:
                    self.shape_error(f"new shape {self.dims} has a 0 at position {i} but bottom {shape} has "
                                     f"no axis {start + i} to copy")
                new[i] = shape[start + i]
        top = list(shape[:start]) + new + list(shape[end:])
        count = math.prod(shape)
        if -1 in new:
            explicit = math.prod(d for d in top if d != -1)
            if explicit == 0 or count % explicit:
                self.shape_error(f"bottom count {count} of {shape} is not divisible by the product of the "
                                 f"specified dimensions ({explicit})")
            top[start + new.index(-1)] = count // explicit
        if math.prod(top) != count:
            self.shape_error(f"output shape {tuple(top)} has {math.prod(top)} elements, bottom {shape} has {count}")
        return [tuple(top)]

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.reshape(self.reshape([tuple(x.shape)])[0])]


class _StableProd(torch.autograd.Function):
    """Eltwise PROD with stable_prod_grad: false -- Caffe's gradient top_diff * top / bottom_i."""

    @staticmethod
    def forward(ctx, *xs):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        ctx.save_for_backward(y, *xs)
        return y

    @staticmethod
    def backward(ctx, g):
        y, *xs = ctx.saved_tensors
        return tuple(g * y / x for x in xs)


@register("Eltwise")
class Eltwise(Layer):
    num_bottoms = (2, None)
    num_tops = 1

    def setup(self, bottom_shapes):
        from ..proto import caffe_pb2
        p = self.param.eltwise_param
        E = caffe_pb2.EltwiseParameter
        self.op = p.operation
        if len(p.coeff) and len(p.coeff) != len(bottom_shapes):
            self.fail(f"eltwise_param has {len(p.coeff)} coeff(s) for {len(bottom_shapes)} bottoms")
        if len(p.coeff) and self.op != E.SUM:
            self.fail("eltwise_param.coeff is only supported with operation SUM")
        self.coeff = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom_shapes)
        self.E = E

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != first:
                self.shape_error(f"bottom {i} has shape {tuple(s)}, bottom 0 has {first} (all must match)")
        return [first]

    def forward(self, bottoms):
        E = self.E
        if self.op == E.PROD:
            if not self.param.eltwise_param.stable_prod_grad:
                return [_StableProd.apply(*bottoms)]
            y = bottoms[0] * bottoms[1]
            for x in bottoms[2:]:
                y = y * x
            return [y]
        if self.op == E.SUM:
            y = None
            for c, x in zip(self.coeff, bottoms):
                t = x if c == 1 else x * c
                y = t if y is None else y + t
            return [y]
        if self.op == E.MAX:
            # Caffe: bottoms 0 and 1 -- ties go to bottom 1; later bottoms replace only when strictly
            # greater. torch.where routes the gradient to the selected bottom, which is Caffe's mask.
            a, b = bottoms[0], bottoms[1]
            y = torch.where(a > b, a, b)
            for x in bottoms[2:]:
                y = torch.where(x > y, x, y)
            return [y]
        self.fail(f"unknown eltwise operation {self.op}")


@register("ArgMax")
class ArgMax(Layer):
    """Indices (or with out_max_val, values) of the top_k largest entries. No backward.

    Without ``axis``: per item over the flattened trailing axes, top shape (N, 1 or 2, top_k) padded to the
    bottom's axis count with 1s; with out_max_val the indices come first, then the values. With ``axis``:
    the axis becomes top_k long and holds indices, or values when out_max_val is set. Ties are ordered as
    std::partial_sort with std::greater on (value, index) orders them: the larger index first.
    """
    num_bottoms = 1
    num_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.param.argmax_param
        shape = tuple(bottom_shapes[0])
        self.top_k = p.top_k
        if self.top_k < 1:
            self.fail("argmax_param.top_k must be >= 1")
        self.axis = self.canonical_axis(p.axis, len(shape)) if p.HasField("axis") else None
        avail = shape[self.axis] if self.axis is not None else math.prod(shape[1:])
        if self.top_k > avail:
            self.fail(f"top_k {self.top_k} exceeds the {avail} values it selects from in {shape}",
                      ShapeMismatchError)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if self.axis is not None:
            return [shape[:self.axis] + (self.top_k,) + shape[self.axis + 1:]]
        out = [1] * max(3, len(shape))
        out[0] = shape[0]
        out[2] = self.top_k
        if self.param.argmax_param.out_max_val:
            out[1] = 2
        return [tuple(out)]

    def _topk(self, x, dim):
        n = x.shape[dim]
        flipped = torch.flip(x, dims=[dim])
        vals, idx = torch.sort(flipped, dim=dim, descending=True, stable=True)
        k = self.top_k
        vals = vals.narrow(dim, 0, k)
        idx = (n - 1) - idx.narrow(dim, 0, k)
        return vals, idx.to(x.dtype)

    def forward(self, bottoms):
        x = bottoms[0]
        out_max = self.param.argmax_param.out_max_val
        top_shape = self.reshape([tuple(x.shape)])[0]
        if self.axis is not None:
            vals, idx = self._topk(x, self.axis)
            return [vals if out_max else idx]
        flat = x.reshape(x.shape[0], -1)
        vals, idx = self._topk(flat, 1)
        y = torch.stack([idx, vals], dim=1) if out_max else idx.unsqueeze(1)
        return [y.reshape(top_shape)]


@register("Tile")
class Tile(Layer):
    """Repeats the block of axes [axis, end) ``tiles`` times along ``axis``."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.tile_param
        if p.tiles <= 0:
            self.fail(f"tile_param.tiles must be positive, got {p.tiles}")
        self.axis = self.canonical_axis(p.axis, len(bottom_shapes[0]))
        self.tiles = p.tiles

    def reshape(self, bottom_shapes):
        shape = list(bottom_shapes[0])
        shape[self.axis] *= self.tiles
        return [tuple(shape)]

    def forward(self, bottoms):
        x = bottoms[0]
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return [x.repeat(*reps)]


@register("Reduction")
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` on, times ``coeff``; top shape = bottom[:axis]."""
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        from ..proto import caffe_pb2
        p = self.param.reduction_param
        self.R = caffe_pb2.ReductionParameter
        if p.operation not in (self.R.SUM, self.R.ASUM, self.R.SUMSQ, self.R.MEAN):
            self.fail(f"unknown reduction operation {p.operation}")
        self.axis = self.canonical_axis(p.axis, len(bottom_shapes[0])) if len(bottom_shapes[0]) else 0

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0][:self.axis])]

    def forward(self, bottoms):
        p = self.param.reduction_param
        R = self.R
        x = bottoms[0]
        lead = tuple(x.shape[:self.axis])
        flat = x.reshape(math.prod(lead), -1)
        dim = flat.shape[1]
        if p.operation == R.ASUM:
            y = flat.abs().sum(dim=1)
        elif p.operation == R.SUMSQ:
            y = (flat * flat).sum(dim=1)
        else:
            y = flat.sum(dim=1)
        coeff = p.coeff / dim if p.operation == R.MEAN else p.coeff
        if coeff != 1:
            y = y * coeff
        return [y.reshape(lead)]


@register("Embed")
class Embed(Layer):
    """A lookup table: top = W[index] (+ b), W of shape (input_dim, num_output). No gradient to the indices."""
    num_bottoms = 1
    num_tops = 1
    no_grad_bottoms = (0,)

    def setup(self, bottom_shapes):
        p = self.param.embed_param
        if p.num_output <= 0:
            self.fail("embed_param.num_output must be positive")
        if p.input_dim <= 0:
            self.fail("embed_param.input_dim must be positive")
        self.N, self.K = p.num_output, p.input_dim
        self.new_param((self.K, self.N), p.weight_filler)
        if p.bias_term:
            self.new_param((self.N,), p.bias_filler)

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.N,)]

    def forward(self, bottoms):
        x = bottoms[0]
        idx = x.long()
        if bool((idx.to(x.dtype) != x).any()):
            self.fail("input indices must be integers")
        if bool(((idx < 0) | (idx >= self.K)).any()):
            self.fail(f"input indices must lie in [0, input_dim = {self.K}); got min {int(idx.min())} "
                      f"max {int(idx.max())}")
        y = F.embedding(idx, self.params[0])
        if len(self.params) > 1:
            y = y + self.params[1]
        return [y]


@register("Silence")
class Silence(Layer):
    """Consumes its bottoms and produces nothing (their gradient is 0)."""
    num_bottoms = (1, None)
    num_tops = 0

    def reshape(self, bottom_shapes):
        return []

    def forward(self, bottoms):
        return []


@register("Filter")
class Filter(Layer):
    """Keeps the items (axis 0) of bottoms 0..n-2 whose selector (the last bottom) is non-zero.

    The top batch size depends on the selector's values: it is set at every forward. Items that were
    filtered out get a zero gradient; the selector gets none.
    """
    num_bottoms = (2, None)
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        n = len(bottom_shapes)
        if len(self.param.top) != n - 1:
            self.fail(f"needs one top per filtered bottom: {n - 1} bottoms to filter, "
                      f"{len(self.param.top)} tops")
        self.no_grad_bottoms = (n - 1,)

    def reshape(self, bottom_shapes):
        sel = tuple(bottom_shapes[-1])
        if not sel or any(d != 1 for d in sel[1:]):
            self.shape_error(f"selector {sel} must be (N) or (N, 1, ...)")
        for i, s in enumerate(bottom_shapes[:-1]):
            if not s or s[0] != sel[0]:
                self.shape_error(f"bottom {i} {tuple(s)} must have the selector's {sel[0]} items")
        return [tuple(s) for s in bottom_shapes[:-1]]

    def forward(self, bottoms):
        keep = torch.nonzero(bottoms[-1].reshape(-1) != 0).reshape(-1)
        return [x.index_select(0, keep) for x in bottoms[:-1]]


@register("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom[int(permut[i])]; gradients are scattered back (summed); none to the indices."""
    num_bottoms = 2
    num_tops = 1
    no_grad_bottoms = (1,)

    def reshape(self, bottom_shapes):
        perm = tuple(bottom_shapes[1])
        if len(perm) != 1:
            self.shape_error(f"index bottom {perm} must have exactly 1 axis")
        return [perm + tuple(bottom_shapes[0][1:])]

    def forward(self, bottoms):
        x, perm = bottoms
        idx = perm.long()
        if bool(((idx < 0) | (idx >= x.shape[0])).any()):
            self.fail(f"indices must lie in [0, {x.shape[0]}); got min {int(idx.min())} max {int(idx.max())}")
        return [x.index_select(0, idx)]


@register("Parameter")
class Parameter(Layer):
    """Exposes one learnable blob of parameter_param.shape (zero-initialised, as in Caffe) as its top."""
    num_bottoms = 0
    num_tops = 1

    def setup(self, bottom_shapes):
        self.new_param(tuple(self.param.parameter_param.shape.dim))

    def reshape(self, bottom_shapes):
        return [tuple(self.params[0].shape)]

    def forward(self, bottoms):
        p = self.params[0]
        return [p.view_as(p)]
