"""Data-producing layers. Input: tops whose content the user (or a feeder) writes into the blobs."""
from __future__ import annotations

from .base import Layer, register


@register("Input")
class Input(Layer):
    num_bottoms = 0
    num_tops = (1, None)
    feeds_from_blobs = True  # the Net reads these tops from the blobs' storage
    has_backward = False

    def reshape(self, bottom_shapes):
        shapes = self.param.input_param.shape
        n = len(self.param.top)
        if len(shapes) not in (0, 1, n):
            self.fail(f"input_param must give 0, 1 or {n} shapes, got {len(shapes)}")
        if not shapes:
            return [()] * n
        if len(shapes) == 1:
            return [tuple(shapes[0].dim)] * n
        return [tuple(s.dim) for s in shapes]

    def forward(self, bottoms):
        return []
