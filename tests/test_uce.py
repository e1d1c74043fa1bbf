"""UCE on the t2i-tiny fixture: the closed form, its exactness on the concept, preservation."""

from __future__ import annotations

import pytest
import torch

from obliviate.loop import count_steps, seeded
from obliviate.methods.esd import concept_prompts
from obliviate.methods.uce import uce_edit, uce_targets
from obliviate.registry import METHODS
from obliviate.types import Budget
from tests.test_esd import alignment, probes, rates


def run(env, **params):
    model = env.fresh().train()
    with seeded(0), count_steps() as c:
        out = METHODS.build("uce", params).unlearn(
            model, env.splits.forget, env.splits.retain, task=env.task, budget=Budget()
        )
    return out, c.steps


def contexts(env, prompts):
    with torch.no_grad():
        return env.original.text_encoder(env.task.tokenize(prompts))  # (P, L, D)


def rel_err(a, b) -> float:
    return float(((a - b).norm() / b.norm()).detach())


def test_uce_edit_matches_the_normal_equations():
    g = torch.Generator().manual_seed(0)
    w, ce, ca, ck = (torch.randn(s, generator=g) for s in ((6, 5), (3, 5), (3, 5), (4, 5)))
    got = uce_edit(w, ce, ca, ck, lamb=0.5, erase_scale=1.0, preserve_scale=2.0).double()
    w, ce, ca, ck = w.double(), ce.double(), ca.double(), ck.double()
    v = ca @ w.T
    mat1 = 0.5 * w + sum(torch.outer(v[i], ce[i]) for i in range(3))
    mat1 = mat1 + 2.0 * sum(torch.outer(w @ ck[j], ck[j]) for j in range(4))
    mat2 = 0.5 * torch.eye(5) + ce.T @ ce + 2.0 * ck.T @ ck
    assert torch.allclose(got, mat1 @ torch.linalg.inv(mat2), atol=1e-5)


def test_uce_maps_the_concept_onto_the_anchor_and_takes_no_step(t2i_tiny):
    env = t2i_tiny
    _, _, prompts = concept_prompts(env.splits.forget, env.splits.retain, env.task)
    c_e = contexts(env, prompts).flatten(0, 1)  # every position ("all")
    c_a = contexts(env, [""] * len(prompts)).flatten(0, 1)
    for positions in ("all", "token"):
        model, steps = run(env, preserve_scale=0.0, positions=positions)
        assert steps == 0
        old, new = dict(env.original.named_modules()), dict(model.named_modules())
        names = uce_targets(model)
        assert len(names) == 2 * 3  # to_k and to_v of the three cross-attention blocks
        if positions == "token":
            sel = env.task.tokenize(prompts).flatten() == env.task.vocab.index["three"]
            ce, ca = c_e[sel], c_a[sel]
        else:
            ce, ca = c_e, c_a
        for n in names:
            target = ca @ old[n].weight.T  # v*_i = W c_anchor
            after = rel_err(ce @ new[n].weight.T, target)
            before = rel_err(ce @ old[n].weight.T, target)
            # measured: after 0.066-0.107 ('all'), 0.048-0.137 ('token'): what the ridge
            # lamb=0.5 leaves; before 1.1-2.5 ('all'), 1.9-4.2 ('token')
            assert after < 0.15, (positions, n)
            assert after < 0.1 * before, (positions, n)


def test_uce_changes_only_key_value_projections_and_preserves_the_rest(t2i_tiny):
    env = t2i_tiny
    model, _ = run(env)
    old = dict(env.original.named_parameters())
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, old[n])}
    assert moved == {f"{n}.weight" for n in uce_targets(model)}
    keep = sorted(set(env.task.vocab.decode(env.splits.retain.tokens)))
    _, _, prompts = concept_prompts(env.splits.forget, env.splits.retain, env.task)
    c_k, c_e = contexts(env, keep).flatten(0, 1), contexts(env, prompts).flatten(0, 1)
    c_a = contexts(env, [""] * len(prompts)).flatten(0, 1)
    mods, olds = dict(model.named_modules()), dict(env.original.named_modules())
    for n in uce_targets(model):
        w0, w1 = olds[n].weight, mods[n].weight
        # preserved prompts move little, the concept moves to the anchor (measured below)
        keep_err = rel_err(c_k @ w1.T, c_k @ w0.T)
        edit_err = rel_err(c_e @ w1.T, c_a @ w0.T)
        unedited = rel_err(c_e @ w0.T, c_a @ w0.T)
        assert keep_err < 0.15, n  # measured 0.081-0.091
        # measured edit_err / unedited 0.68-0.77: with the code's defaults (erase = preserve
        # = 1) 378 preserved prompts x 8 positions pull against 21 edit prompts x 8
        assert edit_err < 0.85 * unedited, n


# 75 s under load; the closed form and the anchor mapping are tested fast
@pytest.mark.slow
def test_uce_erases_the_concept_and_keeps_the_other_classes(t2i_tiny):
    env = t2i_tiny
    fx, fp, rx, rp = probes(env)
    model, _ = run(env)
    concept = alignment(model, env.original, env.task, fx, fp)
    unrelated = alignment(model, env.original, env.task, rx, rp)
    before, after = rates(env, env.original), rates(env, model)
    # measured (seed 0, n=4): alignment concept 0.16, unrelated 0.96; concept rate 0.90 -> 0.15,
    # synonym 0.80 -> 0.65 (UCE edits the explicit word only), unrelated class accuracy
    # 0.94 -> 0.92
    assert concept < 0.4
    assert unrelated > 0.85
    assert after["concept_rate"] < before["concept_rate"] - 0.3
    assert after["unrelated_class_acc"] > before["unrelated_class_acc"] - 0.1


@torch.no_grad()
def eps_under(model, env, x0, prompt):
    with seeded(1):
        noise, t = torch.randn_like(x0), torch.randint(0, env.task.schedule.T, (len(x0),))
    x_t = env.task.schedule.q_sample(x0, t, noise)
    return model(x_t, t, env.task.tokenize([prompt] * len(x0)))


def test_uce_anchor_word_redirects_the_concept(t2i_tiny):
    env = t2i_tiny
    model, _ = run(env, anchor="two", preserve_scale=0.0)
    fx = env.splits.forget.x0
    two = eps_under(env.original, env, fx, "a photo of a two")
    before = (eps_under(env.original, env, fx, "a photo of a three") - two).norm()
    after = (eps_under(model, env, fx, "a photo of a three") - two).norm()
    assert after < 0.3 * before  # measured ratio 0.056
    with pytest.raises(ValueError, match="not in the vocabulary"):
        run(env, anchor="unicorn")
