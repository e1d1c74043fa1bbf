"""Classifier benchmarks on real images: Fashion-MNIST (full 60k/10k) and sklearn digits.

Every benchmark trains its original on the whole training set and its retrain oracle on the
retain set with the same recipe and seed, both cached by (benchmark identity, split, seed).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from obliviate.loop import TrainRecipe, train_model
from obliviate.registry import BENCHMARKS
from obliviate.types import Budget, Splits
from obliviate.vision.data import (
    TensorData,
    VisionDataset,
    load_dataset,
    make_splits,
    parse_forget_rule,
)
from obliviate.vision.models import build_model
from obliviate.vision.task import ClassifierTask

__all__ = ["SubsetBenchmark", "VisionBenchmark"]


@functools.lru_cache(maxsize=4)
def _load(dataset: str, data_dir: str | None) -> VisionDataset:
    return load_dataset(dataset, data_dir)


@functools.lru_cache(maxsize=4)
def _subset(ds: VisionDataset, n_train: int, seed: int) -> VisionDataset:
    if n_train > len(ds.train):
        raise ValueError(
            f"n_train={n_train} exceeds the {len(ds.train)} training examples of {ds.name}; "
            f"use at most {len(ds.train)}."
        )
    keep = np.sort(np.random.default_rng(seed).choice(len(ds.train), n_train, replace=False))
    return VisionDataset(
        f"{ds.name}-{n_train}", ds.train.subset(keep), ds.test, ds.classes, ds.source
    )


@dataclass(frozen=True)
class VisionBenchmark:
    """An image-classification unlearning benchmark."""

    name: str  # registry key
    dataset: str = "fashion-mnist"  # a DATASETS key
    model: str = "cnn"  # a MODELS key
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"width": 32}
    recipe: TrainRecipe = TrainRecipe()  # how the original and the oracle are trained
    forget: str = "class:Shirt"  # the default deletion request
    audits: tuple[str, ...] = ("accuracy", "mia-efficacy")  # audits run by default
    max_steps: int | None = None  # the unlearning budget in optimizer steps (None: method's plan)
    description: str = ""  # one line for `obliviate list`
    kind: str = "vision"  # the Task kind

    def load(self, data_dir: str | None = None) -> VisionDataset:
        return _load(self.dataset, str(data_dir) if data_dir else None)

    def task(self, ds: VisionDataset) -> ClassifierTask:
        return ClassifierTask(num_classes=ds.num_classes)

    def make_model(self, ds: VisionDataset) -> nn.Module:
        return build_model(
            self.model, in_shape=ds.in_shape, num_classes=ds.num_classes, options=self.model_options
        )

    def splits(self, ds: VisionDataset, forget: str, seed: int) -> Splits:
        return make_splits(ds, forget, seed)

    def resolve_forget(self, ds: VisionDataset, forget: str | None) -> str:
        """The canonical text of a deletion request ("class:6" -> "class:Shirt")."""
        return parse_forget_rule(forget or self.forget, ds.classes).describe(ds.classes)

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        """What determines a trained model besides its data and seed (the cache key's core)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "model_options": dict(self.model_options),
            "recipe": asdict(self.recipe),
        }

    def all_train_indices(self, ds: VisionDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: VisionDataset, idx: np.ndarray) -> TensorData:
        return ds.train.subset(idx)

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        *,
        task: ClassifierTask,
        seed: int,
        progress: bool | str,
    ) -> dict[str, float]:
        return train_model(model, data, task=task, recipe=self.recipe, seed=seed, progress=progress)


@dataclass(frozen=True)
class SubsetBenchmark(VisionBenchmark):
    """A vision benchmark on a seeded random subset of its training set (test set unchanged).

    The shadow-model audits (LiRA, U-LiRA, RMIA, Apollo, epsilon) train tens of models per seed
    with the benchmark's recipe; on a 12k subset each takes about 6 s instead of 50 s on two
    CPU cores, which is what makes every method under every audit affordable here.
    """

    n_train: int = 12000  # training examples kept
    subset_seed: int = 0  # which ones

    def load(self, data_dir: str | None = None) -> VisionDataset:
        return _subset(super().load(data_dir), self.n_train, self.subset_seed)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "n_train": self.n_train, "subset_seed": self.subset_seed}


_FMNIST_RECIPE = TrainRecipe(lr=0.05, epochs=10, batch_size=128)

BENCHMARKS.register("tiny")(
    VisionBenchmark(
        "tiny",
        dataset="digits",
        recipe=TrainRecipe(lr=0.05, epochs=15, batch_size=64),
        forget="class:3",
        description="sklearn's real 8x8 digits, stride CNN, seconds end to end (tests, CI)",
    )
)
BENCHMARKS.register("fmnist-demo")(
    VisionBenchmark(
        "fmnist-demo",
        recipe=TrainRecipe(lr=0.05, epochs=3, batch_size=128),
        description="Fashion-MNIST, forget the class Shirt, 3-epoch recipe: the demo (~1 min)",
    )
)
BENCHMARKS.register("fmnist-class")(
    VisionBenchmark(
        "fmnist-class",
        recipe=_FMNIST_RECIPE,
        description="Fashion-MNIST, forget the class Shirt (neighbours T-shirt, Pullover, Coat)",
    )
)
BENCHMARKS.register("fmnist-random10")(
    VisionBenchmark(
        "fmnist-random10",
        recipe=_FMNIST_RECIPE,
        forget="random:10%",
        description="Fashion-MNIST, forget 10% of the training set drawn at random",
    )
)
BENCHMARKS.register("fmnist12k-class")(
    SubsetBenchmark(
        "fmnist12k-class",
        recipe=_FMNIST_RECIPE,
        description="Fashion-MNIST, a seeded random 12k of the training set, forget the class "
        "Shirt (the shadow-model audits' scale)",
    )
)
BENCHMARKS.register("fmnist12k-random10")(
    SubsetBenchmark(
        "fmnist12k-random10",
        recipe=_FMNIST_RECIPE,
        forget="random:10%",
        description="Fashion-MNIST, a seeded random 12k of the training set, forget 10% at random",
    )
)
BENCHMARKS.register("fmnist-subclass")(
    VisionBenchmark(
        "fmnist-subclass",
        recipe=_FMNIST_RECIPE,
        forget="subclass:Shirt:bright",
        description="Fashion-MNIST, forget the brighter half of the class Shirt",
    )
)
