"""TOFU forget quality: is the unlearned model's truth-ratio distribution the oracle's?

From TOFU, "TOFU: A Task of Fictitious Unlearning for LLMs" (Maini et al. 2024,
arXiv:2401.06121), as OpenUnlearning computes it (``ks_test`` in
``src/evals/metrics/privacy.py``). On the forget questions, the truth ratio of each question
(how much likelier the perturbed wrong answers are than the paraphrased right one; see
:mod:`obliviate.audits.lm_qa`) is computed under the unlearned model and under the retrain
oracle; forget quality is the p-value of a two-sample Kolmogorov-Smirnov test between the two
samples (``scipy.stats.ks_2samp``, two-sided, its default exact/asymptotic choice). High means
indistinguishable from retraining; TOFU plots log10 of it.

Choices: the test runs on the per-question *raw* truth ratios (OpenUnlearning's
``value_by_index`` scores, not the min(tr, 1/tr) aggregate), taken as log tr: the KS statistic
only depends on the order of the values, and log is increasing, so the p-value is the same and
an overflowing exp cannot occur. The forget questions are the same seeded subsample as in
``lm-qa`` (``max_examples``). ``original.forget_quality`` (the original against the oracle) is
the value of doing nothing.

Refused (ValueError) when the benchmark has no retrain oracle (lm-capitals) or the forget
questions carry no perturbed answers (lm-capitals, lm-wiki): there is nothing to compare with.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.lm_qa import (
    forget_tr_score,
    has_truth_ratio_data,
    log_truth_ratios,
    qa_rows,
    retrain_oracle,
    subsample,
)
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = ["ForgetQuality", "ks_forget_quality"]


def ks_forget_quality(log_tr: np.ndarray, log_tr_oracle: np.ndarray) -> tuple[float, float]:
    """(p-value, KS statistic) of the two-sample KS test between two truth-ratio samples (given
    as log tr; the test is invariant to the increasing map log)."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(log_tr, np.float64), np.asarray(log_tr_oracle, np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs at least one truth ratio from each model")
    res = ks_2samp(a, b)
    return float(res.pvalue), float(res.statistic)


def _log10(p: float) -> float:
    """log10 of a p-value, finite: an underflowed 0 reads as the smallest positive float."""
    return math.log10(max(p, np.finfo(np.float64).tiny))


@AUDITS.register("forget-quality")
@dataclass(frozen=True)
class ForgetQuality:
    """TOFU forget quality: KS-test p-value of truth ratios, unlearned vs retrain oracle."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    max_examples: int = 400  # forget questions (the seeded subsample of lm-qa; 0 = all)
    references: bool = True  # also test the original against the oracle (original.*)

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        oracle, why = retrain_oracle(splits, ctx)
        if oracle is None:
            raise ValueError(
                f"forget-quality compares with the retrain oracle, and {why}. Use lm-qa's "
                "forget metrics, or a benchmark with an oracle (lm-world)."
            )
        forget, _ = qa_rows(splits, ("forget_qa",), splits.forget)
        if forget is None or not has_truth_ratio_data(forget):
            raise ValueError(
                "forget-quality needs forget questions whose meta carries 'paraphrased_answer' "
                "and 'perturbed_answers' (the truth ratio); this benchmark's have none. Use "
                "lm-world, or add them to the data (World QA records carry both)."
            )
        forget = subsample(forget, self.max_examples, ctx.seed, "forget")
        # 1. Truth ratios of the oracle (the reference distribution) and of the audited model.
        ref = log_truth_ratios(oracle, forget, task=task)
        mine = ref if unlearned is oracle else log_truth_ratios(unlearned, forget, task=task)
        p, stat = ks_forget_quality(mine, ref)
        metrics = {
            "forget_quality": p,
            "log10_forget_quality": _log10(p),
            "ks_statistic": stat,
            "truth_ratio": forget_tr_score(mine),
            "oracle.truth_ratio": forget_tr_score(ref),
            "n": float(len(forget)),
        }
        arrays = {"log_tr": mine, "oracle.log_tr": ref, "idx": np.asarray(forget.idx)}
        # 2. The value of doing nothing: the original against the same oracle.
        if self.references:
            orig = mine if original is unlearned else log_truth_ratios(original, forget, task=task)
            p0, stat0 = ks_forget_quality(orig, ref)
            metrics |= {
                "original.forget_quality": p0,
                "original.log10_forget_quality": _log10(p0),
                "original.ks_statistic": stat0,
                "original.truth_ratio": forget_tr_score(orig),
            }
            arrays["original.log_tr"] = orig
        notes = [
            f"KS test over {len(forget)} forget questions against the retrain oracle's truth "
            "ratios; 1 = indistinguishable"
        ]
        return Report("forget-quality", metrics, arrays=arrays, notes=notes)
