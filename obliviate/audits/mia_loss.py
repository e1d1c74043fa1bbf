"""Threshold membership-inference attacks: loss (Yeom et al. 2018, "Privacy Risk in Machine
Learning: Analyzing the Connection to Overfitting", arXiv:1709.01604) and modified entropy
(Song & Mittal 2021, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
arXiv:2003.10595).

A model fits its training examples better than unseen ones, so one number per example (its loss,
its true-class confidence, its prediction entropy or Song & Mittal's modified entropy) separates
members from non-members when the model over-fits. The attack sweeps every threshold of that
number over the forget set (members, if unlearning failed) and held-out data (non-members), and
reports the ROC: AUC, TPR at low FPR, the best balanced accuracy, and Yeom's fixed threshold.

Notation: p = softmax(logits), y the true class. Scores, higher = "member":
``loss`` log p_y (= -CE, Yeom); ``confidence`` p_y (same ranking as ``loss``, so the same ROC;
kept because papers report it); ``entropy`` -H(p) = sum_i p_i log p_i; ``m_entropy``
-Mentr = (1 - p_y) log p_y + sum_{i != y} p_i log(1 - p_i) (Song & Mittal eq. 4), which, unlike
entropy, also uses the label (a confident wrong prediction scores low).

Choices (stated because they change the numbers):
- Non-members: for class and sub-class requests the forgotten part of the test set
  (``splits.extra["forget_test"]``), otherwise the whole test set. Forget-vs-whole-test after
  class forgetting measures "is this the forgotten class", not membership.
- Song & Mittal and Yeom calibrate thresholds on shadow data (per class for Song & Mittal); this
  is the population (threshold-sweep) form, the one unlearning papers report. Yeom's attack is
  given too, with the attacker's "average training loss" taken on the retain set: predict
  "member" when the score is at least the mean retain score.
- After exact unlearning the forget set is not at AUC 0.5 (a forgotten class is simply
  mispredicted): compare with the oracle row's value, which the runner audits the same way.
- Confidence intervals: a percentile bootstrap of the AUC, resampling members and non-members
  separately (a private helper until ``stats.py`` grows one).

Language models (``task.kind == "lm"``). The signal is the per-token **mean** NLL of the target
(the answer of a QA row, the passage of plain text), through ``task.sequence_nll``; the score is
its negative (``loss``) or exp(-mean NLL), the answer probability (``confidence``, same ROC).
This module also holds the driver every LM membership attack shares (``lm_membership_audit``;
mia-zlib, mia-min-k, mia-min-k-plus-plus and mia-reference differ only in their score):
- Members are the forget rows, non-members the held-out rows: ``splits.extra["holdout_qa"]``
  (lm-world: QA of people never trained on; the members are then ``extra["forget_qa"]``, so
  that biographies are not compared with questions), else ``extra["holdout"]`` (lm-wiki:
  passages of articles never trained on), else ``splits.test``.
- AUC convention: forget = member, higher score = member, so 1 means the forget rows are more
  likely than held-out ones. OpenUnlearning labels forget = 0 and holdout = 1 in
  ``roc_auc_score`` but signs its scores the other way (higher = *less* likely a member: the
  loss), so the two flips cancel and its AUC is the same number as ours (its docstring: "auc is
  1 when the forget data is much more likely than the holdout data"). Only a score taken from
  OpenUnlearning without its sign gives 1 - AUC.
- Every LM attack reports the same metrics for the audited model (no prefix), the frozen
  original (``original.``) and the retrain oracle ``ctx.oracle`` (``oracle.``): AUC with a
  bootstrap interval (``auc_ci_low``/``auc_ci_high``, members and non-members resampled
  separately), TPR at each FPR in ``fprs``, the best balanced accuracy, the mean scores; the
  per-example scores go to ``Report.arrays`` (``scores``, ``original.scores``,
  ``oracle.scores``, with one ``is_member``). On the original the attack measures what there
  was to forget; the oracle's numbers are the target (an oracle is not at 0.5 when held-out
  rows are harder or easier than the forget rows).
- No Yeom threshold for LMs (it needs the retain rows' scores; the sweep is what LLM papers
  report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from torch import nn

from obliviate.audits.signals import predict_logits, token_logprobs
from obliviate.audits.stats import auc, bootstrap_ci, roc, tpr_at
from obliviate.loop import derive_seed
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

__all__ = [
    "EntropyMIA",
    "LMScore",
    "LossMIA",
    "Signal",
    "lm_membership_audit",
    "lm_membership_data",
    "mean_logprob",
    "membership_signal",
    "nonmember_data",
    "threshold_attack",
]

Signal = Literal["loss", "confidence", "entropy", "m_entropy"]
NonMembers = Literal["auto", "test", "forget_test"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _log_one_minus_softmax(logits: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """log(1 - p_i), (N, C). log1p(-p_i) is exact while p_i <= 1/2; only the top class can be
    above, and there 1 - p_top = sum_{j != top} p_j, taken as a log-sum-exp of the other logits
    (log1p would give -inf once p_top rounds to 1)."""
    n = np.arange(len(logits))
    with np.errstate(divide="ignore"):  # -inf where p rounds to 1: the top class, redone below
        out = np.log1p(-np.exp(log_p))
    top = logits.argmax(axis=1)
    others = logits.copy()
    others[n, top] = -np.inf
    m = others.max(axis=1, keepdims=True)
    lse_others = (m + np.log(np.exp(others - m).sum(axis=1, keepdims=True)))[:, 0]
    out[n, top] = lse_others + (log_p[n, top] - logits[n, top])  # log_p - z = -logsumexp(z)
    return out


def membership_signal(logits: np.ndarray, y: np.ndarray, signal: Signal) -> np.ndarray:
    """Per-example membership score from float64 logits (N, C) and labels (N,); higher means
    "more likely a member". Finite for any finite logits."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n = np.arange(len(y))
    log_p = _log_softmax(logits)
    if signal == "loss":
        return log_p[n, y]
    if signal == "confidence":
        return np.exp(log_p[n, y])
    p = np.exp(log_p)
    if signal == "entropy":
        return (p * log_p).sum(axis=1)
    if signal == "m_entropy":
        log_1mp = _log_one_minus_softmax(logits, log_p)
        terms = p * log_1mp  # (N, C): p_i log(1 - p_i) for the wrong classes
        terms[n, y] = (1.0 - p[n, y]) * log_p[n, y]  # (1 - p_y) log p_y for the true class
        return terms.sum(axis=1)
    raise ValueError(
        f"unknown membership signal {signal!r}; use 'loss', 'confidence', 'entropy' or 'm_entropy'"
    )


def nonmember_data(splits: Splits, which: NonMembers = "auto") -> Data:
    """The held-out examples an attack compares the forget set with (see the module notes)."""
    if which == "test":
        return splits.test
    forget_test = splits.extra.get("forget_test")
    if which == "forget_test":
        if forget_test is None or len(forget_test) == 0:
            raise ValueError(
                "nonmembers='forget_test' needs a class or sub-class deletion request (the splits "
                "have no 'forget_test' set); use nonmembers='test' or 'auto'"
            )
        return forget_test
    if which != "auto":
        raise ValueError(f"nonmembers must be 'auto', 'test' or 'forget_test', got {which!r}")
    return forget_test if forget_test is not None and len(forget_test) > 0 else splits.test


def _bootstrap_auc(
    s_in: np.ndarray, s_out: np.ndarray, *, n_boot: int, level: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC, members and non-members resampled separately."""
    is_member = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    stats = np.empty(n_boot)
    for b in range(n_boot):
        a = s_in[rng.integers(0, len(s_in), len(s_in))]
        o = s_out[rng.integers(0, len(s_out), len(s_out))]
        stats[b] = auc(*roc(np.r_[a, o], is_member))
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def threshold_attack(
    s_in: np.ndarray,
    s_out: np.ndarray,
    *,
    fprs: tuple[float, ...] = (0.01, 0.001),
    threshold: float | None = None,
) -> dict[str, float]:
    """ROC metrics of "member if score >= t" over every t: AUC, TPR at each FPR in ``fprs``,
    and the best balanced accuracy; with ``threshold``, also the balanced accuracy at it."""
    s_in, s_out = np.asarray(s_in, np.float64), np.asarray(s_out, np.float64)
    fpr, tpr = roc(np.r_[s_in, s_out], np.r_[np.ones(len(s_in)), np.zeros(len(s_out))])
    out = {"auc": auc(fpr, tpr)}
    out |= {f"tpr@{a:g}": tpr_at(fpr, tpr, a) for a in fprs}
    out["balanced_acc"] = float(((tpr + 1.0 - fpr) / 2.0).max())  # best threshold, in-sample
    if threshold is not None:
        tpr_t, fpr_t = (s_in >= threshold).mean(), (s_out >= threshold).mean()
        out["yeom_balanced_acc"] = float((tpr_t + 1.0 - fpr_t) / 2.0)
    return out


# -- language models ---------------------------------------------------------------------------
# A score function: (model, data) -> per-example membership score (N,), higher = member.
LMScore = Callable[[nn.Module, Data], np.ndarray]


def mean_logprob(model: nn.Module, data: Data, task: Task) -> np.ndarray:
    """Per example, the mean log-probability of its target tokens, -(mean token NLL), (N,)."""
    return np.array([lp.mean() if lp.size else 0.0 for lp in token_logprobs(model, data, task)])


def lm_membership_data(splits: Splits, which: NonMembers = "auto") -> tuple[Data, Data, str]:
    """(members, non-members, name of the non-member set) of the LM attacks (module notes)."""
    if which == "forget_test":
        raise ValueError(
            "nonmembers='forget_test' is for class requests on classifiers; language-model "
            "benchmarks hold out people or articles: use nonmembers='auto' or 'test'"
        )
    if which not in ("auto", "test"):
        raise ValueError(f"nonmembers must be 'auto' or 'test' for language models, got {which!r}")
    members, held, name = splits.forget, splits.test, "test"
    if which == "auto":
        for key in ("holdout_qa", "holdout"):
            if len(splits.extra.get(key, ())) > 0:
                held, name = splits.extra[key], key
                break
    # QA held out: compare with the forget QA rows only (no biographies among the members)
    if name == "holdout_qa" and len(splits.extra.get("forget_qa", ())) > 0:
        members = splits.extra["forget_qa"]
    if len(members) == 0 or len(held) == 0:
        raise ValueError(
            f"an LM membership attack needs forget rows and held-out rows (got {len(members)} "
            f"and {len(held)}); use a benchmark that holds out people or articles"
        )
    return members, held, name


def _lm_metrics(
    s_in: np.ndarray,
    s_out: np.ndarray,
    *,
    fprs: tuple[float, ...],
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> dict[str, float]:
    out = threshold_attack(s_in, s_out, fprs=fprs)
    if n_bootstrap > 0:
        scores = np.r_[s_in, s_out]
        member = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
        ci = bootstrap_ci(
            lambda s, m: auc(*roc(s, m)), scores, member, n_boot=n_bootstrap, level=ci_level,
            seed=seed, strata=member,
        )  # fmt: skip
        out |= {"auc_ci_low": ci.low, "auc_ci_high": ci.high}
    return out | {
        "forget_mean_score": float(s_in.mean()),
        "heldout_mean_score": float(s_out.mean()),
        "n_members": float(len(s_in)),
        "n_nonmembers": float(len(s_out)),
    }


def lm_membership_audit(
    name: str,
    score: LMScore,
    original: nn.Module,
    unlearned: nn.Module,
    splits: Splits,
    *,
    ctx: AuditContext,
    nonmembers: NonMembers = "auto",
    fprs: tuple[float, ...] = (0.01, 0.001),
    n_bootstrap: int = 200,
    ci_level: float = 0.95,
    notes: Sequence[str] = (),
) -> Report:
    """Score members and non-members under the audited model, the original and the oracle, and
    report each one's ROC metrics (prefixes "", "original.", "oracle."); see the module notes."""
    members, held, which = lm_membership_data(splits, nonmembers)
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {
        "is_member": np.r_[np.ones(len(members)), np.zeros(len(held))].astype(np.int8)
    }
    done: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the oracle row audits ctx.oracle itself
    seed = derive_seed(ctx.seed, name, "bootstrap")
    for prefix, model in (("", unlearned), ("original.", original), ("oracle.", ctx.oracle)):
        if id(model) not in done:
            s_in = np.asarray(score(model, members), dtype=np.float64)
            s_out = np.asarray(score(model, held), dtype=np.float64)
            done[id(model)] = (s_in, s_out)
        s_in, s_out = done[id(model)]
        part = _lm_metrics(
            s_in, s_out, fprs=fprs, n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed
        )
        metrics |= {prefix + k: v for k, v in part.items()}
        arrays[prefix + "scores"] = np.r_[s_in, s_out]
    notes = [
        f"members = forget rows ({len(members)}), non-members = {which} ({len(held)}); AUC 1 = "
        f"forget more likely than held-out (OpenUnlearning's AUC is the same number); compare "
        f"with oracle.auc, not with 0.5",
        *notes,
    ]
    return Report(name, metrics, arrays=arrays, notes=notes)


def _audit(
    name: str,
    signal: Signal,
    unlearned: nn.Module,
    splits: Splits,
    *,
    task: Task,
    ctx: AuditContext,
    nonmembers: NonMembers,
    fprs: tuple[float, ...],
    max_retain: int,
    n_bootstrap: int,
    ci_level: float,
) -> Report:
    held_out = nonmember_data(splits, nonmembers)
    if len(splits.forget) == 0 or len(held_out) == 0:
        raise ValueError(
            f"{name} needs a non-empty forget set and held-out set (got {len(splits.forget)} "
            f"and {len(held_out)} examples)"
        )

    def score(data: Data) -> np.ndarray:
        return membership_signal(predict_logits(unlearned, data, task), data.y.numpy(), signal)

    s_in, s_out = score(splits.forget), score(held_out)
    rng = np.random.default_rng(ctx.seed)
    # 1. Yeom's threshold: the mean score of training examples the model still holds (retain).
    retain = splits.retain
    if max_retain and len(retain) > max_retain:
        retain = retain.subset(np.sort(rng.choice(len(retain), max_retain, replace=False)))
    threshold = float(score(retain).mean()) if len(retain) else None
    # 2. The threshold sweep over forget (members) vs held-out (non-members).
    metrics = threshold_attack(s_in, s_out, fprs=fprs, threshold=threshold)
    if n_bootstrap > 0:
        lo, hi = _bootstrap_auc(s_in, s_out, n_boot=n_bootstrap, level=ci_level, rng=rng)
        metrics |= {"auc_ci_low": lo, "auc_ci_high": hi}
    metrics |= {
        "forget_mean_score": float(s_in.mean()),
        "heldout_mean_score": float(s_out.mean()),
        "n_members": float(len(s_in)),
        "n_nonmembers": float(len(s_out)),
    }
    which = "forget_test" if held_out is splits.extra.get("forget_test") else "test"
    notes = [
        f"signal {signal}; members = forget set ({len(s_in)}), non-members = {which} "
        f"({len(s_out)}); compare with the oracle row, not with 0.5"
    ]
    arrays = {
        "scores": np.r_[s_in, s_out],
        "is_member": np.r_[np.ones(len(s_in)), np.zeros(len(s_out))].astype(np.int8),
    }
    return Report(name, metrics, arrays=arrays, notes=notes)


@AUDITS.register("mia-loss")
@dataclass(frozen=True)
class LossMIA:
    """Loss-threshold MIA (Yeom et al. 2018): forget set vs held-out data. For language models
    the signal is the per-token mean NLL of the target (module notes)."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision", "lm"})
    signal: Literal["loss", "confidence"] = "loss"  # log p_y or p_y (LM: of the token-mean NLL)
    nonmembers: NonMembers = "auto"  # held-out set; auto = forget_test / holdout_qa / holdout
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
    max_retain: int = 5000  # retain examples for Yeom's threshold (seeded subsample beyond)
    n_bootstrap: int = 200  # bootstrap resamples for the AUC interval; 0 disables it
    ci_level: float = 0.95  # two-sided level of the AUC interval

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        if getattr(task, "kind", None) == "lm":
            return self._audit_lm(original, unlearned, splits, task=task, ctx=ctx)
        return _audit(
            "mia-loss", self.signal, unlearned, splits, task=task, ctx=ctx,
            nonmembers=self.nonmembers, fprs=self.fprs, max_retain=self.max_retain,
            n_bootstrap=self.n_bootstrap, ci_level=self.ci_level,
        )  # fmt: skip

    def _audit_lm(
        self, original: nn.Module, unlearned: nn.Module, splits: Splits, *, task: Task,
        ctx: AuditContext,
    ) -> Report:  # fmt: skip
        def score(model: nn.Module, data: Data) -> np.ndarray:
            s = mean_logprob(model, data, task)  # -(mean token NLL)
            return np.exp(s) if self.signal == "confidence" else s

        return lm_membership_audit(
            "mia-loss", score, original, unlearned, splits, ctx=ctx, nonmembers=self.nonmembers,
            fprs=self.fprs, n_bootstrap=self.n_bootstrap, ci_level=self.ci_level,
            notes=[f"signal {self.signal}: per-token mean NLL of the target (Yeom et al. 2018)"],
        )  # fmt: skip


@AUDITS.register("mia-entropy")
@dataclass(frozen=True)
class EntropyMIA:
    """Modified-entropy threshold MIA (Song & Mittal 2021): forget set vs held-out data."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    signal: Literal["m_entropy", "entropy"] = "m_entropy"  # label-aware Mentr, or plain entropy
    nonmembers: NonMembers = "auto"  # held-out set; auto = forget_test for class requests
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
    max_retain: int = 5000  # retain examples for Yeom's threshold (seeded subsample beyond)
    n_bootstrap: int = 200  # bootstrap resamples for the AUC interval; 0 disables it
    ci_level: float = 0.95  # two-sided level of the AUC interval

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        return _audit(
            "mia-entropy", self.signal, unlearned, splits, task=task, ctx=ctx,
            nonmembers=self.nonmembers, fprs=self.fprs, max_retain=self.max_retain,
            n_bootstrap=self.n_bootstrap, ci_level=self.ci_level,
        )  # fmt: skip
