"""MIA-Efficacy: the confidence-based membership score used by SalUn (Fan et al. 2024,
arXiv:2310.12508) and l1-sparse (Jia et al. 2023, arXiv:2304.04934), as in their
`evaluation/SVC_MIA.py`.

An SVC (RBF, C=3, gamma="auto") learns to tell members (a retain subset as large as the test
set) from non-members (the test set) from the model's true-class confidence; MIA-Efficacy is the
fraction of the forget set it predicts to be *non-members*. Higher means "looks unseen"; the
target is the retrain oracle's value, not 1. Scale-down: the shadow sets are capped at
``max_shadow`` each, since the SVC fit is quadratic in their size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from torch import nn

from obliviate.audits.signals import predict_logits, softmax
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task


def _features(logits: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    p = softmax(logits)
    n = np.arange(len(y))
    if kind == "confidence":
        return p[n, y][:, None]
    if kind == "entropy":
        return -(p * np.log(np.clip(p, 1e-30, None))).sum(1, keepdims=True)
    # modified entropy (Song & Mittal 2021, eq. 5):
    # -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)
    log_p, log_1mp = np.log(np.clip(p, 1e-30, None)), np.log(np.clip(1 - p, 1e-30, None))
    mod = p * log_1mp
    mod[n, y] = (1 - p[n, y]) * log_p[n, y]
    return -mod.sum(1, keepdims=True)


@AUDITS.register("mia-efficacy")
@dataclass(frozen=True)
class MIAEfficacy:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    feature: Literal["confidence", "entropy", "m_entropy"] = "confidence"  # SVC input
    max_shadow: int = 5000  # members and non-members used to fit the SVC, each
    C: float = 3.0  # SVC regularisation (SalUn's value)

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        from sklearn.svm import SVC

        rng = np.random.default_rng(ctx.seed)
        n = min(len(splits.test), len(splits.retain), self.max_shadow)
        members = splits.retain.subset(np.sort(rng.choice(len(splits.retain), n, replace=False)))
        nonmembers = splits.test.subset(np.sort(rng.choice(len(splits.test), n, replace=False)))

        def feats(data):  # noqa: ANN001, ANN202
            return _features(predict_logits(unlearned, data, task), data.y.numpy(), self.feature)

        x = np.concatenate([feats(members), feats(nonmembers)])
        y = np.r_[np.ones(n), np.zeros(n)]
        clf = SVC(C=self.C, gamma="auto", kernel="rbf").fit(x, y)
        pred_forget = clf.predict(feats(splits.forget))
        return Report(
            "mia-efficacy",
            {"efficacy": float(1.0 - pred_forget.mean()), "svc_train_acc": float(clf.score(x, y))},
            arrays={"forget_pred_member": pred_forget.astype(np.int8)},
        )
