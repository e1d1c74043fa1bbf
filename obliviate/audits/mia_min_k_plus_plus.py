"""Min-K%++ membership inference (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting
Pre-Training Data from Large Language Models", arXiv:2404.02936).

Training pushes each seen token towards a local maximum of the likelihood along the vocabulary:
a seen token is more likely than the *other* candidates at its position, not just likely.
Min-K%++ therefore standardises each token's log-probability by the model's own next-token
distribution p = p(. | x_<t): z_t = (log p(x_t) - mu_t) / sigma_t, with mu_t = E_{z~p}[log p(z)]
and sigma_t^2 = E_{z~p}[(log p(z) - mu_t)^2], and then averages the k%
lowest z_t as Min-K% does (higher = member).

Choices, following OpenUnlearning's ``MinKPlusPlusAttack``: k = 0.4 (its configs), target tokens
only, the last labelled token (EOS) dropped (``drop_last``), the count max(1, int(k * n)).
OpenUnlearning clamps sigma^2 at 1e-6; here sigma is clamped at ``sigma_floor`` = 1e-3 (the same
number). mu and sigma are computed in float64 from ``task.target_logits`` (the full next-token
distributions, ``obliviate.audits.signals.token_logprob_stats``). Members, non-members, the AUC
convention and the original/oracle rows: ``obliviate.audits.mia_loss``. Scale-down: the paper
detects pretraining documents of 7B+ models; here forget rows vs held-out rows of a fine-tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.mia_loss import NonMembers, lm_membership_audit
from obliviate.audits.mia_min_k import check_k, min_k_scores
from obliviate.audits.signals import token_logprob_stats
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

__all__ = ["MinKPlusPlus", "token_zscores"]


def token_zscores(stats: Sequence[np.ndarray], *, sigma_floor: float = 1e-3) -> list[np.ndarray]:
    """Per example, z_t = (log p(x_t) - mu_t) / max(sigma_t, sigma_floor) from the (n, 3) arrays
    of ``token_logprob_stats``."""
    out = []
    for s in stats:
        s = np.asarray(s, dtype=np.float64).reshape(-1, 3)  # (n_tokens, [log p, mu, sigma])
        out.append((s[:, 0] - s[:, 1]) / np.maximum(s[:, 2], sigma_floor))
    return out


@AUDITS.register("mia-min-k-plus-plus")
@dataclass(frozen=True)
class MinKPlusPlus:
    """Min-K%++ (Zhang et al. 2024): the k% lowest vocabulary-standardised token log-probs."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    k: float = 0.4  # fraction of the target's tokens averaged, the lowest z (OpenUnlearning)
    drop_last: bool = True  # drop the last labelled token (EOS here), as OpenUnlearning does
    sigma_floor: float = 1e-3  # lower bound on sigma_t (OpenUnlearning: sigma^2 >= 1e-6)
    nonmembers: NonMembers = "auto"  # held-out rows: holdout_qa / holdout / test ("auto")
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
    n_bootstrap: int = 200  # bootstrap resamples for the AUC interval; 0 disables it
    ci_level: float = 0.95  # two-sided level of the AUC interval

    def __post_init__(self) -> None:
        check_k(self.k, "mia-min-k-plus-plus")
        if self.sigma_floor <= 0:
            raise ValueError(f"mia-min-k-plus-plus: sigma_floor={self.sigma_floor} must be > 0")

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
            z = token_zscores(token_logprob_stats(model, data, task), sigma_floor=self.sigma_floor)
            return min_k_scores(z, self.k, drop_last=self.drop_last)

        return lm_membership_audit(
            "mia-min-k-plus-plus", score, original, unlearned, splits, ctx=ctx,
            nonmembers=self.nonmembers, fprs=self.fprs, n_bootstrap=self.n_bootstrap,
            ci_level=self.ci_level,
            notes=[f"Min-K%++, k = {self.k:g}, drop_last = {self.drop_last}"],
        )  # fmt: skip
