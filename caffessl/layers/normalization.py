"""Normalization layers: BatchNorm, Scale, Bias, MVN, LRN lives in vision."""
