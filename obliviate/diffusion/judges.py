"""Judges for generated images: a concept detector, a colour classifier, a Fréchet distance.

The detector is a small CNN trained on the *real* captioned images to tell the classes apart
(the NudeNet analogue: it knows the concept, whatever the generator has forgotten). The colour
classifier is a second CNN on the tint (prompt preservation: the other attributes survive). The
Fréchet distance between Gaussians fitted to the detector's penultimate features of two image
sets is the FID analogue (Heusel et al. 2017, arXiv:1706.08500):
FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).
Both judges are trained once per dataset and cached like every model (``ModelCache``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.diffusion.data import T2IData, T2IDataset
from obliviate.loop import derive_seed, seeded

log = logging.getLogger(__name__)

__all__ = ["JudgeCNN", "Judges", "frechet_distance", "load_judges", "train_judge"]


class JudgeCNN(nn.Module):
    """Three conv stages (the last two stride 2), global average pooling, a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(2 * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # (B, 2w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def train_judge(
    model: JudgeCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 2e-3,
    batch_size: int = 256,
) -> dict[str, float]:
    """Adam on cross-entropy with light augmentation (pixel noise), seeded."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    model.train()
    loss = torch.tensor(float("nan"))
    with seeded(seed):
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                b = order[i : i + batch_size]
                # noise makes the judge robust to the residual noise of few-step samplers
                xb = x[b] + 0.1 * torch.rand(()) * torch.randn_like(x[b])
                loss = F.cross_entropy(model(xb), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    return {"final_loss": float(loss.item()), "steps": steps}


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]):
    was = model.training
    model.eval()
    out = torch.cat([fn(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    model.train(was)
    return out.double().numpy()


@dataclass
class Judges:
    """The detector (classes) and the colour classifier of one dataset."""

    detector: JudgeCNN
    colour: JudgeCNN
    info: Mapping[str, Any]

    def class_probs(self, x: torch.Tensor) -> np.ndarray:
        """(N, classes) softmax of the detector on images in [-1, 1]."""
        return _predict(self.detector, x, lambda b: self.detector(b).softmax(1))

    def colour_probs(self, x: torch.Tensor) -> np.ndarray:
        return _predict(self.colour, x, lambda b: self.colour(b).softmax(1))

    def features(self, x: torch.Tensor) -> np.ndarray:
        """(N, D) detector penultimate features (for the Fréchet distance)."""
        return _predict(self.detector, x, self.detector.embed)

    def accuracy(self, data: T2IData) -> dict[str, float]:
        return {
            "class_acc": float((self.class_probs(data.x0).argmax(1) == data.label.numpy()).mean()),
            "colour_acc": float(
                (self.colour_probs(data.x0).argmax(1) == data.colour.numpy()).mean()
            ),
        }


def load_judges(
    ds: T2IDataset,
    *,
    cache: Any,
    identity: Mapping[str, Any],
    epochs: int = 6,
    width: int = 32,
    seed: int = 0,
) -> Judges:
    """The dataset's judges from ``cache`` (a ``store.ModelCache``), trained on first use.
    ``identity`` names the dataset (it keys the cache with the judge recipe)."""
    c = ds.image_shape[0]
    out = {}
    for what, n_out, target in (
        ("detector", len(ds.classes), ds.train.label),
        ("colour", len(ds.colours), ds.train.colour),
    ):
        request = {"data": dict(identity), "judge": what, "epochs": epochs, "width": width,
                   "seed": seed}  # fmt: skip

        def make(n_out: int = n_out, what: str = what) -> JudgeCNN:
            with seeded(derive_seed(seed, "judge-init", what)):
                return JudgeCNN(c, n_out, width)

        def train(
            model: nn.Module, target: torch.Tensor = target, what: str = what
        ) -> dict[str, float]:
            log.info("training the %s judge on %d real images", what, len(ds.train))
            info = train_judge(
                model, ds.train.x0, target, epochs=epochs, seed=derive_seed(seed, "judge", what)
            )
            return info

        out[what] = cache.get_or_train("judge", request, make, train)
    det, col = out["detector"][0], out["colour"][0]
    judges = Judges(det, col, {"detector": out["detector"][1], "colour": out["colour"][1]})
    return judges


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D)."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays with one D, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as pytorch-fid does
        eps = 1e-6 * np.eye(a.shape[1])
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))
