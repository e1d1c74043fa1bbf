"""Reference-model membership inference for language models (Carlini et al. 2021, "Extracting
Training Data from Large Language Models", arXiv:2012.07805; Mireshghallah et al. 2022,
"Quantifying Privacy Risks of Masked Language Models Using Membership Inference Attacks",
arXiv:2203.03929).

A text's likelihood says little on its own (some texts are easy); its likelihood *relative to a
reference model* says how much more the audited model likes it than a comparable model does.
Score (higher = member): NLL_reference(x) - NLL_target(x), per-token mean NLLs of the target
tokens. OpenUnlearning's ``ReferenceAttack`` computes target_loss - ref_loss (higher =
non-member); the AUC is the same number (``obliviate.audits.mia_loss``).

**Which reference, and what the number then means** (OpenUnlearning users confuse the two):
- ``reference="oracle"`` (``ctx.oracle``, the retrain oracle, never trained on the forget rows):
  Carlini's and Mireshghallah's setting, a reference that did not see the candidates, so the
  score isolates what training on x added. This is the model OpenUnlearning's config asks for
  (``reference_model_path``, e.g. ``tofu_..._retain90``). The original scores high; a model that
  forgot like the oracle scores 0.5; the oracle's own row is all zeros (AUC exactly 0.5, by
  construction, not a finding). An attacker rarely holds such a model: it is an auditor's tool.
- ``reference="original"`` (default; the frozen model before unlearning, which *did* train on
  the forget rows): the attacker holds the model before and after the deletion (Chen et al.
  2021, "When Machine Unlearning Jeopardizes Privacy", arXiv:2005.02205). The score is then how
  much more likely a row became through unlearning: forget rows whose likelihood unlearning
  lowered score *below* held-out rows, so an unlearner that worked has an AUC far below 0.5 (a
  signal that they were deleted), and the original's own row is all zeros (AUC exactly 0.5).
  Read it against the oracle row (``oracle.auc``: how far retraining moves the forget rows),
  never against 0.5.
Scale-down: Carlini et al. use a smaller pretrained model as the reference; here the reference
is one of the benchmark's own fine-tunes, which removes the data-distribution confound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from torch import nn

from obliviate.audits.mia_loss import NonMembers, lm_membership_audit, mean_logprob
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Data, Report, Splits, Task

__all__ = ["ReferenceMIA"]


@AUDITS.register("mia-reference")
@dataclass(frozen=True)
class ReferenceMIA:
    """NLL(reference) - NLL(target) (Carlini et al. 2021): forget vs held-out rows."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    reference: Literal["original", "oracle"] = "original"  # the calibrating model (docstring)
    nonmembers: NonMembers = "auto"  # held-out rows: holdout_qa / holdout / test ("auto")
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these false-positive rates
    n_bootstrap: int = 200  # bootstrap resamples for the AUC interval; 0 disables it
    ci_level: float = 0.95  # two-sided level of the AUC interval

    def __post_init__(self) -> None:
        if self.reference not in ("original", "oracle"):
            raise ValueError(
                f"mia-reference: reference={self.reference!r}; use 'original' (the model before "
                f"unlearning) or 'oracle' (the retrain oracle, never trained on the forget rows)"
            )

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        ref = original if self.reference == "original" else ctx.oracle
        cached: dict[int, np.ndarray] = {}  # the reference's scores, once per data set

        def score(model: nn.Module, data: Data) -> np.ndarray:
            if id(data) not in cached:
                cached[id(data)] = mean_logprob(ref, data, task)
            return mean_logprob(model, data, task) - cached[id(data)]  # NLL_ref - NLL_target

        return lm_membership_audit(
            "mia-reference", score, original, unlearned, splits, ctx=ctx,
            nonmembers=self.nonmembers, fprs=self.fprs, n_bootstrap=self.n_bootstrap,
            ci_level=self.ci_level,
            notes=[f"reference = {self.reference}: NLL_reference - NLL_target (docstring)"],
        )  # fmt: skip
