"""zlib-calibrated membership inference for language models (Carlini et al. 2021, "Extracting
Training Data from Large Language Models", arXiv:2012.07805).

A text can be likely because the model memorised it or because it is simply easy (short, common,
repetitive). Carlini et al. calibrate the model's log-perplexity by the text's zlib entropy, a
model-free measure of how compressible it is: a low perplexity *relative* to the compressed length
points at memorisation rather than at an easy text.

Score (higher = member): -(mean token NLL of the target) / len(zlib.compress(target text)), the
compressed length in bytes. This is OpenUnlearning's ``ZLIBAttack`` (mean NLL over every labelled
token, EOS included, divided by the zlib length of the answer) with the sign flipped. Scale-down:
the paper ranks generated samples of GPT-2 by the ratio of log-perplexities to find memorised
ones; here, as in OpenUnlearning, it scores the forget rows against held-out rows. The text is the
raw target (``data.targets``: the answer without the leading space and EOS), where
OpenUnlearning decodes the label tokens; the two differ at most by that space. Members,
non-members, AUC convention and the original/oracle rows: ``obliviate.audits.mia_loss``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.mia_loss import NonMembers, lm_membership_audit, mean_logprob
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

__all__ = ["ZlibMIA", "zlib_entropy"]


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (at least 1, so it can divide)."""
    return max(1, len(zlib.compress(text.encode("utf-8"))))


@AUDITS.register("mia-zlib")
@dataclass(frozen=True)
class ZlibMIA:
    """Mean token NLL over zlib entropy (Carlini et al. 2021): forget vs held-out rows."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    nonmembers: NonMembers = "auto"  # held-out rows: holdout_qa / holdout / test ("auto")
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
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
        def score(model: nn.Module, data: Data) -> np.ndarray:
            z = np.array([zlib_entropy(t) for t in data.targets], dtype=np.float64)
            return mean_logprob(model, data, task) / z  # -(mean NLL) / zlib bytes

        return lm_membership_audit(
            "mia-zlib", score, original, unlearned, splits, ctx=ctx, nonmembers=self.nonmembers,
            fprs=self.fprs, n_bootstrap=self.n_bootstrap, ci_level=self.ci_level,
            notes=["score -(mean token NLL) / zlib bytes of the target text (Carlini et al.)"],
        )  # fmt: skip
