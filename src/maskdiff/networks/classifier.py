"""A small convolutional image classifier, whose penultimate features the FID of fid.py is computed on.

Architecture only: two 3x3 convolution blocks (the second one pooled to 4x4), then a hidden layer
of ``feature_dim`` units (the features) and the class logits.
"""
from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Images (B, 1, H, W) with values in [0, 1] -> logits (B, classes); ``features`` gives (B, feature_dim)."""

    def __init__(self, classes: int, channels: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * channels * 16, feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))
