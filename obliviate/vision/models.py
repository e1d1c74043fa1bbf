"""Classifier architectures (registry ``MODELS``): a fast stride-convolution CNN (default), an
MLP, and a CIFAR-style ResNet-18 of configurable width.

Why stride-2 convolutions: on this 2-core CPU a stride-2 convolution costs a fraction of a
convolution followed by max-pooling, for the same downsampling (see BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from obliviate.registry import MODELS

__all__ = ["MLP", "ResNet18", "StrideCNN", "build_model"]


@MODELS.register("cnn")
class StrideCNN(nn.Module):
    """Three stride-2 3x3 convolutions (width, 2w, 4w) with ReLU, then a linear head."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.head = nn.Linear(n_feat, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D): what representation-level methods and audits read."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("mlp")
class MLP(nn.Module):
    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int, hidden: tuple[int, ...] = (256, 256)
    ) -> None:
        super().__init__()
        dims = [int(torch.tensor(in_shape).prod())] + list(hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet18")
class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool); ``width`` 64 is the standard 11 M model."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        c = in_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def build_model(
    name: str,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    cls = MODELS.get(name)
    return cls(in_shape=tuple(in_shape), num_classes=num_classes, **dict(options or {}))
