"""The evaluator's network: a small CNN classifier of 28x28 images whose penultimate layer is the
feature space of FID and precision/recall (Inception features mean little on 28x28 digits)."""

from __future__ import annotations

from torch import Tensor, nn


class Classifier(nn.Module):
    """uint8-range images scaled to [-1, 1] (B, 1, 28, 28) -> (features (B, F), logits (B, classes))."""

    def __init__(self, width: int = 32, features: int = 128, classes: int = 10, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * 7 * 7, features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return features, self.head(features)
