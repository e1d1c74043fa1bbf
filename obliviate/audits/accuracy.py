"""Accuracy on the forget, retain and test sets (UA = 1 - forget accuracy, RA, TA in SalUn's
notation), plus, for class and sub-class requests, accuracy on the forgotten part of the test
set and on the rest. Compare every number with the retrain oracle's row, not with 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.signals import predict_logits, softmax
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task


@AUDITS.register("accuracy")
@dataclass(frozen=True)
class Accuracy:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    max_retain: int = 20000  # retain examples scored (a seeded subsample beyond this; 0 = all)

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        retain = splits.retain
        if self.max_retain and len(retain) > self.max_retain:
            rng = np.random.default_rng(ctx.seed)
            retain = retain.subset(np.sort(rng.choice(len(retain), self.max_retain, replace=False)))
        sets = {"forget": splits.forget, "retain": retain, "test": splits.test, **splits.extra}
        metrics: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        for name, data in sets.items():
            if len(data) == 0:
                continue
            logits = predict_logits(unlearned, data, task)
            y = data.y.numpy()
            metrics[f"{name}_acc"] = float((logits.argmax(1) == y).mean())
            if name == "forget":
                probs = softmax(logits)
                arrays["forget_pred"] = logits.argmax(1)
                arrays["forget_true_conf"] = probs[np.arange(len(y)), y]
                # (C,) mean predicted distribution on forget inputs: where the mass goes
                arrays["forget_mean_probs"] = probs.mean(0)
        metrics["unlearn_acc"] = 1.0 - metrics["forget_acc"]  # UA
        return Report("accuracy", metrics, arrays=arrays)
