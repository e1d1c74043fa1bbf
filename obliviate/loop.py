"""Small shared functions for the loops that methods own: batching, seeding, counting, training.

Methods do not inherit from a base class; they call these. ``paired_batches`` yields exactly the
number of (forget, retain) pairs that a method's plan and the Budget allow, ``count_steps``
counts every optimizer step taken inside it (the runner wraps ``unlearn`` with it), and
``train_model`` is the one training loop used for originals, retrain oracles and shadow models.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = [
    "TrainRecipe",
    "count_steps",
    "derive_seed",
    "draw_seed",
    "epoch_batches",
    "frozen_copy",
    "make_optimizer",
    "paired_batches",
    "preserve_mode",
    "seeded",
    "train_model",
]


def derive_seed(seed: int, *tags: Any) -> int:
    """A child seed for one purpose ("split", "train", "unlearn"...), stable across runs."""
    h = hashlib.sha256(repr((int(seed), *tags)).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and random inside the block; restore the global RNG states after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with requires_grad=False: a reference no graph flows through."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@contextlib.contextmanager
def preserve_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval flag on exit (methods may switch modes inside)."""
    modes = [m.training for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes, strict=False):
            m.training = mode


class StepCounter:
    steps: int = 0


@contextlib.contextmanager
def count_steps() -> Iterator[StepCounter]:
    """Count every ``torch.optim.Optimizer.step`` taken inside the block, by any optimizer."""
    counter = StepCounter()

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        counter.steps += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def draw_seed() -> int:
    """An integer seed drawn from torch's global RNG (seeded by the runner per run)."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def _deadline(budget: Budget | None) -> float:
    if budget is None or budget.max_seconds is None:
        return math.inf
    return time.perf_counter() + budget.max_seconds


def epoch_batches(
    task: Task,
    data: Data,
    *,
    batch_size: int,
    epochs: float,
    seed: int | None = None,
    budget: Budget | None = None,
) -> Iterator[Any]:
    """Shuffled batches of ``data`` for ``epochs`` epochs (fractions allowed), clipped by budget.

    Each epoch reshuffles with a seed derived from ``seed`` and the epoch number, so the same
    seed gives the same batch order. ``seed=None`` draws one from torch's global RNG, which the
    runner seeds from the run seed: methods need no seed of their own.
    """
    if seed is None:
        seed = draw_seed()
    if len(data) == 0:
        raise ValueError("cannot iterate over an empty dataset")
    per_epoch = math.ceil(len(data) / batch_size)
    planned = max(1, round(per_epoch * epochs))
    total = budget.clip(planned) if budget is not None else planned
    deadline = _deadline(budget)
    n = 0
    for epoch in itertools.count():
        for batch in task.batches(
            data, batch_size, shuffle=True, seed=derive_seed(seed, "epoch", epoch)
        ):
            if n >= total or time.perf_counter() > deadline:
                return
            n += 1
            yield batch


def paired_batches(
    task: Task,
    forget: Data,
    retain: Data,
    *,
    batch_size: int,
    epochs: float,
    seed: int | None = None,
    budget: Budget | None = None,
    over: Literal["forget", "retain"] = "forget",
    other_batch_size: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(forget batch, retain batch) pairs; ``over`` names the set whose epochs drive the count.

    The other set is cycled (reshuffled each pass) with ``other_batch_size`` (default: the same),
    so every pair has both halves. The number of pairs is ``epochs`` x batches of the driving
    set, clipped by ``budget``.
    """
    if seed is None:
        seed = draw_seed()
    drive, other = (forget, retain) if over == "forget" else (retain, forget)
    if len(other) == 0:
        name = "retain" if over == "forget" else "forget"
        raise ValueError(f"paired_batches: the {name} set is empty")
    other_bs = other_batch_size or batch_size

    def cycle() -> Iterator[Any]:
        for k in itertools.count():
            yield from task.batches(
                other, other_bs, shuffle=True, seed=derive_seed(seed, "other", k)
            )

    others = cycle()
    for batch in epoch_batches(
        task, drive, batch_size=batch_size, epochs=epochs, seed=seed, budget=budget
    ):
        o = next(others)
        yield (batch, o) if over == "forget" else (o, batch)


def make_optimizer(
    params: Any,
    name: Literal["sgd", "adam", "adamw"],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd', 'adam' or 'adamw'")


@dataclass(frozen=True)
class TrainRecipe:
    """How originals, retrain oracles and shadow models are trained (one recipe per benchmark)."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # SGD+momentum is the vision default
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 5e-4  # L2 on every parameter
    epochs: int = 10  # passes over the training data
    batch_size: int = 128  # examples per step
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"  # lr over training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scheduler(opt: torch.optim.Optimizer, recipe: TrainRecipe, total: int) -> Any:
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=max(total, 1), pct_start=0.25
        )
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    return None


def train_model(
    model: nn.Module,
    data: Data,
    *,
    task: Task,
    recipe: TrainRecipe,
    seed: int,
    progress: bool | str = False,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``data`` with ``recipe``; deterministic given ``seed`` on CPU.

    ``on_epoch(k)`` is called after each epoch k = 1, 2, ... (e.g. to measure a learning
    curve); its time is not counted in "seconds", the model is back in train mode after it and
    the global RNG stream is as if it had not run, so the training is the same with or without.
    Returns {"seconds", "steps", "final_loss", "examples_per_s"}.
    """
    from tqdm.auto import tqdm

    opt = make_optimizer(
        model.parameters(),
        recipe.optimizer,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    per_epoch = math.ceil(len(data) / recipe.batch_size)
    total = per_epoch * recipe.epochs
    sched = _scheduler(opt, recipe, total)
    model.train()
    t0 = time.perf_counter()
    paused = 0.0  # seconds spent in on_epoch
    steps, seen, running = 0, 0, float("nan")
    desc = progress if isinstance(progress, str) else "train"
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    with seeded(derive_seed(seed, "train-init-rng")):
        for batch in epoch_batches(
            task, data, batch_size=recipe.batch_size, epochs=recipe.epochs, seed=seed
        ):
            loss = task.loss(model, batch).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at step {steps}: lower the recipe's lr "
                    f"(now {recipe.lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            steps += 1
            seen += len(next(iter(batch.values()))) if isinstance(batch, dict) else 0
            running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            if steps % 50 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
            if on_epoch is not None and steps % per_epoch == 0:
                t1 = time.perf_counter()
                with torch.random.fork_rng(devices=[]):  # leave the training RNG stream as is
                    on_epoch(steps // per_epoch)
                model.train()
                paused += time.perf_counter() - t1
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0 - paused
    return {
        "seconds": seconds,
        "steps": steps,
        "final_loss": running,
        "examples_per_s": seen / seconds if seconds > 0 else float("nan"),
    }
