"""stats.py against hand-computed cases: ROC/AUC/TPR, balanced accuracy, bootstrap and t
intervals, and LiRA's per-example Gaussian scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obliviate.audits.stats import (
    CI,
    attack_metrics,
    auc,
    balanced_accuracy,
    bootstrap_ci,
    gaussian_fit,
    gaussian_llr,
    gaussian_logpdf,
    mean_ci,
    offline_score,
    rmia_score,
    roc,
    t_quantile,
    tpr_at,
)

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# -- ROC family ----------------------------------------------------------------------------------
def test_roc_auc_tpr_by_hand():
    # ranks: M N M N -> ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1); AUC = 3/4
    fpr, tpr = roc(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert auc(fpr, tpr) == pytest.approx(0.75)
    assert tpr_at(fpr, tpr, 0.5) == 0.5  # last point with FPR strictly below 0.5
    assert tpr_at(fpr, tpr, 0.51) == 1.0
    assert tpr_at(fpr, tpr, 0.0) == 0.0
    assert balanced_accuracy(fpr, tpr) == pytest.approx(0.75)


def test_ties_count_one_half():
    fpr, tpr = roc(np.array([1.0, 1.0]), np.array([1, 0]))
    assert auc(fpr, tpr) == 0.5
    assert balanced_accuracy(fpr, tpr) == 0.5


def test_balanced_accuracy_perfect_and_inverted():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert balanced_accuracy(*roc(s, np.array([1, 1, 0, 0]))) == 1.0
    # an inverted attack is at chance by this measure (the threshold "all members" gives 0.5)
    assert balanced_accuracy(*roc(s, np.array([0, 0, 1, 1]))) == 0.5


def test_attack_metrics_keys_and_values():
    m = attack_metrics(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]), fprs=(0.5, 0.01))
    assert m == {"auc": 0.75, "balanced_acc": 0.75, "tpr@0.5": 0.5, "tpr@0.01": 0.5}


def test_roc_rejects_bad_input():
    with pytest.raises(ValueError, match="members and non-members"):
        roc(np.array([1.0, 2.0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="finite"):
        roc(np.array([np.nan, 2.0]), np.array([1, 0]))


# -- intervals -----------------------------------------------------------------------------------
def test_bootstrap_ci_constant_and_seeded():
    assert bootstrap_ci(np.mean, np.full(10, 3.0), n_boot=50) == CI(3.0, 3.0, 3.0)
    x = np.random.default_rng(0).normal(size=200)
    a = bootstrap_ci(np.mean, x, n_boot=400, seed=1)
    b = bootstrap_ci(np.mean, x, n_boot=400, seed=1)
    c = bootstrap_ci(np.mean, x, n_boot=400, seed=2)
    assert a == b and a != c
    assert a.estimate == pytest.approx(x.mean())
    assert a.low < a.estimate < a.high
    # the percentile interval of a mean is close to +/- 1.96 s / sqrt(n) (measured ratio 0.95)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert (a.high - a.low) / (2 * half) == pytest.approx(1.0, abs=0.15)


def test_bootstrap_ci_strata_keep_class_counts():
    y = np.r_[np.ones(5), np.zeros(95)]
    # without strata some resamples have no member; with strata every one has exactly 5
    ci = bootstrap_ci(np.mean, y, n_boot=200, strata=y)
    assert ci == CI(0.05, 0.05, 0.05)
    s = np.r_[np.arange(5) + 10.0, np.arange(95) / 10]
    auc_ci = bootstrap_ci(lambda a, b: auc(*roc(a, b)), s, y, n_boot=100, strata=y)
    assert auc_ci == pytest.approx((1.0, 1.0, 1.0))


def test_t_quantile_table_values():
    # two-sided 95% critical values from a printed t table
    table = {
        1: 12.7062047,
        2: 4.3026527,
        4: 2.7764451,
        9: 2.2621572,
        29: 2.0452296,
        1000: 1.9623391,
    }
    for df, q in table.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6), df
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764451, abs=1e-6)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.95, 1) == pytest.approx(6.3137515, abs=1e-6)


def test_t_quantile_matches_scipy():
    st = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 8, 17, 64):
        for p in (0.6, 0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(st.t.ppf(p, df), rel=1e-9, abs=1e-9)


def test_mean_ci_by_hand():
    ci = mean_ci(np.array([1.0, 2.0, 3.0]))
    half = 4.3026527 * 1.0 / math.sqrt(3)  # t_{.975,2} * s / sqrt(n), s = 1
    assert ci.estimate == 2.0
    assert ci.low == pytest.approx(2 - half, abs=1e-6)
    assert ci.high == pytest.approx(2 + half, abs=1e-6)
    one = mean_ci(np.array([5.0]))
    assert one.estimate == 5.0 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci(np.array([1.0, np.nan, 3.0])).estimate == 2.0


# -- LiRA ----------------------------------------------------------------------------------------
def test_gaussian_logpdf_by_hand():
    assert gaussian_logpdf(0.0, 0.0, 1.0) == pytest.approx(-LOG_SQRT_2PI)
    assert gaussian_logpdf(3.0, 1.0, 2.0) == pytest.approx(-0.5 - math.log(2) - LOG_SQRT_2PI)


def test_gaussian_fit_median_std_and_truncation():
    signals = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0], [10.0, 100.0]])  # (K=4, N=2)
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], dtype=bool)  # counts 4 and 3
    mu, sd, n = gaussian_fit(signals, mask, truncate=False, eps=0.0)
    assert n.tolist() == [4, 3]
    np.testing.assert_allclose(mu[:, 0], [2.5, 6.0])  # medians, not means
    np.testing.assert_allclose(sd[:, 0], [np.std([1, 2, 3, 10]), np.std([5, 6, 7])])
    # truncation: every example keeps its first min-count (3) models, as the reference does
    mu, sd, n = gaussian_fit(signals, mask, truncate=True, eps=0.0)
    assert n.tolist() == [3, 3]
    np.testing.assert_allclose(mu[:, 0], [2.0, 6.0])
    mu, _, _ = gaussian_fit(signals, mask, center="mean", truncate=False)
    np.testing.assert_allclose(mu[:, 0], [4.0, 6.0])
    # fixed variance: one std over every selected value of the population, pooled
    _, sd, _ = gaussian_fit(signals, mask, fix_variance=True, truncate=False, eps=0.0)
    np.testing.assert_allclose(sd[:, 0], np.std([1, 2, 3, 10, 5, 6, 7]))


def test_gaussian_fit_refuses_empty_population():
    with pytest.raises(ValueError, match="no shadow model"):
        gaussian_fit(np.zeros((2, 2)), np.array([[1, 0], [1, 0]], dtype=bool))


def test_online_and_offline_scores_by_hand():
    # one example; IN shadows {1, 3}: median 2, std 1; OUT shadows {-1, 1}: median 0, std 1
    signals = np.array([[1.0], [3.0], [-1.0], [1.0]])
    is_in = np.array([[1], [1], [0], [0]], dtype=bool)
    target = np.array([2.0])
    # log N(2; 2, 1) - log N(2; 0, 1) = 0 - (-2) = 2
    assert gaussian_llr(target, signals, is_in)[0] == pytest.approx(2.0)
    assert offline_score(target, signals, ~is_in, test="one-sided")[0] == pytest.approx(2.0)
    two = offline_score(target, signals, ~is_in, test="two-sided")[0]
    assert two == pytest.approx(2.0 + LOG_SQRT_2PI)
    # below the OUT centre: one-sided says "non-member", two-sided says "unusual, member"
    low = np.array([-2.0])
    assert offline_score(low, signals, ~is_in, test="one-sided")[0] == pytest.approx(-2.0)
    assert offline_score(low, signals, ~is_in, test="two-sided")[0] == pytest.approx(two)


def test_llr_vectorised_over_examples_and_augmentations():
    rng = np.random.default_rng(0)
    k, n = 16, 50
    is_in = rng.random((k, n)) < 0.5
    is_in[0], is_in[1] = True, False  # every example has both populations
    signals = rng.normal(size=(k, n)) + 3.0 * is_in
    target = rng.normal(size=n)
    vec = gaussian_llr(target, signals, is_in, truncate=False)
    for j in (0, 17, 49):  # the same as a per-example loop
        s_in, s_out = signals[is_in[:, j], j], signals[~is_in[:, j], j]
        want = gaussian_logpdf(target[j], np.median(s_in), s_in.std() + 1e-30) - gaussian_logpdf(
            target[j], np.median(s_out), s_out.std() + 1e-30
        )
        assert vec[j] == pytest.approx(want)
    # two identical augmentations average to the single-query score
    aug = gaussian_llr(
        np.stack([target, target], 1), np.stack([signals, signals], 2), is_in, truncate=False
    )
    np.testing.assert_allclose(aug, vec)
    # members (target drawn from IN) score higher than non-members
    members = gaussian_llr(rng.normal(size=n) + 3.0, signals, is_in)
    y = np.r_[np.ones(n), np.zeros(n)]
    # (measured 0.88 with truncation to the smallest IN/OUT count of these random memberships)
    assert auc(*roc(np.r_[members, gaussian_llr(target, signals, is_in)], y)) > 0.8


# -- RMIA ----------------------------------------------------------------------------------------
def test_rmia_score_by_hand_and_brute_force():
    z = np.array([1.0, 1.0, 4.0])
    np.testing.assert_allclose(rmia_score(np.array([2.0, 0.5, 4.0]), z), [2 / 3, 0.0, 1.0])
    np.testing.assert_allclose(rmia_score(np.array([2.0, 8.0]), z, gamma=2.0), [2 / 3, 1.0])
    rng = np.random.default_rng(0)
    rx, rz = rng.lognormal(size=40), rng.lognormal(size=30)
    brute = ((rx[:, None] / rz[None, :]) >= 1.5).mean(1)
    np.testing.assert_allclose(rmia_score(rx, rz, gamma=1.5), brute)
    with pytest.raises(ValueError, match="population"):
        rmia_score(rx, np.zeros(0))
