"""Bad Teacher ("blindspot" unlearning; Chundawat, Tarun, Mandal and Kankanhalli, AAAI 2023, "Can
Bad Teaching Induce Forgetting? Unlearning in Deep Networks using an Incompetent Teacher",
arXiv:2205.08096).

A student, initialised from the original model, distils two teachers at once: the competent
teacher (the frozen original) on retain examples, and an incompetent teacher (the same
architecture, randomly initialised) on forget examples. The student keeps what it knew about
D_r and learns to answer on D_f like a model that never learned anything.

Notation (the code's ``UnlearnerLoss``): for an example with forget label u (1 on D_f, 0 on D_r),
the target is p_T = u * p_bad + (1 - u) * p_good at temperature ``temperature``, and the loss is
KL(p_T || p_S) (``F.kl_div(log p_S, p_T)``), averaged over the batch. The code's
``reduction="mean"`` also divides by the number of classes, a constant factor that Adam ignores;
here the KL is summed over classes, as ``task.divergence``.

Defaults follow the authors' code (vikram2000b/bad-teaching-unlearning, as called by the SSD
repository's ``blindspot``): Adam lr 1e-4, 1 epoch over D_f plus a random 30% of D_r, batch 256,
temperature 1. The incompetent teacher is the student's own architecture with every
``reset_parameters()`` re-run, so it is initialised like a fresh model (seeded by the run).
Apollo (LiouTang/Unlearn-Apollo-Attack) uses SGD lr 0.02 for 10 epochs over all of D_r instead:
``optimizer="sgd", lr=0.02, epochs=10, retain_fraction=1``.

Batches: the code shuffles the union of D_f and the retain subset. Here each batch of
``batch_size`` holds forget and retain examples in their proportion in that union (both sets are
reshuffled every pass), and the loss is the mean over all of them, which is the same objective
without building a union dataset. Scale-down: none is needed; the default visits
|D_f| + 0.3 |D_r| examples once (about 4% of a 10-epoch Fashion-MNIST retrain, plus two teacher
forward passes).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from obliviate.loop import draw_seed, frozen_copy, make_optimizer, paired_batches, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)


def incompetent_copy(model: nn.Module) -> nn.Module:
    """The same architecture, randomly re-initialised (torch's global RNG), frozen, eval mode."""
    bad = copy.deepcopy(model)
    n_reset = 0
    for m in bad.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
            n_reset += 1
    if n_reset == 0:
        raise TypeError(
            f"{type(model).__name__} has no submodule with reset_parameters(): the incompetent "
            f"teacher cannot be re-initialised. Build models from standard torch layers."
        )
    return frozen_copy(bad)


@METHODS.register("bad-teacher")
@dataclass(frozen=True)
class BadTeacher:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    lr: float = 1e-4  # learning rate (authors' code: Adam 1e-4; Apollo: SGD 0.02)
    epochs: float = 1.0  # passes over D_f + the retain subset (authors: 1; Apollo: 10)
    retain_fraction: float = 0.3  # share of D_r drawn once for distillation (authors: 30%)
    batch_size: int = 256  # examples per step, forget and retain together (authors: 256)
    temperature: float = 1.0  # KL temperature of both teachers (authors: 1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"  # authors: Adam; Apollo: SGD
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 0.0  # authors: 0; Apollo: 5e-4

    def __post_init__(self) -> None:
        if not 0 < self.retain_fraction <= 1:
            raise ValueError(f"retain_fraction must be in (0, 1], got {self.retain_fraction}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (forget + retain), got {self.batch_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        if len(forget) == 0 or len(retain) == 0:
            raise ValueError(
                f"Bad Teacher needs non-empty forget and retain sets, got {len(forget)} and "
                f"{len(retain)}"
            )
        good = frozen_copy(model)  # the competent teacher: the original model
        bad = incompetent_copy(model)  # the incompetent teacher: a random init
        # 1. The retain subset, drawn once (the code's random.sample of 30% of D_r).
        n_sub = max(1, round(self.retain_fraction * len(retain)))
        keep = torch.randperm(len(retain))[:n_sub].numpy()
        retain_sub = retain.subset(np.sort(keep)) if n_sub < len(retain) else retain
        # 2. Split each batch in the union's proportions; forget drives the epoch count.
        share = len(forget) / (len(forget) + len(retain_sub))
        bs_f = min(self.batch_size - 1, max(1, round(self.batch_size * share)))
        bs_r = self.batch_size - bs_f
        epochs = self.epochs * (len(forget) + len(retain_sub)) / self.batch_size
        epochs /= math.ceil(len(forget) / bs_f)  # in forget-epochs, so steps = union batches
        opt = make_optimizer(
            model.parameters(), self.optimizer, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay,
        )  # fmt: skip
        with preserve_mode(model):
            model.train()
            for f, r in paired_batches(
                task, forget, retain_sub, batch_size=bs_f, other_batch_size=bs_r,
                epochs=epochs, seed=draw_seed(), budget=budget,
            ):  # fmt: skip
                # 3. KL to the incompetent teacher on D_f, to the competent one on D_r.
                kl_f = task.divergence(model, bad, f, temperature=self.temperature)
                kl_r = task.divergence(model, good, r, temperature=self.temperature)
                loss = torch.cat([kl_f, kl_r]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return model
