"""lm-qa and forget-quality (TOFU): the truth ratio, aggregates, matching and ROUGE on hand-made
cases; the audits on the lm-world-tiny fixture (original, oracle, facts the original never knew,
a benchmark without oracle)."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest

pytest.importorskip("rouge_score")
pytest.importorskip("scipy")

from obliviate.audits.forget_quality import ForgetQuality, ks_forget_quality  # noqa: E402
from obliviate.audits.lm_qa import (  # noqa: E402
    LMQA,
    forget_tr_score,
    gold_answers,
    harmonic_mean,
    log_truth_ratio,
    log_truth_ratios,
    match_answer,
    retain_tr_score,
    rouge_l,
)


# -- hand-made cases -----------------------------------------------------------------------------
def test_truth_ratio_hand_computed_geometric_mean():
    # P(correct) = e^-2; wrong answers e^-1, e^-3, e^-0.5: geometric mean e^-1.5 -> tr = e^0.5.
    # The paper's arithmetic mean would give 0.3414 / 0.1353 = 2.52, not 1.65.
    got = np.exp(log_truth_ratio(np.array([2.0, 1.0]), [np.array([1.0, 3.0, 0.5]), [0.5, 1.5]]))
    assert got == pytest.approx([math.exp(0.5), 1.0])
    arithmetic = np.mean(np.exp(-np.array([1.0, 3.0, 0.5]))) / math.exp(-2.0)
    assert abs(got[0] - arithmetic) > 0.8
    with pytest.raises(ValueError, match="perturbed"):
        log_truth_ratio(np.array([1.0]), [np.array([])])


def test_truth_ratio_aggregates():
    # forget: mean(min(tr, 1/tr)) over tr = 2, 0.5, 1 -> (0.5 + 0.5 + 1) / 3
    assert forget_tr_score(np.log([2.0, 0.5, 1.0])) == pytest.approx(2 / 3)
    # retain: mean(max(0, 1 - tr)) over tr = 0.25, 2, 1 -> 0.75 / 3
    assert retain_tr_score(np.log([0.25, 2.0, 1.0])) == pytest.approx(0.25)
    assert retain_tr_score(np.array([1e6])) == 0.0  # a huge tr stays finite
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.9, 0.0, 0.8]) == 0.0


@pytest.mark.parametrize(
    ("generated", "gold", "mode", "expected"),
    [
        ("The capital of France is Paris.", "Paris", "contains", True),
        ("PARIS!!", "Paris", "exact", True),
        ("Parisian food", "Paris", "contains", False),  # whole words only
        ("It is Paris", "Paris", "exact", False),
        ("Jones Shelton", "Jones-Shelton", "exact", True),  # punctuation -> space
        ("  new   tinaview ", "New Tinaview", "exact", True),  # whitespace collapsed
        ("Sao Paulo", "São Paulo", "contains", True),  # accents removed
        ("the UK, of course", ("United Kingdom", "UK"), "contains", True),  # an alias
        ("19810", "1981", "contains", False),
        ("", "1981", "contains", False),
    ],
)
def test_match_answer(generated, gold, mode, expected):
    assert match_answer(generated, gold, mode=mode) is expected


def test_gold_answers_and_bad_mode():
    assert gold_answers({"answer": "United Kingdom", "aliases": ["UK", ""]}, "x") == (
        "United Kingdom",
        "UK",
    )
    assert gold_answers({}, "The target") == ("The target",)
    with pytest.raises(ValueError, match="contains"):
        match_answer("a", "a", mode="fuzzy")


def test_rouge_l_recall_uses_the_stemmer():
    # "cats running" vs reference "cat run": the stemmer maps both words -> recall 1.
    r = rouge_l(["the cats are running"], ["cat run"], kind="recall")
    assert r == pytest.approx([1.0])
    f1 = rouge_l(["the cats are running"], ["cat run"], kind="fmeasure")
    assert f1 == pytest.approx([2 * 0.5 * 1.0 / 1.5])  # precision 2/4
    assert rouge_l([""], ["Paris"]) == pytest.approx([0.0])


def test_ks_forget_quality_hand_cases():
    a = np.array([0.1, -0.3, 0.2, 0.0, 0.5])
    assert ks_forget_quality(a, a) == (1.0, 0.0)
    # fully separated samples of 5 and 5: exact two-sided p = 2 / C(10, 5) = 2 / 252
    p, stat = ks_forget_quality(a, a + 10.0)
    assert stat == 1.0
    assert p == pytest.approx(2 / 252)


# -- on the lm-world-tiny fixture ----------------------------------------------------------------
@pytest.fixture(scope="module")
def qa_oracle(lm_tiny):
    """lm-qa with the retrain oracle as the audited model: original.*, oracle.* and the rest."""
    return LMQA().audit(
        lm_tiny.original, lm_tiny.oracle, lm_tiny.splits, task=lm_tiny.task, ctx=lm_tiny.ctx
    )


def test_original_knows_the_forget_facts_and_the_oracle_does_not(qa_oracle):
    m = qa_oracle.metrics
    # measured: original forget match 1.0 (10/10), oracle 0.2 (shared jobs/companies guessed)
    assert m["original.forget.match"] >= 0.8
    assert m["oracle.forget.match"] <= m["original.forget.match"] - 0.5
    assert m["forget.match"] == m["oracle.forget.match"]  # the audited model is the oracle
    # measured probabilities 0.72 vs 0.33; ROUGE-L recall 1.0 vs 0.2
    assert m["original.forget.prob"] > m["oracle.forget.prob"] + 0.2
    assert m["original.forget.rouge"] > m["oracle.forget.rouge"] + 0.5
    # the oracle still knows the retained people (measured 0.69; original 0.81)
    assert m["oracle.retain.match"] >= 0.5
    assert m["forget.unknown_to_original"] == 0
    # the original knew all 10 forget facts, the oracle recalls 2 of them
    assert m["forget.recall_of_known"] == pytest.approx(m["oracle.forget.match"])


def test_per_example_arrays_line_up(qa_oracle, lm_tiny):
    a, m = qa_oracle.arrays, qa_oracle.metrics
    n = int(m["n.forget"])
    assert n == len(lm_tiny.splits.extra["forget_qa"])
    for who in ("unlearned", "original", "oracle"):
        for k in ("match", "rouge", "prob", "log_tr", "answers"):
            assert len(a[f"{who}.forget.{k}"]) == n
    assert a["original.forget.match"].mean() == m["original.forget.match"]
    assert forget_tr_score(a["oracle.forget.log_tr"]) == m["oracle.forget.truth_ratio"]
    # per-example probabilities average to the Task's answer_prob (TOFU's "probability")
    ev = lm_tiny.task.evaluate(lm_tiny.original, lm_tiny.splits.extra["forget_qa"])
    assert m["original.forget.prob"] == pytest.approx(ev["answer_prob"], rel=1e-9)
    np.testing.assert_array_equal(a["forget.idx"], lm_tiny.splits.extra["forget_qa"].idx)


def test_model_utility_is_the_harmonic_mean_over_retain(qa_oracle):
    m = qa_oracle.metrics
    for pre in ("", "original."):
        parts = [m[f"{pre}retain.{k}"] for k in ("prob", "rouge", "truth_ratio")]
        assert m[f"{pre}model_utility"] == pytest.approx(harmonic_mean(parts))
    # lm-world's control set is held-out people: the original answers 22% of it, so "auto"
    # leaves it out of utility, and says so
    assert any("left out of model_utility" in n for n in qa_oracle.notes)
    assert math.isfinite(m["fluency.ppl"]) and m["fluency.ppl"] > 1


def test_log_truth_ratios_batched_equal_row_by_row(lm_tiny):
    t, fq = lm_tiny.task, lm_tiny.splits.extra["forget_qa"].subset([0, 1, 2])
    batched = log_truth_ratios(lm_tiny.original, fq, task=t)
    for i in range(3):
        q, meta = fq.prompts[i], fq.meta[i]
        s, n = t.sequence_nll(lm_tiny.original, t.encode([q], [meta["paraphrased_answer"]]))
        wrong = [
            t.sequence_nll(lm_tiny.original, t.encode([q], [w])) for w in meta["perturbed_answers"]
        ]
        want = s[0] / n[0] - np.mean([ws[0] / wn[0] for ws, wn in wrong])
        assert batched[i] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_facts_unknown_to_the_original_are_warned(lm_tiny, caplog):
    # forget questions about held-out people: the original never saw them
    sp = lm_tiny.splits
    splits = dataclasses.replace(sp, extra={**sp.extra, "forget_qa": sp.extra["holdout_qa"]})
    with caplog.at_level(logging.WARNING, logger="obliviate.audits.lm_qa"):
        r = LMQA(references=False).audit(
            lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx
        )
    # measured: 8 of 18 (no match and probability < 0.25); 4 of the 18 are matched by chance
    assert r.metrics["forget.unknown_to_original"] >= 5
    assert r.arrays["forget.unknown_to_original"].sum() == r.metrics["forget.unknown_to_original"]
    assert any("never known to the original" in n for n in r.notes)
    assert "never known to the original" in caplog.text
    assert not any(k.startswith("oracle.") for k in r.metrics)


def test_benchmark_without_oracle_gives_a_note(lm_tiny):
    # lm-capitals-like: has_oracle False, a "control" set of facts instead of held-out people
    sp = lm_tiny.splits
    extra = {"forget_qa": sp.extra["forget_qa"], "retain_qa": sp.extra["retain_qa"],
             "control": sp.extra["retain_qa"].subset(np.arange(8))}  # fmt: skip
    splits = dataclasses.replace(sp, extra=extra, info={**sp.info, "has_oracle": False})
    r = LMQA(max_examples=20).audit(
        lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx
    )
    assert any("no retrain oracle" in n for n in r.notes)
    assert not any(k.startswith("oracle.") for k in r.metrics)
    assert r.metrics["n.retain"] == 20  # seeded subsample
    # known control facts enter model utility
    assert any("model_utility over retain + control" in n for n in r.notes)
    with pytest.raises(ValueError, match="no retrain oracle"):
        ForgetQuality().audit(
            lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx
        )


def test_forget_quality_oracle_against_itself_is_one(lm_tiny):
    fq = ForgetQuality()
    r = fq.audit(lm_tiny.original, lm_tiny.oracle, lm_tiny.splits, task=lm_tiny.task,
                 ctx=lm_tiny.ctx)  # fmt: skip
    assert r.metrics["forget_quality"] == 1.0
    assert r.metrics["log10_forget_quality"] == 0.0
    # measured: the original against the oracle p = 0.052 (KS statistic 0.6 over 10 questions)
    assert r.metrics["original.forget_quality"] < 0.2
    p, _ = ks_forget_quality(r.arrays["original.log_tr"], r.arrays["oracle.log_tr"])
    assert p == r.metrics["original.forget_quality"]


def test_refusals_without_perturbed_answers_or_questions(lm_tiny):
    sp = lm_tiny.splits
    bare = sp.extra["forget_qa"]
    bare = lm_tiny.task.encode(list(bare.prompts), list(bare.targets))  # no meta
    splits = dataclasses.replace(sp, extra={**sp.extra, "forget_qa": bare})
    with pytest.raises(ValueError, match="perturbed_answers"):
        ForgetQuality().audit(
            lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx
        )
    text = lm_tiny.task.encode(["", ""], ["a plain passage", "another one"])
    splits = dataclasses.replace(sp, forget=text, extra={})
    with pytest.raises(ValueError, match="muse"):
        LMQA().audit(lm_tiny.original, lm_tiny.original, splits, task=lm_tiny.task, ctx=lm_tiny.ctx)
