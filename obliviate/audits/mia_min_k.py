"""Min-K% Prob membership inference (Shi et al. 2024, "Detecting Pretraining Data from Large
Language Models", arXiv:2310.16789).

An unseen text tends to contain a few outlier tokens the model finds very unlikely, while a seen
text has fewer of them. So instead of the mean log-likelihood over all tokens (the loss attack)
Min-K% averages only the k% least likely tokens: score = mean of the lowest max(1, int(k * n))
values of log p(x_t | x_<t) (higher = member).

Choices, following OpenUnlearning's ``MinKProbAttack`` (k = 0.4 in its TOFU/MUSE configs, 0.2
the class default and the paper's usual value): the tokens are the target (answer) tokens only,
and the **last labelled token is dropped** (``drop_last``; OpenUnlearning slices the label
positions with ``[:-1]``; here that token is the EOS). The count is ``int(k * n)``, floored, at
least 1. OpenUnlearning negates the mean (higher = non-member); here higher = member, and the AUC
is the same number (``obliviate.audits.mia_loss``: members, non-members, original and oracle
rows). Scale-down: the paper detects pretraining documents (WikiMIA) of 7B+ models; here it
scores forget rows against held-out rows of a fine-tuned model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.mia_loss import NonMembers, lm_membership_audit
from obliviate.audits.signals import token_logprobs
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

__all__ = ["MinKProb", "check_k", "min_k_mean", "min_k_scores"]


def check_k(k: float, name: str) -> None:
    if not 0.0 < k <= 1.0:
        raise ValueError(f"{name}: k={k} must be a fraction in (0, 1] (0.4 in OpenUnlearning)")


def min_k_mean(values: np.ndarray, k: float, *, drop_last: bool = True) -> float:
    """Mean of the max(1, int(k * n)) smallest ``values`` (per-token scores of one text, in token
    order), after dropping the last one when ``drop_last``; 0.0 for a text with no token left
    (OpenUnlearning's value for an empty one)."""
    v = np.asarray(values, dtype=np.float64)
    if drop_last:
        v = v[:-1]
    if v.size == 0:
        return 0.0
    n_k = max(1, int(v.size * k))
    return float(np.sort(v)[:n_k].mean())


def min_k_scores(per_token: Sequence[np.ndarray], k: float, *, drop_last: bool) -> np.ndarray:
    """``min_k_mean`` of every example, (N,)."""
    return np.array([min_k_mean(v, k, drop_last=drop_last) for v in per_token], dtype=np.float64)


@AUDITS.register("mia-min-k")
@dataclass(frozen=True)
class MinKProb:
    """Min-K% Prob (Shi et al. 2024): mean of the k% lowest token log-probs, forget vs held-out."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    k: float = 0.4  # fraction of the target's tokens averaged, the least likely (OpenUnlearning)
    drop_last: bool = True  # drop the last labelled token (EOS here), as OpenUnlearning does
    nonmembers: NonMembers = "auto"  # held-out rows: holdout_qa / holdout / test ("auto")
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
    n_bootstrap: int = 200  # bootstrap resamples for the AUC interval; 0 disables it
    ci_level: float = 0.95  # two-sided level of the AUC interval

    def __post_init__(self) -> None:
        check_k(self.k, "mia-min-k")

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        def score(model: nn.Module, data: Data) -> np.ndarray:
            return min_k_scores(token_logprobs(model, data, task), self.k, drop_last=self.drop_last)

        return lm_membership_audit(
            "mia-min-k", score, original, unlearned, splits, ctx=ctx, nonmembers=self.nonmembers,
            fprs=self.fprs, n_bootstrap=self.n_bootstrap, ci_level=self.ci_level,
            notes=[f"Min-K% Prob, k = {self.k:g}, drop_last = {self.drop_last}"],
        )  # fmt: skip
