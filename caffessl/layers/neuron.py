"""Neuron layers: element-wise, one bottom, one top of the same shape (may be computed in place)."""
from __future__ import annotations

import torch

from .base import NeuronLayer, register


@register("ReLU")
class ReLU(NeuronLayer):
    def forward(self, bottoms):
        x = bottoms[0]
        slope = self.param.relu_param.negative_slope
        if slope == 0:
            return [torch.relu(x)]
        return [torch.where(x > 0, x, x * slope)]
