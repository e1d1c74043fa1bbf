"""boundary-shrink on the tiny digits fixture.

The 8x8 digits need a larger FGSM step than Fashion-MNIST: at bound 0.1 of the input range the
step changes 41% of the forget labels, at 0.3 all of them (measured). The default lr 1e-5 moves
the tiny model little in its 20 steps, so the behavioural tests use bound 0.3 and lr 3e-4.
Measured (tiny, class 3, seeds 0-3): forget acc 0.00, forget-class test acc 0.00, retain acc
>= 0.969 (original 0.996). The neighbours FGSM finds for digit 3 are mostly 5, 8 and 9; the
retrained oracle sends 3s to 5, 8, 2 and 9.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.loop import frozen_copy, seeded
from obliviate.methods.boundary_shrink import nearest_wrong_labels
from obliviate.registry import METHODS
from obliviate.types import Budget

TINY = {"bound": 0.3, "lr": 3e-4}


def _unlearn(env, name="boundary-shrink", seed=0, retain=None, **params):
    with seeded(seed):
        return METHODS.build(name, params).unlearn(
            env.fresh(), env.splits.forget, env.splits.retain if retain is None else retain,
            task=env.task, budget=Budget(),
        )  # fmt: skip


def _acc(env, model, data):
    return env.task.evaluate(model, data)["accuracy"]


def test_fgsm_finds_wrong_labels_more_often_with_a_larger_step(tiny):
    ref = frozen_copy(tiny.original)
    f = tiny.splits.forget
    batch = {"x": f.x, "y": f.y, "idx": f.idx}
    span = float(f.x.max() - f.x.min())
    flips = []
    for bound in (0.05, 0.3):
        y_nbi = nearest_wrong_labels(ref, batch, task=tiny.task, eps=bound * span)
        flips.append((y_nbi != f.y).double().mean().item())
    assert flips[0] < 0.5 and flips[1] > 0.95, flips  # measured 0.18 and 1.00


def test_forgets_a_class_toward_its_neighbours(tiny):
    model = _unlearn(tiny, **TINY)
    assert _acc(tiny, model, tiny.splits.forget) <= 0.05
    assert _acc(tiny, model, tiny.splits.extra["forget_test"]) <= 0.05
    assert _acc(tiny, model, tiny.splits.retain) >= 0.95
    # the forget inputs land on the classes FGSM found (measured 72-74% of them; random-label
    # lands 45-67% there, since the nearest classes are also where a retrained model sends them)
    f = tiny.splits.forget
    span = float(f.x.max() - f.x.min())
    y_nbi = nearest_wrong_labels(
        frozen_copy(tiny.original), {"x": f.x, "y": f.y, "idx": f.idx}, task=tiny.task,
        eps=TINY["bound"] * span,
    )  # fmt: skip
    pred = tiny.task.predict(model, f).argmax(1)
    assert (pred == y_nbi.numpy()).mean() >= 0.6


def test_uses_only_the_forget_set(tiny):
    a = _unlearn(tiny, **TINY)
    b = _unlearn(tiny, retain=tiny.splits.retain.subset(np.arange(5)), **TINY)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_random_forgetting_keeps_the_model_usable(tiny_random):
    model = _unlearn(tiny_random, **TINY)
    assert _acc(tiny_random, model, tiny_random.splits.retain) >= 0.94  # measured >= 0.965
    assert _acc(tiny_random, model, tiny_random.splits.test) >= 0.92  # measured >= 0.942


def test_rejects_bad_bounds():
    with pytest.raises(ValueError, match="bound"):
        METHODS.build("boundary-shrink", {"bound": 0.0})
