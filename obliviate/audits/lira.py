"""LiRA and U-LiRA: per-example likelihood-ratio membership attacks with shadow models.

**LiRA** (Carlini et al. 2022, "Membership Inference Attacks From First Principles",
arXiv:2112.03570). K shadow models train on balanced random halves of a pool; for every target
x the shadows that trained on it (IN) and those that did not (OUT) give two Gaussians of the
signal phi = log p_y - log sum_{j != y} p_j (logit-scaled confidence, natural log), and the
audited model's phi is scored by the log-likelihood ratio log N(phi; IN) - log N(phi; OUT)
("online"), or against OUT alone ("offline", one- or two-sided: see ``stats.py`` for the
reference code's conventions, median centres and truncation). Targets: forget examples (members
of the original) against held-out test examples, on the audited model. On the original this is
plain membership inference; on an unlearned model it asks whether the forget set still looks
trained-on; the oracle row gives the level to compare with.

**U-LiRA** (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
sense of privacy", arXiv:2403.01218). The right null for an unlearned example is not "never
seen" against "seen" but "seen then unlearned by this algorithm" against "never seen": IN =
shadows that trained on x and then unlearned it with the audited method, OUT = shadows that
never saw x. Efficient protocol (as in the paper): one target set; every shadow unlearns its
members among the targets jointly (a deep copy of the shadow, ``method.unlearn(copy,
forget=its targets, retain=the rest of its training half, task, budget=ctx.budget)``), so each
shadow serves as IN for its target members and OUT for the others; its OUT signals are read
after it unlearned the other targets, as the audited model's held-out examples are. The
unlearned shadows' logits are cached (numpy, keyed by the bank, the method and its
hyperparameters, and the budget), so a rerun costs no unlearning. 50% balanced accuracy, AUC
0.5, are what a perfect unlearner allows.

Rows without a method (``ctx.method is None``): on the original row (the audited model is the
original) nothing was unlearned, so IN = the trained shadows and U-LiRA is LiRA. On the oracle
row (or any model audited without a method) unlearning is exact retraining: every shadow is
retrained by the benchmark's recipe, with its seed, on its training half minus the targets, so
IN and OUT both never saw x and the AUC measures the test's own noise at this bank size
(K more trainings, cached like any shadow).

The bank is shared: LiRA, U-LiRA and RMIA with the same ``tag`` and pool sizes train the same
shadows once (``shadows.target_pool``: forget and held-out targets, RMIA's reference
population, retain background; held-out examples are test examples that the shadows train on
half of the time).

Shadows and the audited model must be trained alike: the Gaussians describe the shadows, and a
target model trained on 10x more data is more confident on everything, which shifts its signals
out of both Gaussians and can push the online AUC below 0.5 (measured on the tiny benchmark with
shadows 3.5x smaller than the original: 0.455, against 0.544 with matched shadows). So the retain
background is in *every* shadow (``always_in``) and only the targets and the population are
IN for half of them: with the whole retain set as background, a shadow is the original's
recipe on nearly the original's data. ``loo_*`` metrics attack every shadow with the others
(targets trained exactly like their shadows, as in both papers' protocols): they hold whatever
the audited model's scale.

Scale-down: Carlini et al. train 256 shadows (64 in most ablations) on CIFAR-10 halves; Hayes
et al. up to 256 per example. The default is 64 shadows, 500 targets per side, 500 population
examples and a 10,000-example retain background, so each shadow trains on about 10,750
examples by the benchmark's own recipe: on the 60,000-example Fashion-MNIST benchmarks that is
5.6x less than the original (read the ``loo_*`` metrics there, or raise ``n_background``;
``benchmarks/ulira.py`` uses a 12,000-example subset where shadows and original match). No
test-time augmentation (our recipes train without augmentation), so one query per example.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from obliviate.audits.shadows import (
    ShadowBank,
    TargetPool,
    bank_plan,
    population_data,
    shadow_logits,
    target_pool,
    unlearned_shadow_logits,
)
from obliviate.audits.signals import logit_scaled_confidence, predict_logits
from obliviate.audits.stats import (
    attack_metrics,
    auc,
    bootstrap_ci,
    gaussian_llr,
    offline_score,
    roc,
)
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = ["LiRA", "ULiRA", "membership_report", "membership_setup"]

Variant = Literal["online", "offline-one-sided", "offline-two-sided"]
VARIANTS: tuple[str, ...] = ("online", "offline-one-sided", "offline-two-sided")


# -- shared by LiRA, U-LiRA and RMIA ---------------------------------------------------------------
def membership_setup(
    ctx: Any, *, n_shadows: int, n_targets: int, n_reference: int, n_background: int, tag: str
) -> tuple[TargetPool, ShadowBank]:
    """The target pool and the (untrained) bank plan of a membership audit."""
    if n_shadows < 2 or n_shadows % 2:
        raise ValueError(f"n_shadows must be even and >= 2 (balanced IN/OUT), got {n_shadows}")
    pool = target_pool(
        ctx, n_targets=n_targets, n_reference=n_reference, n_background=n_background, tag=tag
    )
    plan = bank_plan(
        ctx, n_models=n_shadows, pool_idx=pool.pool, tag=tag, always_in=pool.background
    )
    return pool, plan


def labels_of(ctx: Any, pop_idx: np.ndarray) -> np.ndarray:
    """Class labels (numpy) of population indices."""
    data = population_data(ctx.bench, ctx.dataset, pop_idx)
    y = data.y
    return y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)


def membership_report(
    name: str,
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    fprs: tuple[float, ...],
    n_boot: int,
    seed: int,
    extra_metrics: dict[str, float],
    arrays: dict[str, np.ndarray],
    notes: list[str],
) -> Report:
    """Headline metrics (AUC with a bootstrap CI, balanced accuracy, TPR at low FPR), the ROC
    as a curve (at most 256 points), and the per-example arrays."""
    metrics = attack_metrics(scores, is_member, fprs=fprs)
    if n_boot > 0:
        ci = bootstrap_ci(
            lambda s, m: auc(*roc(s, m)), scores, is_member, n_boot=n_boot, seed=seed,
            strata=is_member,
        )  # fmt: skip
        metrics |= {"auc_ci_low": ci.low, "auc_ci_high": ci.high}
    metrics |= extra_metrics
    fpr, tpr = roc(scores, is_member)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 256)).round().astype(int))
    curves = {"roc": {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}}
    arrays = {"scores": scores, "is_member": is_member.astype(np.int8), **arrays}
    return Report(name, metrics, arrays=arrays, curves=curves, notes=notes)


def _lira_scores(
    target: np.ndarray, signals: np.ndarray, is_in: np.ndarray, variant: str, **kw: Any
) -> np.ndarray:
    if variant == "online":
        return gaussian_llr(target, signals, is_in, **kw)
    test = "one-sided" if variant == "offline-one-sided" else "two-sided"
    return offline_score(target, signals, ~is_in, test=test, **kw)


def leave_one_out(
    signals: np.ndarray, is_in: np.ndarray, variant: str, **kw: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Every shadow in turn as the target, the other K-1 as its shadows (the papers' protocol:
    targets trained exactly like their shadows). Returns scores and labels, both (K, T)."""
    k = len(signals)
    scores = np.empty(signals.shape, dtype=np.float64)
    for j in range(k):
        rest = np.r_[0:j, j + 1 : k]
        scores[j] = _lira_scores(signals[j], signals[rest], is_in[rest], variant, **kw)
    return scores, is_in.astype(np.int8)


def _lira_audit(
    audit: Any,
    name: str,
    unlearned: nn.Module,
    ctx: Any,
    pool: TargetPool,
    plan: ShadowBank,
    shadow_out: np.ndarray,
    notes: list[str],
) -> Report:
    """Score the audited model's targets against the shadows' logits (K, T, C)."""
    targets = pool.targets
    y = labels_of(ctx, targets)
    data = population_data(ctx.bench, ctx.dataset, targets)
    target_phi = logit_scaled_confidence(predict_logits(unlearned, data, ctx.task), y)  # (T,)
    signals = np.stack([logit_scaled_confidence(lg, y) for lg in shadow_out])  # (K, T)
    is_in = plan.members[:, pool.target_cols]  # (K, T)
    kw = {"center": audit.center, "fix_variance": audit.fix_variance, "truncate": audit.truncate}
    all_scores = {v: _lira_scores(target_phi, signals, is_in, v, **kw) for v in VARIANTS}
    is_member = pool.is_member
    extra = {f"auc_{v.replace('-', '_')}": auc(*roc(s, is_member)) for v, s in all_scores.items()}
    # the same test with the shadows themselves as targets, pooled over the K of them
    loo, loo_in = leave_one_out(signals, is_in, audit.variant, **kw)
    extra |= {
        f"loo_{k}": v
        for k, v in attack_metrics(loo.ravel(), loo_in.ravel(), fprs=audit.fprs).items()
    }
    extra |= {"n_shadows": float(len(plan.seeds)), "n_targets": float(len(pool.forget))}
    return membership_report(
        name, all_scores[audit.variant], is_member, fprs=audit.fprs, n_boot=audit.n_boot,
        seed=ctx.seed, extra_metrics=extra,
        arrays={"target_idx": targets, "target_signal": target_phi},
        notes=notes,
    )  # fmt: skip


def _unlearning_of(ctx: Any, original: nn.Module, unlearned: nn.Module) -> str:
    """ "method", "identity" (the original row) or "retrain" (the oracle row, or no method)."""
    if getattr(ctx, "method", None) is not None:
        return "method"
    if unlearned is original:
        return "identity"
    a, b = original.state_dict(), unlearned.state_dict()
    if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a):
        return "identity"
    return "retrain"


# -- the audits -----------------------------------------------------------------------------------
@AUDITS.register("lira")
@dataclass(frozen=True)
class LiRA:
    """LiRA (Carlini et al. 2022): forget vs held-out targets on the audited model, scored
    against the shadows' IN/OUT Gaussians. Compare with the oracle row's numbers."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    n_shadows: int = 64  # shadow models (even): every pool example is IN for half of them
    n_targets: int = 500  # forget examples scored, and as many held-out test examples
    n_reference: int = 500  # further test examples in the shared pool (RMIA's population z)
    n_background: int = 10000  # retain examples filling the shadows' training halves
    variant: Variant = "online"  # headline test; the AUCs of all three are reported too
    fix_variance: bool = False  # one global std per population (better below ~64 shadows)
    center: Literal["median", "mean"] = "median"  # Gaussian centre (the reference uses medians)
    truncate: bool = True  # cut every example to the smallest IN/OUT count (reference code)
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these FPRs (last point strictly below)
    n_boot: int = 200  # bootstrap resamples for the AUC's 95% CI (0: no CI)
    tag: str = "mia"  # shadow-bank tag: audits with the same tag and pool share their shadows

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
        logits = shadow_logits(ctx, plan=plan, query_idx=pool.pool, tag=self.tag)[
            :, pool.target_cols
        ]
        notes = [f"LiRA ({self.variant}), {self.n_shadows} shadows, {pool.info}"]
        return _lira_audit(self, "lira", unlearned, ctx, pool, plan, logits, notes)


@AUDITS.register("u-lira")
@dataclass(frozen=True)
class ULiRA:
    """U-LiRA (Hayes et al. 2024): IN = shadows that trained on the target and unlearned it
    with the audited method, OUT = shadows that never saw it. 0.5 AUC is the ideal."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    n_shadows: int = 64  # shadow models (even), each also unlearned once by the method
    n_targets: int = 500  # forget examples scored, and as many held-out test examples
    n_reference: int = 500  # further test examples in the shared pool (RMIA's population z)
    n_background: int = 10000  # retain examples filling the shadows' training halves
    variant: Variant = "online"  # headline test; the AUCs of all three are reported too
    fix_variance: bool = False  # one global std per population (better below ~64 shadows)
    center: Literal["median", "mean"] = "median"  # Gaussian centre (the reference uses medians)
    truncate: bool = True  # cut every example to the smallest IN/OUT count (reference code)
    fprs: tuple[float, ...] = (0.01, 0.001)  # report TPR at these FPRs (last point strictly below)
    n_boot: int = 200  # bootstrap resamples for the AUC's 95% CI (0: no CI)
    tag: str = "mia"  # shadow-bank tag: audits with the same tag and pool share their shadows

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
        mode = _unlearning_of(ctx, original, unlearned)
        if mode == "identity":  # the original row: nothing unlearned, U-LiRA is LiRA
            logits = shadow_logits(ctx, plan=plan, query_idx=pool.pool, tag=self.tag)[
                :, pool.target_cols
            ]
            what = "no unlearning (original row): IN = the trained shadows"
        else:
            method = ctx.method if mode == "method" else None
            logits = unlearned_shadow_logits(
                ctx, plan=plan, forget_cols=pool.target_cols, query_idx=pool.targets,
                method=method, tag=self.tag,
            )  # fmt: skip
            what = (
                f"IN = shadows unlearned by {type(method).__name__}"
                if method is not None
                else "exact unlearning (oracle row): IN = shadows retrained without the targets"
            )
        notes = [f"U-LiRA ({self.variant}), {self.n_shadows} shadows, {what}, {pool.info}"]
        return _lira_audit(self, "u-lira", unlearned, ctx, pool, plan, logits, notes)
