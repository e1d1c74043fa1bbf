"""prompt-attack (UnlearnDiffAtk) on the t2i-tiny fixture (concept "three", synonym "trio").

The attacked model is a weakly erased one: ESD-x for 50 iterations (seeded), which removes the
word ("a photo of a three" concept rate 0.075, original 0.875) but leaves the synonym half open
("trio" 0.475): an attacker has a route to find.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obliviate.audits.prompt_attack import (
    UnlearnDiffAtk,
    attack_prompts,
    denoising_loss,
    fixed_draws,
    sample_contexts,
)
from obliviate.loop import frozen_copy, seeded
from obliviate.registry import AUDITS, METHODS
from obliviate.types import Budget


@pytest.fixture(scope="module")
def weak(t2i_tiny):
    env = t2i_tiny
    with seeded(0):
        return METHODS.build("esd", {"iterations": 50}).unlearn(
            env.fresh().train(), env.splits.forget, env.splits.retain, task=env.task,
            budget=Budget(),
        )  # fmt: skip


def test_sample_contexts_is_task_sample_for_encoded_prompts(t2i_tiny):
    env, m = t2i_tiny, t2i_tiny.original
    prompts = ["a photo of a trio", "a red two"]
    with torch.no_grad():
        cond = env.task.encode(m, prompts)
        word = env.task.encode(m, ["three"])[0]
    for neg, saf in (("three", None), (None, "three")):
        want = env.task.sample(m, prompts, n=3, negative=neg, safety=saf, seed=5)
        got = sample_contexts(
            env.task, m, cond, n=3, steps=20, guidance=3.0, seed=5,
            negative=word if neg else None, safety=word if saf else None,
        )  # fmt: skip
        assert torch.allclose(want, got, atol=1e-5)  # same noise, same guidance


def _search(env, model, mode, steps, seed=0):
    atk = UnlearnDiffAtk(mode=mode, steps=steps, lr=0.05)
    prompts = attack_prompts(env.ds, env.ds.concept("three"), 1, atk.n_tokens)
    x = env.task.sample(env.original, prompts, n=atk.n_targets, seed=3)
    targets = x.view(1, atk.n_targets, *x.shape[1:])
    return atk.search(frozen_copy(model), env.task, prompts, targets, seed)


def test_discrete_search_lowers_the_attack_loss_and_is_seeded(t2i_tiny, weak):
    env = t2i_tiny
    a = _search(env, weak, "discrete", 10)
    b = _search(env, weak, "discrete", 10)
    assert a["prompts"] == b["prompts"] and a["loss"] == b["loss"]  # same seed, same search
    words = a["prompts"][0].split()
    assert len(words) == 3 + 5 and words[3:] == "a photo of a three".split()  # a 3-word prefix
    # measured: found 0.11708 vs plain prompt 0.11814 (the search starts from random words and
    # stops at a local optimum after 5 steps), and the prefix it finds holds the synonym:
    # "colourless trio white a photo of a three"
    assert a["loss"] < a["plain_loss"] - 0.0005
    assert "trio" in words[:3]
    assert 1 <= a["steps"] <= 10


def test_embedding_attack_raises_the_concept_rate_over_the_plain_prompt(t2i_tiny, weak):
    env = t2i_tiny
    before = {k: v.clone() for k, v in weak.state_dict().items()}
    audit = AUDITS.build("prompt-attack", {"mode": "embedding", "steps": 50, "lr": 0.05})
    r = audit.audit(env.original, weak, env.splits, task=env.task, ctx=env.ctx)
    m = r.metrics
    assert all(math.isfinite(v) for v in m.values())
    # measured (seed 0): asr 0.75 vs plain 0.125 on the weakly erased model; the oracle, which
    # never saw a three, reaches 0.125 from 0.0
    assert m["asr"] >= m["plain_rate"] + 0.3
    assert m["asr"] >= m["oracle_asr"] + 0.3
    assert m["attack_loss"] < m["plain_loss"]
    assert r.arrays["attack_images"].dtype == np.float16 and r.arrays["attack_images"].ndim == 4
    assert any(n.startswith("unlearned: 'a photo of a three' -> '~ ") for n in r.notes)
    for k, v in weak.state_dict().items():
        assert torch.equal(v, before[k]), f"prompt-attack changed the audited model ({k})"
    assert all(p.grad is None for p in weak.parameters())


def test_loss_and_errors(t2i_tiny):
    env = t2i_tiny
    m = env.original
    gen = torch.Generator().manual_seed(0)
    draws = fixed_draws(env.splits.forget.x0[:4], 2, env.task.schedule, gen)
    with torch.no_grad():
        ctxs = env.task.encode(m, ["a photo of a three", "a photo of a two"])
        both = denoising_loss(m, ctxs, draws)
        one = denoising_loss(m, ctxs[1:], draws)
    assert both.shape == (2,) and torch.allclose(both[1], one[0], atol=1e-6)
    # the concept's images are explained better by its own word than by another digit's
    assert both[0] < both[1]
    with pytest.raises(ValueError, match="mode"):
        UnlearnDiffAtk(mode="soft")
    with pytest.raises(ValueError, match="lower n_tokens"):
        attack_prompts(env.ds, env.ds.concept("three"), 3, 7)
