"""The NeurIPS 2023 Machine Unlearning Challenge score (Triantafillou et al., "Are we making
progress in unlearning? Findings from the first NeurIPS unlearning competition",
arXiv:2406.09073; the official google-deepmind/unlearning_evaluation ``metric.py``).

N models unlearned from one original (different unlearning seeds) are compared with N models
retrained without the forget set. For each forget example, the two populations of logit-scaled
confidences are attacked with every threshold rule of a grid; the best rule's false-positive and
false-negative rates give an (epsilon, delta) bound, epsilon is turned into points (1 for
epsilon < 0.5, halving per 0.5), and the forget score F is the mean over the forget set. The
final score multiplies F by the unlearned-to-retrained ratios of mean retain and test accuracy.

Notation (``metric.py``): per example, ``pos`` is the population with the larger median
(unlearned on ties), ``neg`` the other; rates are over the N models;
eps = max over rules of max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR).

What is reproduced from ``metric.py`` (each changes the numbers; see also methods.md section B):
- the signal is the logit-scaled confidence log p_y - log sum_{j != y} p_j in natural-log units
  (computed stably from the logits; ``metric.py`` saturates near +-103 through its 1e-45 guard);
- two rule families on a grid of 100 thresholds per unit: a single cut-off ("pos" if >= t, the
  thresholds as torch's float32 ``linspace``, as there), and a band [l, r] whose inside is the
  narrower population (right ends from its min + width - 2 to its max + 2, 400 left ends per
  right end within +-2 of r - width, width = the narrower range);
- rates in float32 (count / N), epsilon in float32, delta = 1e-5;
- rules with FPR = FNR = 0 give infinity, rules with exactly one of FPR, FNR = 0 are dropped,
  epsilon is clipped to [0, 50]; if one population's range is below 1% of the other's ("peaky",
  e.g. a deterministic unlearner), epsilon = 50;
- points 1, 1/2, 1/4... for bins [0, 0.5), [0.5, 1)... up to ceil(log(N - 1)); beyond, 0.
Where ``metric.py`` crashes (every rule dropped, e.g. both populations constant and equal), the
example gets epsilon = 0: no rule tells them apart.

A perfect unlearner does not score 1: with both populations drawn independently from one
distribution the median epsilon is about log 5 and F about 0.17-0.18 at any N. Only
sample-for-sample identical populations score 1. So the audit reports, beside the score, its
ceiling: the same score for a second, independent population of N retrained models against the
first (2N retrains in all).

Rows without a method (``ctx.method is None``): the oracle row's "unlearned population" is the
second half of the retrains, so its score *is* the ceiling; any other model (the original row)
is scored as a deterministic unlearner, N identical copies of it, which is what the challenge
gives a submission that returns the original: 0 wherever the retrains vary (the peaky rule).

Scale-down: the challenge used N = 512; the default here is N = 16 (32 retrains of the
benchmark's recipe, cached and shared by every method of a run seed), so the bins stop at
ceil(log 15) = 3 (six bins). Spread of the estimator, measured on synthetic populations of one
law (N(0, 1), 500 examples, 5 independent draws): F = 0.175 +- 0.005 at N = 16, 0.183 +- 0.006
at N = 32; the forget-set average shrinks that as 1/sqrt(M), so small forget sets are noisier.
The challenge's grid is in absolute units (0.01, band reach +-2), so F also depends on the
signal's scale (0.14-0.22 for N(0, s) with s from 0.3 to 10): compare methods with the ceiling
of the same run, over seeds.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from obliviate.audits.signals import logit_scaled_confidence, predict_logits
from obliviate.loop import derive_seed, seeded
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = [
    "DELTA",
    "EPSILON_CAP",
    "Epsilon",
    "bin_points",
    "challenge_score",
    "example_epsilon",
    "forget_score",
    "per_example_epsilon",
]

DELTA = 1e-5  # the challenge's delta
EPSILON_CAP = 50.0  # epsilon is clipped to [0, EPSILON_CAP]; the peaky rule gives the cap
GRID_PER_UNIT = 100  # thresholds per unit of logit-scaled confidence (a 0.01 grid)
BAND_BUFFER = 2.0  # how far band thresholds reach beyond the narrower population
PEAKY_RATIO = 0.01  # range ratio below which a population counts as a point mass
BIN_WIDTH = 0.5  # epsilon bins; points halve from one bin to the next


def _single_thresholds(lo: float, hi: float) -> np.ndarray:
    """The single cut-offs of ``metric.py``: torch.linspace in float32 (its default dtype)."""
    n = int(np.ceil((hi - lo) * GRID_PER_UNIT))
    return torch.linspace(lo, hi, n, dtype=torch.float32).numpy().astype(np.float64)


def _rate(count: np.ndarray, n: int) -> np.ndarray:
    # float32 division is correctly rounded, like torch.mean of float32 0/1 on CPU
    return np.asarray(count).astype(np.float32) / np.float32(n)


@functools.lru_cache(maxsize=16)
def _epsilon_table(n: int, delta: float) -> np.ndarray:
    """(N+1, N+1) float32: epsilon of a rule that calls c_pos of the N ``pos`` signals and c_neg
    of the N ``neg`` signals positive, indexed [c_pos, c_neg]; inf for perfect separation, NaN
    for a dropped rule (exactly one of FPR, FNR zero). A rule's epsilon depends only on these
    two counts, so every threshold reads this table instead of recomputing the logs."""
    c = np.arange(n + 1)
    tpr, fnr = _rate(c, n)[:, None], _rate(n - c, n)[:, None]  # (N+1, 1): over c_pos
    fpr, tnr = _rate(c, n)[None, :], _rate(n - c, n)[None, :]  # (1, N+1): over c_neg
    one = np.float32(1.0 - delta)  # metric.py's `1 - delta - fpr` on float32 rates
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log(one - fpr) - np.log(fnr), np.log(one - fnr) - np.log(fpr))
    eps = np.clip(eps, 0, None)
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    eps = np.where(perfect, np.float32(np.inf), eps)
    return np.where(~perfect & (fpr * fnr == 0), np.float32(np.nan), eps).astype(np.float32)


def _band_left_index(v: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """K[j, i] = #{k : left[j, k] <= v[i]}, (R, V), where left[j] is
    np.linspace(start[j], stop[j], 400), i.e. k * step_j + start_j with the last end = stop_j,
    evaluated exactly (an estimate from the step, then corrected against those values)."""
    num = int(np.ceil(2 * BAND_BUFFER * GRID_PER_UNIT))
    step = ((stop - start) / (num - 1))[:, None]  # (R, 1)
    start_, stop_ = start[:, None], stop[:, None]

    def left(k: np.ndarray) -> np.ndarray:
        return np.where(k == num - 1, stop_, k * step + start_)

    vv = v[None, :]
    k = np.clip(np.floor((vv - start_) / step) + 1, 0, num).astype(np.int64)  # (R, V)
    for _ in range(4):  # the estimate is off by at most one grid step; correct it
        down = (k > 0) & (left(np.maximum(k - 1, 0).astype(np.float64)) > vv)
        up = (k < num) & (left(np.minimum(k, num - 1).astype(np.float64)) <= vv)
        if not (down.any() or up.any()):
            return k
        k = k - down + up
    raise RuntimeError("band threshold index did not converge")  # unreachable for finite data


def example_epsilon(pos: np.ndarray, neg: np.ndarray, *, delta: float = DELTA) -> float:
    """The challenge's epsilon for one example: ``pos`` (N,) the population with the larger
    median, ``neg`` (N,) the other (the caller assigns them; see ``per_example_epsilon``)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    n = len(pos)
    table = _epsilon_table(n, float(delta))
    # 1. The peaky rule: a point mass against a spread population gets the cap.
    pos_range, neg_range = pos.max() - pos.min(), neg.max() - neg.min()
    largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
    if largest > 0 and smallest / largest < PEAKY_RATIO:
        return EPSILON_CAP
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    # 2. Single cut-offs: ">= t" -> pos. Counts of each population at or above each t.
    thr = _single_thresholds(min(pos.min(), neg.min()), max(pos.max(), neg.max()))
    c_pos = n - np.searchsorted(pos_sorted, thr, "left")
    c_neg = n - np.searchsorted(neg_sorted, thr, "left")
    reached = [table[c_pos, c_neg]]
    # 3. Band rules: inside [l, r] -> the narrower population (ties: ``neg``, as in metric.py).
    narrow, wide = (neg_sorted, pos_sorted) if pos_range >= neg_range else (pos_sorted, neg_sorted)
    width = smallest
    lo, hi = narrow.min() + width - BAND_BUFFER, narrow.max() + BAND_BUFFER
    right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * GRID_PER_UNIT)))  # (R,)
    if right.size:
        # inside = #(v <= r) - #(v < l); for right end j, #(v < left[j, k]) = #{v: K[j, v] <= k},
        # a step function of k that changes only at the K values: evaluating the counts at
        # k = 0 and at every K visits every (inside_narrow, inside_wide) pair of the 400 rules.
        k_narrow = _band_left_index(
            narrow, right - width - BAND_BUFFER, right - width + BAND_BUFFER
        )
        k_wide = _band_left_index(wide, right - width - BAND_BUFFER, right - width + BAND_BUFFER)
        rows = len(right)
        cand = np.concatenate([np.zeros((rows, 1), np.int64), k_narrow, k_wide], axis=1)
        cand = np.where(cand > 2 * BAND_BUFFER * GRID_PER_UNIT - 1, 0, cand)  # K = 400: no rule
        offset = (np.arange(rows, dtype=np.int64) * 1000)[:, None]  # row-wise search, one call

        def below(k_sorted: np.ndarray) -> np.ndarray:  # (R, C): #{v : K[j, v] <= cand[j, c]}
            flat = (np.sort(k_sorted, axis=1) + offset).ravel()
            idx = np.searchsorted(flat, (cand + offset).ravel(), "right").reshape(rows, -1)
            return idx - (np.arange(rows) * n)[:, None]

        upto_narrow = np.searchsorted(narrow, right, "right")[:, None]  # (R, 1): #(v <= r)
        upto_wide = np.searchsorted(wide, right, "right")[:, None]
        in_narrow = np.maximum(upto_narrow - below(k_narrow), 0)
        in_wide = np.maximum(upto_wide - below(k_wide), 0)
        reached.append(table[in_narrow, in_wide].ravel())
    # 4. The best surviving rule; metric.py asserts when none survives: no rule separates them.
    eps = np.concatenate(reached)
    eps = eps[~np.isnan(eps)]
    if eps.size == 0:
        return 0.0
    return float(np.clip(eps.max(), 0.0, EPSILON_CAP))


def per_example_epsilon(
    unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA
) -> np.ndarray:
    """Epsilon per forget example, (M,), from signals of shape (N, M) (models x examples)."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if u.ndim != 2 or u.shape != r.shape:
        raise ValueError(
            f"unlearned {u.shape} and retrained {r.shape} must both be (n_models, n_examples)"
        )
    if u.shape[0] < 3:
        raise ValueError(f"the score needs at least 3 models per population, got {u.shape[0]}")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("signals must be finite; use the logit-scaled confidence of the logits")
    # the positive population, per example, is the one with the larger median (unlearned on ties)
    retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_pos, r, u)
    neg = np.where(retrain_pos, u, r)
    return np.array([example_epsilon(pos[:, i], neg[:, i], delta=delta) for i in range(u.shape[1])])


def bin_points(eps: np.ndarray, n_models: int) -> np.ndarray:
    """Points per example: 1, 1/2, 1/4... for epsilon in [0, .5), [.5, 1)... below
    ceil(log(N - 1)); 0 beyond."""
    max_eps = np.ceil(np.log(n_models - 1))
    n_bins = int(max_eps / BIN_WIDTH)
    ends = BIN_WIDTH * np.arange(1, n_bins + 1)  # (B,) the bins' right ends
    k = np.searchsorted(ends, np.asarray(eps, np.float64), side="right")  # first end > eps
    return np.where(k < n_bins, 0.5**k, 0.0)


def forget_score(
    unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA
) -> tuple[float, np.ndarray]:
    """(F, per-example epsilon) from (N, M) signals of the two populations."""
    eps = per_example_epsilon(unlearned, retrained, delta=delta)
    return float(bin_points(eps, np.shape(unlearned)[0]).mean()), eps


def challenge_score(
    forget: float, *, retain_u: float, retain_r: float, test_u: float, test_r: float
) -> float:
    """F * (RA_u / RA_r) * (TA_u / TA_r), from mean accuracies; not capped at 1."""
    return float(forget * (retain_u / retain_r) * (test_u / test_r))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@AUDITS.register("epsilon")
@dataclass(frozen=True)
class Epsilon:
    """NeurIPS 2023 Unlearning Challenge score, with its retrained-vs-retrained ceiling."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    n_models: int = 16  # N per population (challenge: 512); 2N retrains are trained and cached
    delta: float = DELTA  # the delta of the (epsilon, delta) bound
    max_retain: int = 5000  # retain examples for RA (seeded subsample beyond; 0 = all)

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        from tqdm.auto import tqdm

        if self.n_models < 3:
            raise ValueError(
                f"n_models must be >= 3 (the score's bins need it), got {self.n_models}"
            )
        n = self.n_models
        retain = splits.retain
        if self.max_retain and len(retain) > self.max_retain:
            rng = np.random.default_rng(derive_seed(ctx.seed, "epsilon-retain"))
            retain = retain.subset(np.sort(rng.choice(len(retain), self.max_retain, replace=False)))
        y_forget = splits.forget.y.numpy()

        def acc(model: nn.Module, data: Data) -> float:
            return float((predict_logits(model, data, task).argmax(1) == data.y.numpy()).mean())

        def signals(model: nn.Module) -> tuple[np.ndarray, float, float, float]:
            logits = predict_logits(model, splits.forget, task)
            conf = logit_scaled_confidence(logits, y_forget)
            fa = float((logits.argmax(1) == y_forget).mean())
            return conf, acc(model, retain), acc(model, splits.test), fa

        progress = bool(getattr(ctx, "progress", False))
        # 1. 2N retrains on the retain set (cached; the first N are the reference population),
        # trained in parallel through the run's executor.
        seeds = [derive_seed(ctx.seed, "epsilon-retrain", i) for i in range(2 * n)]
        models = ctx.train_many([splits.retain_idx] * (2 * n), seeds=seeds, kind="retrain")
        retrains = [signals(m) for m in models]
        del models
        ref, other = retrains[:n], retrains[n:]
        # 2. The unlearned population (see the module notes for the rows without a method).
        method = getattr(ctx, "method", None)
        if method is not None:
            population = []
            for i in tqdm(range(n), desc="epsilon: unlearn", disable=not progress, leave=False):
                model = copy.deepcopy(original)
                with seeded(derive_seed(ctx.seed, "epsilon-unlearn", i)):
                    model = method.unlearn(
                        model, splits.forget, splits.retain, task=task, budget=ctx.budget
                    )
                population.append(signals(model.eval()))
            row = "method"
        elif _same_weights(unlearned, ctx.oracle):
            population, row = other, "oracle"
        else:
            population, row = [signals(unlearned)] * n, "deterministic"

        def stack(pop: list) -> tuple[np.ndarray, np.ndarray]:
            return np.stack([p[0] for p in pop]), np.array([p[1:] for p in pop])  # (N,M), (N,3)

        u_conf, u_acc = stack(population)
        r_conf, r_acc = stack(ref)
        o_conf, o_acc = stack(other)
        # 3. Scores: the audited population vs retrains, and retrains vs retrains (the ceiling).
        f_u, eps_u = forget_score(u_conf, r_conf, delta=self.delta)
        f_c, eps_c = (
            (f_u, eps_u) if row == "oracle" else forget_score(o_conf, r_conf, delta=self.delta)
        )
        (ra_u, ta_u, fa_u), (ra_r, ta_r, fa_r), (ra_o, ta_o, _) = (
            u_acc.mean(0), r_acc.mean(0), o_acc.mean(0)
        )  # fmt: skip
        score = challenge_score(f_u, retain_u=ra_u, retain_r=ra_r, test_u=ta_u, test_r=ta_r)
        ceiling = challenge_score(f_c, retain_u=ra_o, retain_r=ra_r, test_u=ta_o, test_r=ta_r)
        metrics = {
            "score": score,
            "forget_score": f_u,
            "ceiling_score": ceiling,
            "ceiling_forget_score": f_c,
            "forget_score_to_ceiling": f_u / f_c if f_c > 0 else float("nan"),
            "median_epsilon": float(np.median(eps_u)),
            "ceiling_median_epsilon": float(np.median(eps_c)),
            "frac_capped": float((eps_u >= EPSILON_CAP).mean()),
            "retain_acc": float(ra_u),
            "test_acc": float(ta_u),
            "forget_acc": float(fa_u),
            "retrain_retain_acc": float(ra_r),
            "retrain_test_acc": float(ta_r),
            "retrain_forget_acc": float(fa_r),
            "n_models": float(n),
        }
        if not np.isfinite(metrics["forget_score_to_ceiling"]):
            del metrics["forget_score_to_ceiling"]
        bins = BIN_WIDTH * np.arange(int(np.ceil(np.log(n - 1)) / BIN_WIDTH) + 1)
        curves = {
            "epsilon_hist": {
                "bin_start": bins.tolist(),
                "frac": np.histogram(eps_u, np.r_[bins, np.inf])[0].astype(float).tolist(),
                "ceiling_frac": np.histogram(eps_c, np.r_[bins, np.inf])[0].astype(float).tolist(),
            }
        }
        for key in ("frac", "ceiling_frac"):
            curves["epsilon_hist"][key] = [c / len(eps_u) for c in curves["epsilon_hist"][key]]
        notes = [
            f"N = {n} per population; population = {row}"
            + {
                "method": " (the method re-run from the original with N unlearning seeds)",
                "oracle": " (the oracle row: the score is the retrain-vs-retrain ceiling)",
                "deterministic": " (no method: N identical copies of the audited model, which the "
                "peaky rule scores 0 wherever the retrains vary)",
            }[row],
            "a perfect unlearner scores about the ceiling, not 1",
        ]
        arrays = {
            "unlearned_conf": u_conf,  # (N, M): the exact float64 signals scored
            "retrained_conf": np.concatenate([r_conf, o_conf]),  # (2N, M): reference, then ceiling
            "epsilon": eps_u,
            "ceiling_epsilon": eps_c,
        }
        return Report("epsilon", metrics, arrays=arrays, curves=curves, notes=notes)
