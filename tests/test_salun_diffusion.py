"""SalUn for diffusion (Unlearn-Saliency's saliency_unlearn) on the t2i-tiny fixture.

The vision path keeps its own tests (tests/test_salun.py); here only ``task.kind == "diffusion"``.
Erasure is measured on the conditional direction (see tests/test_esd.py for why).
"""

from __future__ import annotations

import torch

from obliviate.loop import count_steps, seeded
from obliviate.methods.salun import saliency_mask
from obliviate.registry import METHODS
from obliviate.types import Budget
from tests.test_esd import alignment, probes, rates


def run(env, max_steps=None, **params):
    model = env.fresh().train()
    with seeded(0), count_steps() as c:
        out = METHODS.build("salun", params).unlearn(
            model, env.splits.forget, env.splits.retain, task=env.task,
            budget=Budget(max_steps=max_steps),
        )  # fmt: skip
    return out, c.steps


def test_salun_diffusion_changes_only_masked_weights(t2i_tiny):
    env = t2i_tiny
    model, steps = run(env, max_steps=10, gamma=0.2)
    assert steps == 10
    with seeded(0):  # the mask is the method's first draw from the seeded RNG
        mask = saliency_mask(env.fresh(), env.splits.forget, task=env.task, gamma=0.2)
    total = sum(m.numel() for m in mask.values())
    assert abs(sum(m.sum().item() for m in mask.values()) / total - 0.2) < 1e-3
    before = dict(env.original.named_parameters())
    n_moved = 0
    for name, p in model.named_parameters():
        delta = p.detach() - before[name]
        assert torch.all(delta[mask[name] == 0] == 0), f"{name}: an unmasked weight moved"
        n_moved += int((delta != 0).sum())
    assert n_moved > 0.5 * 0.2 * total  # most salient weights did move (measured: all of them)


def test_salun_diffusion_erases_the_concept(t2i_tiny):
    env = t2i_tiny
    fx, fp, rx, rp = probes(env)
    model, steps = run(env)
    assert steps == 100
    concept = alignment(model, env.original, env.task, fx, fp)
    unrelated = alignment(model, env.original, env.task, rx, rp)
    before, after = rates(env, env.original), rates(env, model)
    # measured (seed 0, n=4): alignment concept 0.07, unrelated 0.49; concept rate 0.90 -> 0.00,
    # synonym 0.80 -> 0.05, unrelated class accuracy 0.94 -> 0.75 (colour 0.89 -> 0.99)
    assert concept < 0.3
    assert unrelated > concept + 0.2
    assert after["concept_rate"] < 0.2
    assert after["unrelated_class_acc"] > before["unrelated_class_acc"] - 0.3
