"""MUSE audit: Min-K% and PrivLeak on hand-made numbers, prefix/continuation pairs, the raw-text
option of LMTask.generate, KnowMem and PrivLeak on lm-world-tiny, and VerbMem on a model that
memorised plain-text passages against one that never saw them."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

pytest.importorskip("rouge_score")

from obliviate.audits.muse import MUSE, min_k_score, privleak, verbmem_pairs  # noqa: E402
from obliviate.loop import TrainRecipe  # noqa: E402


def test_min_k_score_drops_the_last_token():
    lp = np.array([-1.0, -5.0, -2.0, -0.1])
    # last token (-0.1) dropped; int(3 * 0.4) = 1 lowest -> -5
    assert min_k_score(lp, 0.4) == -5.0
    assert min_k_score(lp, 1.0) == pytest.approx(-8.0 / 3.0)
    assert min_k_score(np.array([-20.0, -9.0, -1.0, -3.0, -0.5, -30.0]), 0.4) == -14.5  # 2 of 5
    assert min_k_score(np.array([-3.0]), 0.4) == 0.0  # nothing left: OpenUnlearning's 0


def test_privleak_formula():
    assert privleak(0.8, 0.5) == pytest.approx(0.6)
    assert privleak(0.4, 0.5) == pytest.approx(-0.2)  # over-unlearning is negative
    with pytest.raises(ValueError):
        privleak(0.5, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        MUSE(k=0.0)


def test_verbmem_pairs_split_a_passage(lm_tiny):
    t = lm_tiny.task
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    data = t.encode([""], [text])
    n = int(data.n_tokens[0]) - 1  # without EOS
    pre, cont, counts = verbmem_pairs(data, t.tokenizer, prefix_tokens=3, continuation_tokens=99)
    assert counts == [n - 3]
    assert (pre[0] + " " + cont[0]).split() == text.split()
    # the prefix never takes more than half: a continuation always remains
    pre, cont, counts = verbmem_pairs(data, t.tokenizer, prefix_tokens=99, continuation_tokens=2)
    assert counts == [2] and len(t.tokenizer(pre[0])["input_ids"]) == n // 2


def test_generate_raw_continues_plain_text(lm_tiny):
    # raw=True with the templated text gives what the QA path gives for the bare question
    t, fq = lm_tiny.task, lm_tiny.splits.extra["forget_qa"]
    qs = list(fq.prompts[:4])
    templated = t.generate(lm_tiny.original, qs, max_new_tokens=8)
    raw = t.generate(lm_tiny.original, [t.format_prompt(q) for q in qs], max_new_tokens=8, raw=True)
    assert raw == templated
    assert templated == list(fq.targets[:4])  # memorised answers (measured: all 4)
    # the raw prompt is a plain-text row as encode builds it (BOS + tokens), less its EOS
    row = t.encode([""], [t.format_prompt(qs[0])])
    assert (
        t._raw_ids(t.format_prompt(qs[0])) == row.input_ids[0, : int(row.lengths[0]) - 1].tolist()
    )


@pytest.fixture(scope="module")
def muse_rows(lm_tiny):
    """MUSE on lm-world-tiny with the original and with the oracle as the audited model."""
    audit = MUSE()
    return {
        who: audit.audit(lm_tiny.original, m, lm_tiny.splits, task=lm_tiny.task, ctx=lm_tiny.ctx)
        for who, m in (("original", lm_tiny.original), ("oracle", lm_tiny.oracle))
    }


def test_knowmem_and_privleak_original_vs_oracle(muse_rows):
    o, r = muse_rows["original"].metrics, muse_rows["oracle"].metrics
    # measured KnowMem forget 1.0 (original) vs 0.2 (oracle); retain 0.87 vs 0.75
    assert o["knowmem.forget"] >= 0.8
    assert r["knowmem.forget"] <= o["knowmem.forget"] - 0.5
    assert r["knowmem.retain"] >= 0.5
    # measured Min-K% AUC 0.84 (original) vs 0.56 (oracle): PrivLeak +0.50 vs exactly 0
    assert o["privleak"] > 0.25
    assert r["privleak"] == 0.0
    assert o["mia.auc_oracle"] == r["mia.auc"]
    assert o["privleak_pct"] == pytest.approx(100 * o["privleak"])
    # lm-world-tiny has no biographies: VerbMem is skipped, and the notes say so
    assert "verbmem.forget" not in o
    assert any("verbmem" in n for n in muse_rows["original"].notes)


def test_no_oracle_falls_back_to_auc_half(lm_tiny):
    sp = lm_tiny.splits
    splits = dataclasses.replace(sp, info={**sp.info, "has_oracle": False})
    r = MUSE(max_examples=8).audit(
        lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx
    )
    assert r.metrics["mia.auc_oracle"] == 0.5
    assert r.metrics["privleak"] == pytest.approx((r.metrics["mia.auc"] - 0.5) / 0.5)
    assert any("AUC 0.5" in n for n in r.notes)


def test_verbmem_of_memorised_passages(lm_tiny):
    """A copy of the original trained on the forget QA written out as plain text recites it;
    a copy of the oracle trained on other passages only does not."""
    from obliviate.lm.task import train_lm

    t, sp = lm_tiny.task, lm_tiny.splits

    def as_text(d):
        texts = [f"{t.format_prompt(q)} {a}" for q, a in zip(d.prompts, d.targets, strict=True)]
        return t.encode([""] * len(texts), texts, meta=[{"kind": "passage"}] * len(texts))

    forget, other = as_text(sp.extra["forget_qa"]), as_text(sp.extra["retain_qa"].subset(range(10)))
    both = t.encode([""] * (len(forget) + len(other)), [*forget.targets, *other.targets])
    recipe = TrainRecipe(
        optimizer="adamw", lr=3e-3, weight_decay=0.0, epochs=15, batch_size=16, schedule="cosine"
    )
    memorised = copy.deepcopy(lm_tiny.original)
    train_lm(memorised, both, task=t, recipe=recipe, seed=0)
    never = copy.deepcopy(lm_tiny.oracle)
    train_lm(never, other, task=t, recipe=recipe, seed=0)
    splits = dataclasses.replace(sp, forget=forget, extra={})
    ctx = dataclasses.replace(lm_tiny.ctx, oracle=never)
    audit = MUSE()
    got = {
        who: audit.audit(lm_tiny.original, m, splits, task=t, ctx=ctx)
        for who, m in (("memorised", memorised), ("never", never))
    }
    vm = {who: r.metrics["verbmem.forget"] for who, r in got.items()}
    # measured: 0.68 (memorised) vs 0.22 (never saw the passages)
    assert vm["memorised"] > vm["never"] + 0.3
    assert got["memorised"].metrics["n.verbmem"] == len(forget)
    assert len(got["never"].arrays["verbmem.forget.rouge"]) == len(forget)


def test_mia_members_match_the_held_out_kind(lm_tiny):
    # forget = 10 questions + 3 plain-text rows; held-out rows are all questions, so the MIA
    # compares the 10 forget questions with them (a bio-vs-QA AUC would measure text kind)
    t, sp = lm_tiny.task, lm_tiny.splits
    fq = sp.extra["forget_qa"]
    texts = ["Stephanie Collins was born in New Tinaview.", "A plain line.", "Another one here."]
    forget = t.encode([*fq.prompts, "", "", ""], [*fq.targets, *texts])
    splits = dataclasses.replace(sp, forget=forget, extra={"holdout_qa": sp.extra["holdout_qa"]})
    r = MUSE().audit(lm_tiny.original, lm_tiny.original, splits, task=t, ctx=lm_tiny.ctx)
    assert r.metrics["n.mia.forget"] == len(fq)
    assert r.metrics["n.mia.holdout"] == len(sp.extra["holdout_qa"])
    assert r.metrics["n.verbmem"] == 3  # the plain-text rows are the VerbMem passages
