"""RL: Random Labels (Golatkar et al. 2020, "Eternal Sunshine of the Spotless Net",
arXiv:1911.04933; Hayase et al. 2020, "Selective Forgetting of Deep Networks at a Finer Level than
Samples"), in the form used as a baseline by l1-sparse (Jia et al. 2023, arXiv:2304.04934) and
SalUn (Fan et al. 2024, arXiv:2310.12508).

Every forget example gets a random wrong label; the model is then fine-tuned on the relabelled
D_f together with D_r, so the forget inputs lose their learned class while the retain set holds
the rest of the function in place. Notation: D_f forget set, D_r retain set, y' the random label.

The research notes give the update ("relabel D_f with random labels != y, train on the relabelled
D_f ∪ D_r") and Apollo's lr 3e-3 for 10 epochs. The rest are our choices, each a hyperparameter:
- y' is drawn once per forget example, uniformly among the C-1 wrong classes; ``exclude_true=False``
  draws among all C classes, so about 1/C of the forget set keeps its label.
- D_f' and D_r are shuffled together into one set: an epoch is one pass over D_f' ∪ D_r, and each
  batch mixes the two in proportion to their sizes.
- SGD with momentum 0.9 (Nesterov, as ``make_optimizer`` builds it) and weight decay 5e-4 at a
  constant lr, the optimizer of the vision recipes here; batch 128, the benchmarks' batch.

Scale-down: 10 epochs against the papers' 182-epoch retrain is 5.5% of its cost; our benchmarks
retrain in 10 epochs, so the default is 0.55 epochs of D_f' ∪ D_r, the same fraction, at Apollo's
lr. On fmnist-class (seed 0) this brings the forgotten class to 0.1% accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import draw_seed, epoch_batches, make_optimizer, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["RandomLabel", "random_labels", "relabelled_union", "train_random_label"]


def random_labels(
    y: torch.Tensor, num_classes: int, *, generator: torch.Generator, exclude_true: bool = True
) -> torch.Tensor:
    """A random label per example, (N,) long; with ``exclude_true`` never the true one."""
    if num_classes < 2:
        raise ValueError(f"random relabelling needs at least 2 classes, got {num_classes}")
    if exclude_true:
        # y + k mod C with k uniform in 1..C-1 is uniform over the C-1 wrong classes
        shift = torch.randint(1, num_classes, y.shape, generator=generator)
        return (y + shift) % num_classes
    return torch.randint(0, num_classes, y.shape, generator=generator)


def relabelled_union(forget: Data, retain: Data, labels: torch.Tensor) -> Data:
    """One Data holding D_f with ``labels`` in place of its own, then D_r (``idx`` kept)."""
    for name, d in (("forget", forget), ("retain", retain)):
        if not all(hasattr(d, a) for a in ("x", "y", "idx")):
            raise TypeError(
                f"random-label relabels classifier data with .x, .y and .idx; the {name} set is a "
                f"{type(d).__name__}. Use it on a vision benchmark."
            )
    if labels.shape != forget.y.shape:
        raise ValueError(f"got {labels.shape[0]} labels for {len(forget)} forget examples")
    # a frozen dataclass: replace() builds the same Data type without importing the vision package
    return replace(
        retain,
        x=torch.cat([forget.x, retain.x]),
        y=torch.cat([labels.to(retain.y.dtype), retain.y]),
        idx=torch.cat([forget.idx, retain.idx]),
    )


def num_classes_of(task: Task) -> int:
    n = getattr(task, "num_classes", None)
    if n is None:
        raise TypeError(
            f"task kind {task.kind!r} has no num_classes; label-based methods are for classifiers"
        )
    return int(n)


def train_random_label(
    model: nn.Module,
    forget: Data,
    retain: Data,
    *,
    task: Task,
    budget: Budget,
    lr: float,
    epochs: float,
    batch_size: int,
    optimizer: Literal["sgd", "adam", "adamw"],
    weight_decay: float,
    exclude_true: bool,
    grad_mask: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Fine-tune on D_f (randomly relabelled) ∪ D_r; ``grad_mask`` (name -> 0/1 tensor) zeroes
    the gradient of the weights it excludes, as SalUn does (weight decay is not masked)."""
    g = torch.Generator().manual_seed(draw_seed())
    labels = random_labels(
        forget.y, num_classes_of(task), generator=g, exclude_true=exclude_true
    )  # fmt: skip
    data = relabelled_union(forget, retain, labels)
    params = dict(model.named_parameters())
    if grad_mask is not None and (missing := set(grad_mask) - set(params)):
        raise ValueError(f"grad_mask names parameters the model lacks: {sorted(missing)[:3]}")
    opt = make_optimizer(model.parameters(), optimizer, lr=lr, weight_decay=weight_decay)
    with preserve_mode(model):
        model.train()
        for batch in epoch_batches(
            task, data, batch_size=batch_size, epochs=epochs, budget=budget
        ):  # fmt: skip
            loss = task.loss(model, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_mask is not None:
                for name, m in grad_mask.items():
                    if params[name].grad is not None:
                        params[name].grad.mul_(m)
            opt.step()
    return model


@METHODS.register("random-label")
@dataclass(frozen=True)
class RandomLabel:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    lr: float = 3e-3  # SGD learning rate (Apollo's; SalUn's README uses 0.013 with its mask)
    epochs: float = 0.55  # passes over D_f' ∪ D_r (10 of a 182-epoch retrain, rescaled)
    batch_size: int = 128  # examples per step, forget and retain mixed
    weight_decay: float = 5e-4  # L2 on every parameter
    exclude_true: bool = True  # draw y' among the wrong classes only (False: among all C)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        return train_random_label(
            model, forget, retain, task=task, budget=budget, lr=self.lr, epochs=self.epochs,
            batch_size=self.batch_size, optimizer=self.optimizer,
            weight_decay=self.weight_decay, exclude_true=self.exclude_true,
        )  # fmt: skip
