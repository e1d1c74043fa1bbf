"""Scoring for membership audits, in numpy only: ROC, AUC, TPR at a fixed FPR, balanced accuracy,
bootstrap and t confidence intervals, and the per-example Gaussian likelihood ratios of LiRA.

RMIA's pairwise score against population samples is here too (``rmia_score``).

Conventions: a higher score means "member"; ``is_member`` is 1 for members (e.g. the forget
set on the original model), 0 for non-members (held-out test data). Signals from K shadow
models on N examples are (K, N) arrays with a (K, N) bool mask saying which entries count.

LiRA scoring follows the reference code of Carlini et al. 2022 ("Membership Inference Attacks
From First Principles", arXiv:2112.03570; tensorflow/privacy ``research/mi_lira_2021/score.py``)
and names where it departs from the paper's text:

- the centre of each Gaussian is the **median** of the shadow signals (``center="median"``),
  the spread is the population standard deviation (ddof 0);
- every example is truncated to the smallest IN and OUT counts found over all examples, keeping
  the first models in order (``truncate=True``); an example with no IN (or OUT) shadow has no
  Gaussian, and we raise instead of returning NaN scores;
- the offline test of the reference code is **two-sided**: a low OUT density means "member",
  whether the signal lies above or below the OUT centre (``offline_score(test="two-sided")``);
  the paper's text describes the **one-sided** test, Pr[Z < signal] under OUT
  (``test="one-sided"``), which we rank by its z-score: the same order, without the ties that
  a CDF rounding to 1.0 in float64 would create at the low-FPR end;
- ``fix_variance`` uses one global standard deviation per population, the standard deviation
  of all its selected values pooled over examples, as the reference computes it (its online
  code then takes the IN population's for both Gaussians, a quirk we do not copy);
- TPR at a given FPR is read at the last ROC point with FPR strictly below the target, without
  interpolation (``tpr_at``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "CI",
    "attack_metrics",
    "auc",
    "balanced_accuracy",
    "bootstrap_ci",
    "gaussian_fit",
    "gaussian_llr",
    "gaussian_logpdf",
    "mean_ci",
    "offline_score",
    "rmia_score",
    "roc",
    "t_quantile",
    "tpr_at",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every threshold, from (0, 0) to (1, 1); ties are one step."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    if scores.shape != y.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and is_member {y.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs members and non-members (got {n_pos} and {n_neg})")
    if not np.isfinite(scores).all():
        raise ValueError("ROC scores must be finite (got NaN or inf)")
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp = np.cumsum(yy)[distinct]
    fp = np.cumsum(~yy)[distinct]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count one half)."""
    return float(np.trapezoid(tpr, fpr))


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at the last ROC point with FPR strictly below ``target`` (LiRA's convention)."""
    ok = np.flatnonzero(fpr < target)
    return float(tpr[ok[-1]]) if ok.size else 0.0


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The best balanced accuracy over all thresholds, max (TPR + TNR) / 2 (LiRA's "acc").

    0.5 is chance; an attack that separates members perfectly scores 1.
    """
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def attack_metrics(
    scores: np.ndarray, is_member: np.ndarray, *, fprs: tuple[float, ...] = (0.01, 0.001)
) -> dict[str, float]:
    """{"auc", "balanced_acc", "tpr@<fpr>"...} of a membership score: one call per audit."""
    fpr, tpr = roc(scores, is_member)
    out = {"auc": auc(fpr, tpr), "balanced_acc": balanced_accuracy(fpr, tpr)}
    for a in fprs:
        out[f"tpr@{a:g}"] = tpr_at(fpr, tpr, a)
    return out


# -- confidence intervals ------------------------------------------------------------------------
class CI(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> CI:
    """Percentile bootstrap CI of ``statistic(*arrays)``, resampling examples (rows) jointly.

    ``strata`` (e.g. ``is_member``) resamples within each stratum, so that every resample keeps
    the original number of members and non-members (an AUC needs both). Seeded: the same
    ``seed`` gives the same interval.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"all arrays must have the same length, got {[len(a) for a in arrays]}")
    groups = (
        [np.arange(n)]
        if strata is None
        else [np.flatnonzero(np.asarray(strata) == v) for v in np.unique(strata)]
    )
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        stats[b] = statistic(*(a[idx] for a in arrays))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return CI(float(statistic(*arrays)), float(low), float(high))


def _t_cdf(t: float, df: int) -> float:
    """Student-t CDF for an integer ``df`` >= 1, by the finite series of Abramowitz & Stegun
    26.7.3-4 (exact up to rounding; no special functions needed)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: A = (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = (2.0 / math.pi) * (theta + s * math.cos(theta) * total)
    else:  # even: A = sin (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` degrees of freedom (bisection on
    the exact CDF; agrees with scipy.stats.t.ppf to about 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:  # the quantile is finite; double until bracketed
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: np.ndarray, *, level: float = 0.95) -> CI:
    """Mean over seeds with a t-interval: mean +/- t_{(1+level)/2, n-1} * s / sqrt(n).

    With one value the bounds are NaN (no spread can be estimated); NaN values are dropped.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("mean_ci needs at least one non-NaN value")
    m = float(v.mean())
    if v.size == 1:
        return CI(m, float("nan"), float("nan"))
    half = t_quantile(0.5 + level / 2.0, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return CI(m, m - half, m + half)


# -- LiRA: per-example Gaussians over shadow signals -----------------------------------------------
def gaussian_logpdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log N(x; mu, sigma^2), elementwise with broadcasting."""
    z = (np.asarray(x, dtype=np.float64) - mu) / sigma
    return -0.5 * z * z - np.log(sigma) - _LOG_SQRT_2PI


def _as_kna(signals: np.ndarray) -> np.ndarray:
    s = np.asarray(signals, dtype=np.float64)
    if s.ndim == 2:
        return s[:, :, None]  # (K, N, 1): one query per example
    if s.ndim != 3:
        raise ValueError(f"shadow signals must be (K, N) or (K, N, A), got shape {s.shape}")
    return s


def gaussian_fit(
    signals: np.ndarray,
    mask: np.ndarray,
    *,
    center: Literal["median", "mean"] = "median",
    fix_variance: bool = False,
    truncate: bool = True,
    eps: float = 1e-30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example Gaussian of the shadow signals selected by ``mask``.

    ``signals`` (K, N) or (K, N, A) with A queries (augmentations) per example, each fitted on
    its own; ``mask`` (K, N) bool. Returns (mu, sigma, counts): mu and sigma (N, A), counts (N,)
    the number of shadows used per example. ``truncate`` keeps, for every example, only the
    first m selected models, m the smallest count over examples (the reference code's rule).
    ``eps`` is added to sigma, as in the reference code, so that a constant signal stays finite.
    """
    s = _as_kna(signals)
    m = np.asarray(mask, dtype=bool)
    if m.shape != s.shape[:2]:
        raise ValueError(f"mask {m.shape} must match the signals' (K, N) = {s.shape[:2]}")
    counts = m.sum(0)
    if counts.size and counts.min() == 0:
        bad = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(
            f"examples {bad} have no shadow model in this population, so no Gaussian can be "
            f"fitted (LiRA's reference code would return NaN scores). Use more shadow models or "
            f"a balanced membership matrix (shadows.balanced_membership)."
        )
    if truncate and counts.size:
        m = m & (np.cumsum(m, axis=0) <= counts.min())  # the first m models of each example
        counts = m.sum(0)
    if center not in ("median", "mean"):
        raise ValueError(f"center must be 'median' or 'mean', got {center!r}")
    vals = np.where(m[:, :, None], s, np.nan)  # (K, N, A), NaN where not selected
    mu = np.nanmedian(vals, axis=0) if center == "median" else np.nanmean(vals, axis=0)
    if fix_variance:
        # the reference's np.std(dat_in): every selected value pooled, between-example spread
        # included, one number for the whole population
        sigma = np.full(mu.shape, np.nanstd(vals))
    else:
        sigma = np.nanstd(vals, axis=0)
    return mu, sigma + eps, counts


def _as_na(target: np.ndarray, n: int, a: int) -> np.ndarray:
    t = np.asarray(target, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    if t.shape != (n, a):
        raise ValueError(f"target signals {t.shape} must be (N,) or (N, A) = ({n}, {a})")
    return t


def gaussian_llr(
    target: np.ndarray,
    signals: np.ndarray,
    is_in: np.ndarray,
    *,
    center: Literal["median", "mean"] = "median",
    fix_variance: bool = False,
    truncate: bool = True,
) -> np.ndarray:
    """Online LiRA: log N(target; IN) - log N(target; OUT) per example, (N,).

    ``target`` (N,) or (N, A): the audited model's signal; ``signals`` (K, N[, A]) the shadows'
    signals; ``is_in`` (K, N) bool, True where shadow k is IN for example n (trained on it, or,
    for U-LiRA, trained on it and then unlearned it). The log-likelihood ratios of the A
    queries are averaged. Higher means "member".
    """
    s = _as_kna(signals)
    is_in = np.asarray(is_in, dtype=bool)
    t = _as_na(target, s.shape[1], s.shape[2])
    kw = {"center": center, "fix_variance": fix_variance, "truncate": truncate}
    mu_in, sd_in, _ = gaussian_fit(s, is_in, **kw)
    mu_out, sd_out, _ = gaussian_fit(s, ~is_in, **kw)
    llr = gaussian_logpdf(t, mu_in, sd_in) - gaussian_logpdf(t, mu_out, sd_out)
    return llr.mean(axis=1)


def offline_score(
    target: np.ndarray,
    signals: np.ndarray,
    is_out: np.ndarray,
    *,
    test: Literal["one-sided", "two-sided"] = "one-sided",
    center: Literal["median", "mean"] = "median",
    fix_variance: bool = False,
    truncate: bool = True,
) -> np.ndarray:
    """Offline LiRA (OUT shadows only), (N,), higher means "member".

    ``"one-sided"`` (the paper's text): how far the target's signal lies *above* the OUT
    Gaussian, the z-score (target - mu_out) / sigma_out (ranked like Pr[Z < target]).
    ``"two-sided"`` (the reference code): the negative OUT log-density, high when the signal is
    unusual in *either* direction. A queries (augmentations) are averaged.
    """
    s = _as_kna(signals)
    t = _as_na(target, s.shape[1], s.shape[2])
    mu, sd, _ = gaussian_fit(s, is_out, center=center, fix_variance=fix_variance, truncate=truncate)
    if test == "one-sided":
        return ((t - mu) / sd).mean(axis=1)
    if test == "two-sided":
        return -gaussian_logpdf(t, mu, sd).mean(axis=1)
    raise ValueError(f"test must be 'one-sided' or 'two-sided', got {test!r}")


# -- RMIA: pairwise likelihood ratios against a population ----------------------------------------
def rmia_score(ratio_x: np.ndarray, ratio_z: np.ndarray, *, gamma: float = 1.0) -> np.ndarray:
    """RMIA's score (Zarifzadeh et al. 2024, arXiv:2312.03262): for each x, the fraction of
    population samples z with LR(x) / LR(z) >= gamma, where LR = Pr(.|theta) / Pr(.).

    ``ratio_x`` (N,) and ``ratio_z`` (Z,) are the likelihood ratios, > 0. Computed by sorting
    (N log Z), not by the N x Z comparison matrix. Higher means "member".
    """
    rx = np.asarray(ratio_x, dtype=np.float64)
    rz = np.sort(np.asarray(ratio_z, dtype=np.float64))
    if rz.size == 0:
        raise ValueError("RMIA needs at least one population sample z")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    # LR(x) / LR(z) >= gamma  <=>  LR(z) <= LR(x) / gamma  (all ratios positive)
    return np.searchsorted(rz, rx / gamma, side="right") / rz.size
