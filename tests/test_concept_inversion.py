"""concept-inversion on the t2i-tiny fixture (concept "three", synonym "trio").

The unlearned model is a weakly erased one: ESD-x for 50 iterations (seeded): the word is gone
("a photo of a three" concept rate 0.075, original 0.875), the synonym half open ("trio" 0.475),
the setting where the paper finds word-based guidance ineffective.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from obliviate.audits.concept_inversion import ConceptInversion, invert_concept, slot_context
from obliviate.audits.prompt_attack import fixed_draws
from obliviate.loop import seeded
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


def test_slot_context_replaces_only_the_concept_word(t2i_tiny):
    env, m = t2i_tiny, t2i_tiny.original
    task = env.task
    prompts = ["a photo of a three", "a red three"]
    own = m.text_encoder.token_embedding.weight[task.vocab.index["three"]]
    with torch.no_grad():
        same = slot_context(m, task, prompts, "three", own)
        other = slot_context(m, task, prompts, "three", torch.zeros_like(own))
        assert torch.allclose(same, task.encode(m, prompts), atol=1e-6)
        assert not torch.allclose(other, same, atol=1e-3)
    with pytest.raises(ValueError, match="slot word"):
        slot_context(m, task, ["a photo of a two"], "three", own)


def test_inversion_lowers_its_objective_and_changes_only_cstar(t2i_tiny, weak):
    env = t2i_tiny
    task = env.task
    before = {k: v.clone() for k, v in weak.state_dict().items()}
    x0 = env.splits.forget.x0[:32]
    caps = [env.ds.prompt("three", template=k) for k in range(32)]
    table = weak.text_encoder.token_embedding.weight.detach()
    init = table[1:].mean(0)
    gen = torch.Generator().manual_seed(0)
    cstar, trace = invert_concept(
        weak, task, x0, caps, "three", init, steps=300, lr=5e-3, batch_size=16, gen=gen
    )
    draws = fixed_draws(x0, 4, task.schedule, torch.Generator().manual_seed(1))

    def objective(vec):
        with torch.no_grad():
            c = slot_context(weak, task, caps * 4, "three", vec)
            return float(F.mse_loss(weak(draws[0], draws[1], context=c), draws[2]))

    start, end = objective(init), objective(cstar)
    word = objective(table[task.vocab.index["three"]])
    # measured: 0.0617 -> 0.0578; the erased word's own embedding: 0.0609
    assert end < start - 0.002 and end < word - 0.001
    assert len(trace) == 300 and cstar.shape == init.shape and not cstar.requires_grad
    for k, v in weak.state_dict().items():
        assert torch.equal(v, before[k]), f"inversion changed the model ({k})"
    assert all(p.grad is None for p in weak.parameters())


@pytest.mark.slow  # 87 s under load
def test_cstar_guidance_defends_the_synonyms_where_the_word_does_not(t2i_tiny, weak):
    env = t2i_tiny
    before = {k: v.clone() for k, v in weak.state_dict().items()}
    r = AUDITS.build("concept-inversion", {}).audit(
        env.original, weak, env.splits, task=env.task, ctx=env.ctx
    )
    m = r.metrics
    assert all(math.isfinite(v) for v in m.values())
    # measured (seed 0), DSR on the "trio" prompts: alone 0.675; negative prompt with the word
    # 0.775, with c* 0.95; SLD with the word 0.825, with c* 1.0
    assert m["dsr_neg_cstar"] >= m["dsr_neg_word"] + 0.1
    assert m["dsr_sld_cstar"] >= m["dsr_sld_word"] + 0.1
    # the observation: SLD with the word works on the original (0.2 -> 0.875), barely on the
    # erased model (0.675 -> 0.825)
    assert m["original_gain_sld_word"] >= m["gain_sld_word"] + 0.3
    assert m["inversion_loss"] < m["inversion_loss_init"]  # measured 0.0578 vs 0.0617
    for k in ("unlearned_images", "word_guidance_images", "cstar_guidance_images"):
        a = r.arrays[k]
        assert a.dtype == np.float16 and a.ndim == 4 and a.shape[1] == 3
    assert r.arrays["cstar"].shape == (weak.text_encoder.token_embedding.embedding_dim,)
    for k, v in weak.state_dict().items():
        assert torch.equal(v, before[k]), f"concept-inversion changed the audited model ({k})"
    assert all(p.grad is None for p in weak.parameters())


def test_bad_hyperparameters_say_what_to_do():
    with pytest.raises(ValueError, match="needs a"):
        ConceptInversion(guide_prompt="three")
    with pytest.raises(ValueError, match="images"):
        ConceptInversion(images="real")
    with pytest.raises(ValueError, match="captions"):
        ConceptInversion(captions="mine")


def test_load_cstar_reads_a_run_folder_or_npz_and_refuses_bad_ones(tmp_path):
    from obliviate.audits.concept_inversion import load_cstar

    vec = np.arange(6, dtype=np.float32)
    np.savez(tmp_path / "arrays.npz", **{"concept-inversion.cstar": vec})
    assert torch.equal(load_cstar(tmp_path, dim=6), torch.as_tensor(vec))
    assert torch.equal(load_cstar(tmp_path / "arrays.npz", dim=6), torch.as_tensor(vec))
    with pytest.raises(ValueError, match="same text encoder"):
        load_cstar(tmp_path, dim=8)
    with pytest.raises(FileNotFoundError, match="finished run"):
        load_cstar(tmp_path / "nowhere", dim=6)
    np.savez(tmp_path / "other.npz", x=vec)
    with pytest.raises(ValueError, match="did not run the"):
        load_cstar(tmp_path / "other.npz", dim=6)


def test_transferred_cstar_is_used_as_given(t2i_tiny, weak, tmp_path):
    """cstar_from: no inversion; the given c* is the one reported (and guided with)."""
    env = t2i_tiny
    dim = weak.text_encoder.token_embedding.embedding_dim
    given = torch.randn(dim, generator=torch.Generator().manual_seed(0)).numpy()
    np.savez(tmp_path / "arrays.npz", **{"concept-inversion.cstar": given})
    fast = {"n": 1, "n_pp": 1, "sample_steps": 4, "n_eval_draws": 1, "n_boot": 10}
    r = AUDITS.build("concept-inversion", {**fast, "cstar_from": str(tmp_path)}).audit(
        env.original, weak, env.splits, task=env.task, ctx=env.ctx
    )
    assert np.array_equal(r.arrays["cstar"], given.astype(np.float32))
    assert r.metrics["cstar_transferred"] == 1.0
    assert any("reused from" in n for n in r.notes)
