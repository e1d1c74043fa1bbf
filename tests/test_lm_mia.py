"""LM membership attacks (mia-loss, mia-zlib, mia-min-k, mia-min-k-plus-plus, mia-reference) on
lm-world-tiny: a model that memorised 16 people tells their facts from held-out people's; the
retrain oracle does not; min-k and min-k++ against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obliviate.audits.mia_loss import lm_membership_data, mean_logprob
from obliviate.audits.mia_min_k import min_k_mean, min_k_scores
from obliviate.audits.mia_min_k_plus_plus import token_zscores
from obliviate.audits.mia_zlib import zlib_entropy
from obliviate.audits.signals import token_logprob_stats, vocab_logprob_stats
from obliviate.registry import AUDITS
from obliviate.types import Splits

# (registry key, parameters): every LM attack, the reference one with the oracle as reference
# (with the original as reference the original's own scores are all 0: see test_reference_roles)
ATTACKS = [
    ("mia-loss", {}),
    ("mia-zlib", {}),
    ("mia-min-k", {}),
    ("mia-min-k-plus-plus", {}),
    ("mia-reference", {"reference": "oracle"}),
]


def _audit(env, name, params, unlearned=None):
    audit = AUDITS.build(name, params)
    model = env.original if unlearned is None else unlearned
    return audit.audit(env.original, model, env.splits, task=env.task, ctx=env.ctx)


# -- hand-made cases -----------------------------------------------------------------------------
def test_min_k_mean_on_hand_made_tokens():
    lp = np.array([-0.1, -3.0, -0.5, -2.0, -0.2, -9.9])  # the last one is the EOS: dropped
    # 5 tokens left, int(0.4 * 5) = 2 lowest: -3.0 and -2.0
    assert min_k_mean(lp, 0.4) == pytest.approx(-2.5)
    # kept: 6 tokens, int(0.4 * 6) = 2 lowest: -9.9 and -3.0
    assert min_k_mean(lp, 0.4, drop_last=False) == pytest.approx(-6.45)
    assert min_k_mean(lp, 0.01) == pytest.approx(-3.0)  # at least one token
    assert min_k_mean(lp, 1.0) == pytest.approx(np.mean(lp[:-1]))  # k = 1 is the loss attack
    assert min_k_mean(np.array([-4.0]), 0.4) == 0.0  # nothing left after the drop
    got = min_k_scores([lp, lp[:3]], 0.4, drop_last=True)
    np.testing.assert_allclose(got, [-2.5, -3.0])
    with pytest.raises(ValueError, match="k="):
        AUDITS.build("mia-min-k", {"k": 0.0})


def test_min_k_plus_plus_matches_a_hand_computation_on_a_3_token_vocabulary():
    p = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.7, 0.2, 0.1], [0.6, 0.4, 0.0]])
    with np.errstate(divide="ignore"):
        logits = torch.tensor(np.log(p) + 3.0)  # a shift: logits are defined up to a constant
    labels = torch.tensor([0, 1, 2, 1])
    lp, mu, sigma = (t.numpy() for t in vocab_logprob_stats(logits, labels))
    # row 0 and 1: mu = 0.5 ln .5 + 0.5 ln .25 = -1.5 ln 2, sigma = ln(2) / 2, so z = +1 and -1
    np.testing.assert_allclose(mu[:2], -1.5 * math.log(2))
    np.testing.assert_allclose(sigma[:2], math.log(2) / 2)
    # row 2 by hand
    q = np.array([0.7, 0.2, 0.1])
    m = (q * np.log(q)).sum()
    s = math.sqrt((q * (np.log(q) - m) ** 2).sum())
    np.testing.assert_allclose([mu[2], sigma[2], lp[2]], [m, s, math.log(0.1)])
    # row 3: a token of probability 0 (logit -inf) adds nothing instead of 0 * inf = NaN
    r = np.array([0.6, 0.4])
    m3 = (r * np.log(r)).sum()
    np.testing.assert_allclose(
        [mu[3], sigma[3]], [m3, math.sqrt((r * (np.log(r) - m3) ** 2).sum())]
    )
    z = token_zscores([np.stack([lp, mu, sigma], 1)])[0]
    np.testing.assert_allclose(z[:2], [1.0, -1.0])
    np.testing.assert_allclose(z[2], (math.log(0.1) - m) / s)
    # Min-K%++ of these 4 tokens as one text: drop the last, int(0.4 * 3) = 1 lowest z
    assert min_k_scores([z], 0.4, drop_last=True)[0] == pytest.approx(min(z[:3]))
    # a near-deterministic position: sigma ~ 0 is floored, so z stays finite
    sharp = vocab_logprob_stats(torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([0]))
    z_sharp = token_zscores([torch.stack(sharp, 1).numpy()], sigma_floor=1e-3)[0]
    assert np.isfinite(z_sharp).all()


def test_zlib_entropy_counts_compressed_bytes():
    assert zlib_entropy("") == len(__import__("zlib").compress(b""))
    assert zlib_entropy("ab" * 50) < zlib_entropy("Theme park manager, born 1981 in Tinaview")


# -- on the tiny memorising Llama ----------------------------------------------------------------
def test_members_are_the_forget_qa_rows_and_nonmembers_the_held_out_people(lm_tiny):
    s = lm_tiny.splits
    members, held, which = lm_membership_data(s)
    assert which == "holdout_qa" and members is s.extra["forget_qa"] and held is s.test
    assert (len(members), len(held)) == (10, 18)
    members, held, which = lm_membership_data(s, "test")
    assert which == "test" and members is s.forget
    with pytest.raises(ValueError, match="forget_test"):
        lm_membership_data(s, "forget_test")
    empty = Splits(s.forget, s.retain, s.test.subset(np.array([], dtype=int)), s.forget_idx,
                   s.retain_idx)  # fmt: skip
    with pytest.raises(ValueError, match="held-out"):
        lm_membership_data(empty)


@pytest.mark.parametrize(("name", "params"), ATTACKS, ids=[a[0] for a in ATTACKS[:4]] + ["ref"])
def test_attacks_find_the_members_on_the_original_and_not_on_the_oracle(lm_tiny, name, params):
    m = _audit(lm_tiny, name, params).metrics
    # measured original / oracle AUC: loss 0.789 / 0.528, zlib 0.761 / 0.550, min-k 0.844 /
    # 0.561, min-k++ 0.894 / 0.667, reference(oracle) 0.950 / 0.500 (10 members, 18 non-members)
    assert m["original.auc"] > 0.7
    assert m["auc"] == m["original.auc"]  # the audited model is the original here
    assert abs(m["oracle.auc"] - 0.5) < 0.2
    assert m["original.auc"] - m["oracle.auc"] > 0.15  # smallest measured gap: zlib 0.21
    assert m["original.auc_ci_low"] <= m["original.auc"] <= m["original.auc_ci_high"]
    assert m["original.tpr@0.01"] >= 0.3  # measured 0.30 (loss, zlib) to 0.80 (reference)


def test_auc_convention_matches_openunlearning(lm_tiny):
    """OpenUnlearning: labels forget 0 / holdout 1, scores signed higher = non-member; the two
    flips cancel, so its roc_auc_score is our AUC (not 1 - AUC)."""
    from sklearn.metrics import roc_auc_score

    rep = _audit(lm_tiny, "mia-min-k", {})
    member = rep.arrays["is_member"].astype(bool)
    ou = roc_auc_score((~member).astype(int), -rep.arrays["scores"])
    assert ou == pytest.approx(rep.metrics["auc"])


def test_report_layout_and_the_loss_signal(lm_tiny):
    rep = _audit(lm_tiny, "mia-loss", {}, unlearned=lm_tiny.oracle)
    member = rep.arrays["is_member"]
    assert member.tolist() == [1] * 10 + [0] * 18
    for prefix in ("", "original.", "oracle."):
        assert rep.arrays[prefix + "scores"].shape == (28,)
        for key in ("auc", "auc_ci_low", "auc_ci_high", "tpr@0.01", "tpr@0.001", "balanced_acc"):
            assert math.isfinite(rep.metrics[prefix + key])
    # the audited model is the oracle: its row and the oracle row are one computation
    np.testing.assert_array_equal(rep.arrays["scores"], rep.arrays["oracle.scores"])
    # the LM loss signal is minus the per-token mean NLL (task.sequence_nll)
    s, n = lm_tiny.task.sequence_nll(lm_tiny.original, lm_tiny.splits.extra["forget_qa"])
    np.testing.assert_allclose(rep.arrays["original.scores"][:10], -s / n)
    conf = _audit(lm_tiny, "mia-loss", {"signal": "confidence"}).arrays["scores"]
    np.testing.assert_allclose(conf, np.exp(rep.arrays["original.scores"]))


def test_zlib_and_min_k_plus_plus_scores_from_their_definitions(lm_tiny):
    env = lm_tiny
    forget = env.splits.extra["forget_qa"]
    z = _audit(env, "mia-zlib", {}).arrays["scores"][:10]
    by_hand = [mean_logprob(env.original, forget, env.task)[i] / zlib_entropy(t)
               for i, t in enumerate(forget.targets)]  # fmt: skip
    np.testing.assert_allclose(z, by_hand)
    # the first column of the min-k++ statistics is the token log-prob of token_nlls
    stats = token_logprob_stats(env.original, forget, env.task)
    for st, nll in zip(stats, env.task.token_nlls(env.original, forget), strict=True):
        np.testing.assert_allclose(st[:, 0], -nll, atol=1e-5)  # float64 vs float32
        assert (st[:, 2] > 0).all()


def test_reference_roles(lm_tiny):
    """reference="original": the original's own scores are all 0 (AUC exactly 0.5) and the
    oracle, which never saw the forget rows, scores them far below held-out rows (AUC 0.05
    measured); reference="oracle": the oracle's own scores are 0."""
    by_original = _audit(lm_tiny, "mia-reference", {})
    assert not by_original.arrays["original.scores"].any()
    assert by_original.metrics["original.auc"] == 0.5
    assert by_original.metrics["oracle.auc"] < 0.2  # measured 0.050
    by_oracle = _audit(lm_tiny, "mia-reference", {"reference": "oracle"})
    assert not by_oracle.arrays["oracle.scores"].any()
    with pytest.raises(ValueError, match="reference"):
        AUDITS.build("mia-reference", {"reference": "base"})
