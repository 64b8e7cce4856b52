"""pycaffe's ``caffe.Classifier``: a TEST net plus a Transformer, predicting class scores for HxWxC images."""
from __future__ import annotations

import numpy as np
import torch

from .errors import ShapeMismatchError
from .io.transformer import Transformer, oversample, resize_image
from .net import TEST, Net


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None)`` as in pycaffe; ``strict=True`` makes the weights file match the net exactly."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, strict: bool = False, **net_kwargs):
        super().__init__(model_file, TEST, **net_kwargs)
        if pretrained_file:
            for w in str(pretrained_file).split(","):
                self.copy_from(w, strict=strict)
        in_ = self.inputs[0]
        self.transformer = Transformer({in_: self.blobs[in_].data.shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = np.asarray(image_dims)
        if np.any(self.image_dims < self.crop_dims):
            raise ShapeMismatchError(f"Classifier: image_dims {tuple(self.image_dims)} are smaller than the "
                                     f"net's input {tuple(self.crop_dims)}")

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """Class scores (N, classes) for a list of HxWxK images: resized to image_dims, then the centre crop
        or (``oversample``) the mean over 4 corner + centre crops and their mirrors, as pycaffe."""
        k = inputs[0].shape[2]
        batch = np.zeros((len(inputs), int(self.image_dims[0]), int(self.image_dims[1]), k), dtype=np.float32)
        for i, im in enumerate(inputs):
            batch[i] = resize_image(im, self.image_dims)
        if oversample:
            batch = _oversample(batch, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = (np.tile(center, 2) + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])).astype(int)
            batch = batch[:, crop[0]:crop[2], crop[1]:crop[3], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, im) for im in batch])
        predictions = self.forward_batches(caffe_in)
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions

    def forward_batches(self, caffe_in, max_batch: int = 64) -> np.ndarray:
        """pycaffe's forward_all for the first input: the first output for every row, in batches."""
        in_, out = self.inputs[0], self.outputs[0]
        step = max(self.blobs[in_].shape[0], max_batch)
        res = []
        for s in range(0, len(caffe_in), step):
            chunk = caffe_in[s:s + step]
            if self.blobs[in_].shape != chunk.shape:
                self.blobs[in_].reshape(*chunk.shape)
                self.reshape()
            with torch.no_grad():  # classification never back-propagates: no autograd graph
                res.append(self.forward(**{in_: chunk})[out].copy())
        return np.concatenate(res)


_oversample = oversample
