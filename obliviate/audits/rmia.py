"""RMIA: "Low-Cost High-Power Membership Inference Attacks" (Zarifzadeh, Liu, Backes, Shokri,
ICML 2024, arXiv:2312.03262).

For a target x and the audited model theta, the likelihood ratio LR(x) = Pr(x | theta) / Pr(x),
with Pr(x | theta) the model's probability of x's true label (softmax at ``temperature``) and
Pr(x) its average over reference models. x is then compared *pairwise* with population samples
z that theta never saw: score(x) = the fraction of z with LR(x) / LR(z) >= gamma. Comparing with
z on the same model calibrates away how confident theta is overall, which is what makes RMIA
strong with few reference models.

Notation map: reference models = the shadow bank shared with LiRA and U-LiRA (``lira.py``:
same ``tag`` and pool sizes, same models); z = the pool's reference population (test examples
never scored). ``variant="online"``: Pr(x) = the mean over all K references (half of them
trained on x). ``variant="offline"``: only the references that never saw x, with the paper's
linear correction for the missing IN models, Pr(x) = ((1 + a) * Pr_OUT(x) + (1 - a)) / 2, the
same for every z. ``offline_a=None`` chooses a on the grid 0, 0.1, ..., 1 by attacking one
shadow with the others, as Privacy Meter does with a paired reference model. The AUCs of both
variants are reported, and ``loo_*`` metrics attack every shadow in turn with the others as
references (targets trained exactly like their references).

Defaults: gamma = 1 and temperature = 1 (Privacy Meter's offline pipeline uses the plain
softmax probability; the paper tunes gamma per dataset, so it is a hyperparameter here). Scale:
the bank of ``lira.py`` (64 shadows by default, see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from torch import nn

from obliviate.audits.lira import labels_of, membership_report, membership_setup
from obliviate.audits.shadows import population_data, shadow_logits
from obliviate.audits.signals import predict_logits, softmax
from obliviate.audits.stats import attack_metrics, auc, rmia_score, roc
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

__all__ = ["RMIA", "reference_probability", "rmia_scores"]

A_GRID = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2).tolist())


def _true_prob(logits: np.ndarray, y: np.ndarray, temperature: float) -> np.ndarray:
    """Pr(x | theta): softmax(logits / T) at the true label, (..., N)."""
    p = softmax(logits.reshape(-1, logits.shape[-1]) / temperature)
    p = p.reshape(logits.shape)
    return np.take_along_axis(p, np.broadcast_to(y[..., None], p.shape[:-1] + (1,)), -1)[..., 0]


def reference_probability(
    p_refs: np.ndarray, is_in: np.ndarray, *, online: bool, a: float
) -> np.ndarray:
    """Pr(x) per example from reference probabilities ``p_refs`` (K, N): the mean over all
    references (online) or ((1 + a) * mean over OUT references + (1 - a)) / 2 (offline)."""
    if online:
        return p_refs.mean(0)
    out = ~np.asarray(is_in, dtype=bool)
    n_out = out.sum(0)
    if (n_out == 0).any():
        raise ValueError("offline RMIA needs at least one OUT reference model per example")
    mean_out = np.where(out, p_refs, 0.0).sum(0) / n_out
    return 0.5 * ((1.0 + a) * mean_out + (1.0 - a))


def rmia_scores(
    p_target: np.ndarray,
    p_refs: np.ndarray,
    is_in: np.ndarray,
    *,
    x_cols: np.ndarray,
    z_cols: np.ndarray,
    online: bool,
    a: float,
    gamma: float,
) -> np.ndarray:
    """RMIA scores of the columns ``x_cols`` against the population columns ``z_cols``.

    ``p_target`` (Q,): Pr(. | theta); ``p_refs`` (K, Q): the references' probabilities;
    ``is_in`` (K, Q): which reference trained on which example.
    """
    pr = reference_probability(p_refs, is_in, online=online, a=a)
    ratio = p_target / np.maximum(pr, 1e-300)  # Pr(x) > 0 unless every reference underflows
    return rmia_score(ratio[x_cols], ratio[z_cols], gamma=gamma)


@AUDITS.register("rmia")
@dataclass(frozen=True)
class RMIA:
    """RMIA (Zarifzadeh et al. 2024): forget vs held-out targets on the audited model, each
    compared pairwise with population samples. Compare with the oracle row's numbers."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    n_shadows: int = 64  # reference models (the shadow bank shared with LiRA and U-LiRA)
    n_targets: int = 500  # forget examples scored, and as many held-out test examples
    n_reference: int = 500  # population samples z (test examples, never scored)
    n_background: int = 10000  # retain examples every reference model trains on
    variant: Literal["online", "offline"] = "online"  # headline; both AUCs are reported
    offline_a: float | None = None  # offline correction a in [0, 1]; None tunes it on a shadow
    gamma: float = 1.0  # LR(x) / LR(z) threshold; the score is the fraction of z beaten
    temperature: float = 1.0  # softmax temperature of Pr(x | theta)
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these FPRs (last point strictly below)
    n_boot: int = 200  # bootstrap resamples for the AUC's 95% CI (0: no CI)
    tag: str = "mia"  # shadow-bank tag: audits with the same tag and pool share their shadows

    def __post_init__(self) -> None:
        if self.offline_a is not None and not 0.0 <= self.offline_a <= 1.0:
            raise ValueError(
                f"offline_a must lie in [0, 1] (or None to tune it), got {self.offline_a}"
            )
        if self.gamma <= 0 or self.temperature <= 0:
            raise ValueError("gamma and temperature must be > 0")

    def _tune_a(self, p_refs: np.ndarray, is_in: np.ndarray, n_targets: int) -> float:
        """The grid value of a that best attacks shadow 0 with the other references (AUC)."""
        x_cols, z_all = np.arange(n_targets), np.arange(n_targets, p_refs.shape[1])
        z_cols = z_all[~is_in[0, z_all]]  # population samples shadow 0 never saw
        best, best_auc = A_GRID[0], -1.0
        for a in A_GRID:
            s = rmia_scores(
                p_refs[0], p_refs[1:], is_in[1:], x_cols=x_cols, z_cols=z_cols, online=False,
                a=a, gamma=self.gamma,
            )  # fmt: skip
            value = auc(*roc(s, is_in[0, x_cols]))
            if value > best_auc:
                best, best_auc = a, value
        return float(best)

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        pool, plan = membership_setup(
            ctx, n_shadows=self.n_shadows, n_targets=self.n_targets,
            n_reference=self.n_reference, n_background=self.n_background, tag=self.tag,
        )  # fmt: skip
        query = pool.pool  # targets, then the population z
        logits = shadow_logits(ctx, plan=plan, query_idx=query, tag=self.tag)  # (K, Q, C)
        y = labels_of(ctx, query)
        p_refs = _true_prob(logits, np.broadcast_to(y, logits.shape[:2]), self.temperature)
        data = population_data(ctx.bench, ctx.dataset, query)
        p_target = _true_prob(predict_logits(unlearned, data, task), y, self.temperature)
        is_in = plan.members  # (K, Q): the pool's columns are the query's
        x_cols, z_cols = pool.target_cols, pool.reference_cols
        t = len(x_cols)
        a = self.offline_a if self.offline_a is not None else self._tune_a(p_refs, is_in, t)
        scores = {
            v: rmia_scores(
                p_target,
                p_refs,
                is_in,
                x_cols=x_cols,
                z_cols=z_cols,
                online=v == "online",
                a=a,
                gamma=self.gamma,
            )  # fmt: skip
            for v in ("online", "offline")
        }
        is_member = pool.is_member
        extra = {f"auc_{v}": auc(*roc(s, is_member)) for v, s in scores.items()}
        # every shadow as the target, the others as its references (pooled over the K)
        loo_s, loo_y = [], []
        for j in range(len(p_refs)):
            rest = np.r_[0:j, j + 1 : len(p_refs)]
            z_j = z_cols[~is_in[j, z_cols]]
            loo_s.append(
                rmia_scores(
                    p_refs[j],
                    p_refs[rest],
                    is_in[rest],
                    x_cols=x_cols,
                    z_cols=z_j,
                    online=self.variant == "online",
                    a=a,
                    gamma=self.gamma,
                )  # fmt: skip
            )
            loo_y.append(is_in[j, x_cols])
        loo = attack_metrics(np.concatenate(loo_s), np.concatenate(loo_y), fprs=self.fprs)
        extra |= {f"loo_{k}": v for k, v in loo.items()}
        extra |= {"offline_a": a, "n_shadows": float(self.n_shadows), "n_targets": float(t // 2)}
        notes = [f"RMIA ({self.variant}), gamma {self.gamma}, a {a:g}, {pool.info}"]
        return membership_report(
            "rmia", scores[self.variant], is_member, fprs=self.fprs, n_boot=self.n_boot,
            seed=ctx.seed, extra_metrics=extra, arrays={"target_idx": pool.targets},
            notes=notes,
        )  # fmt: skip
