"""random-label: relabelling, the joined data, and behaviour on the tiny digits fixture.

The default plan (0.55 epochs) is 6 steps on tiny, which at lr 3e-3 leaves 3s at 75-82%
accuracy, so the behavioural tests run 3 epochs. Margins measured on seeds 0-3 (tiny, class 3;
original forget/retain acc 1.00/0.996, oracle 0.00/0.995): forget acc 0.00, forget-class test
acc 0.00, retain acc >= 0.969, retain-class test acc >= 0.943 (original 0.963). Random 10%:
retain acc >= 0.983, test acc >= 0.958 (original 0.96).
"""

from __future__ import annotations

import pytest
import torch

from obliviate.loop import seeded
from obliviate.methods.random_label import random_labels, relabelled_union
from obliviate.registry import METHODS
from obliviate.types import Budget


def _unlearn(env, seed, **params):
    with seeded(seed):
        return METHODS.build("random-label", params).unlearn(
            env.fresh(), env.splits.forget, env.splits.retain, task=env.task, budget=Budget()
        )


def _acc(env, model, data):
    return env.task.evaluate(model, data)["accuracy"]


def test_random_labels_are_wrong_and_uniform():
    y = torch.arange(20000) % 10
    lab = random_labels(y, 10, generator=torch.Generator().manual_seed(0))
    assert (lab != y).all()
    # each wrong class ~1/9 of the draws (binomial sd ~0.002 on 20000)
    for c in range(10):
        share = ((lab == c) & (y != c)).sum().item() / (y != c).sum().item()
        assert abs(share - 1 / 9) < 0.01, (c, share)
    again = random_labels(y, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lab, again)
    anyl = random_labels(y, 10, generator=torch.Generator().manual_seed(0), exclude_true=False)
    assert abs((anyl == y).double().mean().item() - 0.1) < 0.01


def test_random_labels_reject_one_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        random_labels(torch.zeros(3, dtype=torch.long), 1, generator=torch.Generator())


def test_relabelled_union_keeps_retain_and_indices(tiny):
    f, r = tiny.splits.forget, tiny.splits.retain
    lab = (f.y + 1) % 10
    u = relabelled_union(f, r, lab)
    assert len(u) == len(f) + len(r)
    assert torch.equal(u.y[: len(f)], lab) and torch.equal(u.y[len(f) :], r.y)
    assert torch.equal(u.idx, torch.cat([f.idx, r.idx]))
    assert torch.equal(u.x[len(f) :], r.x)
    with pytest.raises(ValueError, match="labels"):
        relabelled_union(f, r, lab[:-1])


def test_forgets_a_class_and_keeps_the_rest(tiny):
    orig_rt = _acc(tiny, tiny.original, tiny.splits.extra["retain_test"])
    for seed in (0, 1):
        model = _unlearn(tiny, seed, epochs=3.0)
        assert _acc(tiny, model, tiny.splits.forget) <= 0.05  # oracle: 0.00, original: 1.00
        assert _acc(tiny, model, tiny.splits.extra["forget_test"]) <= 0.05
        assert _acc(tiny, model, tiny.splits.retain) >= 0.95  # original 0.996
        assert _acc(tiny, model, tiny.splits.extra["retain_test"]) >= orig_rt - 0.04


def test_random_forgetting_keeps_the_model_usable(tiny_random):
    model = _unlearn(tiny_random, 0, epochs=3.0)
    assert _acc(tiny_random, model, tiny_random.splits.retain) >= 0.97
    assert _acc(tiny_random, model, tiny_random.splits.test) >= 0.94  # original 0.96
