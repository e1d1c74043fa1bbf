"""Apollo: a posteriori label-only membership inference against machine unlearning
(Tang, Joshi, Kundu, arXiv:2506.09923; reference code LiouTang/Unlearn-Apollo-Attack, the
2025-05-23 "Under"/"Over" version).

The attacker sees only the top-1 label of the unlearned model and asks, for a sample (x, y):
was it unlearned, or never seen? Shadow models guide an adversarial walk away from x. IN
shadows trained on x and then unlearned it with the same algorithm; OUT shadows never saw x.
*Under-unlearning*: the walk keeps IN on y while pushing OUT off y; an unlearned sample whose
target still answers y far from x is flagged. *Over-unlearning*: the opposite walk; a target
that leaves y sooner than never-seen models would is flagged. The walk moves inside growing L2
shells, and the step at which to read the target's label is the first step at which the OUT
shadows' mean true-class logit crosses a threshold, swept over the held-out targets' values.

Notation (paper / code -> here): T = ``atk_epochs`` -> ``steps``; atk_lr -> ``lr``; eps ->
``eps`` (shell width, L2 on the [0, 1] pixel scale); (w0, w1) -> ``w``; N -> ``n_targets``;
num_shadow -> ``n_shadows``; the "unlearn" and "valid" targets -> forget targets and held-out
targets. Per target and step t = 0..T-1:

    L_under(x') = w0 * mean_IN CE(f(x'), y) - w1 * mean_OUT CE(f(x'), y);  L_over = -L_under
    x' <- x' - lr * grad L          (plain SGD on the input, as the reference's optim.SGD)
    project x' - x onto the shell t*eps <= ||x' - x||_2 <= (t+1)*eps; clamp x' to [0, 1]
    pred_t = argmax target(x')      (the only query to the target: a label)
    conf_t = mean_OUT f(x')[y]      (attacker side: the OUT shadows' raw true-class logit)

Decision at threshold th (swept over the held-out targets' conf values, plus +-inf): Under:
t* = first t with conf_t < th (else T-1), "unlearned" iff pred_{t*} == y; Over: t* = first t
with conf_t > th (else T-1), "unlearned" iff pred_{t*} != y. Each threshold is one operating
point (TPR on forget targets, FPR on held-out targets, precision); the points need not form a
monotone curve, so ``*_auc`` is the area under their ROC convex hull (randomising between two
rules reaches the segment between them; 0.5 = chance).

Our choices (the paper's code is followed otherwise):
- Pixel scale. Our images are normalised; the attack runs on the [0, 1] pixel scale that the
  reference uses, recovered from the training images' min and max (the normalised values of
  pixels 0 and 255), so ``lr`` and ``eps`` keep the paper's units.
- Shadows. ``shadows.shadow_bank`` (tag "apollo"): every target (forget and held-out, a pool
  from ``shadows.target_pool``) is IN for half of the K shadows, and ``n_background`` retain
  examples are in every shadow, so shadows are trained like the audited model (the reference
  trains target and shadows on 2,500 examples each). IN shadows are the trained shadows that
  unlearned their members among all targets with the audited method (a deep copy,
  ``method.unlearn(copy, forget=its targets, retain=the rest of its training set, budget=
  ctx.budget)``), as the reference does; they are cached (kind "apollo-unlearned").
- Rows without a method. Original row (nothing was unlearned): IN = the trained shadows that
  saw x, so Apollo is a label-only membership attack on the original. Oracle row (or any model
  audited without a method): exact unlearning makes a trained-then-unlearned model a model that
  never saw x, so by default (``exact="split-out"``) each target's OUT shadows are split in two
  halves, one playing IN and one OUT: the attack then has no signal by construction, and the
  oracle's numbers are the noise floor of the test at this bank size (with IN = OUT the loss is
  identically 0 at w0 = w1 and the walk never leaves x). ``exact="retrain"`` retrains every
  shadow without its targets instead (K more trainings, shared with the shadow cache).
- Thresholds also include +-inf (read the label at the first or the last step), so the sweep
  reaches its end points; precision with no positive prediction is reported as 0.5, the
  chance level of the balanced target set.
- ``gap_*``: the label-only baseline without perturbation ("y predicted at x" = unlearned).

Scale-down (CPU): K = 16 shadows and 200 + 200 targets in the paper; here 16 shadows and
100 + 100 targets by default, T = 30 steps and lr 0.1 as in the code. eps: the reference's 10
is for 32x32x3 CIFAR images; on 28x28 Fashion-MNIST ``eps=0.3`` takes the OUT shadows' mean
true-class logit from about 9.5 at x to between -3.5 and +0.5 by step 30 (fmnist-random10, 4
shadows; chance is about 0), and on the 8x8 digits from 7.8 to -5 (crossing 0 near step 12).
Shadows train on about 10,000 examples (the original on 60,000): ~10 s each on 2 idle cores.
Queries: each target costs 2T + 1 label queries (both walks and the gap baseline), counted by
``LabelOracle`` and reported. Expect far less signal than the paper reports: its targets
train on 2,500 CIFAR images and memorise them, ours on 60,000 Fashion-MNIST images with a
3-point train/test gap, so labels near a member barely differ from labels near a non-member.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.audits.shadows import (
    ShadowBank,
    TargetPool,
    population_data,
    shadow_bank,
    target_pool,
    train_models,
)
from obliviate.loop import derive_seed, frozen_copy, seeded
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task, index_hash

log = logging.getLogger(__name__)

__all__ = ["Apollo", "LabelOracle", "apollo_walk", "hull_auc", "operating_points", "project_shell"]

VARIANTS = ("under", "over")


class LabelOracle:
    """The audited model as the attacker sees it: top-1 labels only, every query counted."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self.queries = 0  # examples sent to the model, one label each

    @torch.no_grad()
    def labels(self, x: torch.Tensor) -> torch.Tensor:
        training = self._model.training
        self._model.eval()
        try:
            out = self._model(x).argmax(1)
        finally:
            self._model.train(training)
        self.queries += len(x)
        return out


def project_shell(x0: torch.Tensor, x: torch.Tensor, r_in: float, r_out: float) -> torch.Tensor:
    """Scale each delta x - x0 (per example, L2 over all pixels) into r_in <= ||d|| <= r_out,
    as the reference's two ``proj`` calls ("in", then "out"); a zero delta stays zero."""
    d = x - x0
    norm = d.flatten(1).norm(dim=1)  # (B,)
    safe = norm.clamp_min(1e-12)
    inner = (r_out / safe).clamp(max=1.0)  # "in": pull inside the outer sphere
    outer = (r_in / (safe * inner)).clamp(min=1.0)  # "out": push beyond the inner sphere
    scale = torch.where(norm > 0, inner * outer, torch.ones_like(norm))
    return x0 + d * scale.view(-1, *([1] * (x.dim() - 1)))


def apollo_walk(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    in_models: list[nn.Module],
    out_models: list[nn.Module],
    role: np.ndarray,
    target: LabelOracle,
    sign: float,
    steps: int,
    lr: float,
    eps: float,
    w: tuple[float, float],
    lo: float,
    hi: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One Apollo walk for a batch of targets; returns conf (B, T) and pred (B, T).

    ``role`` (K, B): +1 when shadow k plays IN for target b (``in_models[k]`` is used), -1 for
    OUT (``out_models[k]``), 0 unused. ``sign`` +1 is the Under loss, -1 the Over loss. Inputs
    ``x`` are in the models' (normalised) scale; the walk runs on the [0, 1] pixel scale
    ``(x - lo) / (hi - lo)``.
    """
    span = hi - lo
    p0 = ((x - lo) / span).detach()  # (B, C, H, W) pixels in [0, 1]
    is_in = torch.as_tensor(role == 1)
    is_out = torch.as_tensor(role == -1)
    has_out = (is_out.sum(0) > 0).numpy()  # (B,) the reference scores an empty side as 0
    n_in = is_in.sum(0).clamp_min(1).double()
    n_out = is_out.sum(0).clamp_min(1).double()
    coef = sign * (w[0] * is_in / n_in - w[1] * is_out / n_out)  # (K, B) weight of CE_k(x'_b)
    yy = y.long()
    p = p0.clone()
    conf = np.zeros((len(x), steps))
    pred = np.zeros((len(x), steps), dtype=np.int64)
    for t in range(steps + 1):
        p.requires_grad_(t < steps)
        xin = lo + p * span
        total = torch.zeros((), dtype=torch.float64)
        out_logit = torch.zeros(len(x), dtype=torch.float64)
        for k in range(len(role)):
            for models, mask in ((in_models, is_in[k]), (out_models, is_out[k])):
                cols = torch.nonzero(mask).flatten()
                if len(cols) == 0:
                    continue
                logits = models[k](xin[cols])  # (b, C)
                if t < steps:
                    ce = F.cross_entropy(logits, yy[cols], reduction="none").double()
                    total = total + (coef[k, cols] * ce).sum()
                if models is out_models:
                    z = logits.detach().double().gather(1, yy[cols, None]).squeeze(1)
                    out_logit = out_logit.index_add(0, cols, z)
        if t > 0:  # the OUT logits at the point queried after step t-1
            conf[:, t - 1] = (out_logit / n_out).numpy() * has_out
        if t == steps:
            break
        (grad,) = torch.autograd.grad(total, p) if total.requires_grad else (torch.zeros_like(p),)
        with torch.no_grad():
            p = p - lr * grad  # 1. SGD on the input (momentum 0, as the reference's optim.SGD)
            p = project_shell(p0, p, eps * t, eps * (t + 1))  # 2. into the t-th shell
            p = p.clamp(0.0, 1.0)  # 3. a valid image
            pred[:, t] = target.labels(lo + p * span).numpy()  # 4. the one label query
    return conf, pred


def _decisions(
    conf: np.ndarray, pred: np.ndarray, y: np.ndarray, th: np.ndarray, variant: str
) -> np.ndarray:
    """(n_th, N) bool "unlearned" by the first-crossing rule at every threshold."""
    steps = conf.shape[1]
    cross = conf[None] < th[:, None, None] if variant == "under" else conf[None] > th[:, None, None]
    t_star = np.where(cross.any(2), cross.argmax(2), steps - 1)  # (n_th, N)
    label = pred[np.arange(len(y))[None], t_star]
    return label == y[None] if variant == "under" else label != y[None]


def operating_points(
    conf: np.ndarray, pred: np.ndarray, y: np.ndarray, is_member: np.ndarray, variant: str
) -> dict[str, np.ndarray]:
    """Every threshold's (TPR, FPR, precision): thresholds are the non-members' conf values
    (the reference sweeps the "valid" targets') and +-inf."""
    member = is_member.astype(bool)
    th = np.r_[-np.inf, np.unique(conf[~member]), np.inf]
    pos = _decisions(conf, pred, y, th, variant)
    tp, fp = pos[:, member].sum(1), pos[:, ~member].sum(1)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.5)
    return {
        "threshold": th,
        "tpr": tp / max(member.sum(), 1),
        "fpr": fp / max((~member).sum(), 1),
        "precision": precision,
    }


def hull_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC convex hull of operating points (Provost & Fawcett 2001).

    Flipping a coin between two decision rules reaches every point of the segment between
    them, so the attacker's achievable ROC is the upper hull of the points with (0, 0) and
    (1, 1) added: 0.5 for rules that tell nothing, 1 for one that separates perfectly.
    """
    xs, ys = np.r_[0.0, fpr, 1.0].tolist(), np.r_[0.0, tpr, 1.0].tolist()
    pts = sorted(set(zip(xs, ys, strict=True)))
    hull: list[tuple[float, float]] = []
    for p in pts:  # Andrew's monotone chain, upper half: drop points under the chord
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    xs, ys = np.array(hull).T
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))


def _summarise(points: dict[str, np.ndarray], fprs: tuple[float, ...], prefix: str) -> dict:
    tpr, fpr, prec = points["tpr"], points["fpr"], points["precision"]
    out: dict[str, float] = {}
    for a in fprs:
        ok = np.flatnonzero(fpr <= a + 1e-12)
        if len(ok) == 0:
            out |= {f"{prefix}_tpr@{a:g}": 0.0, f"{prefix}_precision@{a:g}": 0.5}
            continue
        best = ok[np.lexsort((-prec[ok], -tpr[ok]))[0]]  # highest TPR, then highest precision
        out |= {
            f"{prefix}_tpr@{a:g}": float(tpr[best]),
            f"{prefix}_precision@{a:g}": float(prec[best]),
        }
    out[f"{prefix}_auc"] = hull_auc(fpr, tpr)
    out[f"{prefix}_best_bacc"] = float(np.max((tpr + 1 - fpr) / 2))
    return out


def _mode(ctx: Any, original: nn.Module, unlearned: nn.Module) -> str:
    """ "method", "identity" (the original row) or "exact" (the oracle row, or no method)."""
    if getattr(ctx, "method", None) is not None:
        return "method"
    if unlearned is original:
        return "identity"
    a, b = original.state_dict(), unlearned.state_dict()
    if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a):
        return "identity"
    return "exact"


@AUDITS.register("apollo")
@dataclass(frozen=True)
class Apollo:
    """Apollo (Tang et al. 2025): label-only, shadow-guided adversarial walks; Under- and
    Over-unlearning precision/recall of "unlearned" vs "never seen". Compare with the oracle."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    n_shadows: int = 16  # K shadow models (even); each target is IN for half of them
    n_targets: int = 100  # forget targets attacked, and as many held-out ones (paper: 200)
    n_background: int = 10000  # retain examples in every shadow (shadows trained like the target)
    steps: int = 30  # T: walk steps = shells = label queries per walk (paper: atk_epochs 30)
    lr: float = 0.1  # SGD step on the input, [0, 1] pixel scale (paper: atk_lr 0.1)
    eps: float = 0.3  # shell width, L2 on the [0, 1] pixel scale (paper: 10 for CIFAR; tune it)
    w: tuple[float, float] = (1.0, 1.0)  # (w0, w1): weights of the IN and OUT CE terms
    exact: Literal["split-out", "retrain"] = "split-out"  # IN models when no method (oracle row)
    fprs: tuple[float, ...] = (0.01, 0.05, 0.1)  # report TPR and precision at these FPRs
    batch_size: int = (
        256  # targets walked together (memory and speed; the same up to float rounding)
    )
    tag: str = "apollo"  # shadow-bank tag

    def __post_init__(self) -> None:
        if self.n_shadows < 2 or self.n_shadows % 2:
            raise ValueError(
                f"n_shadows must be even and >= 2 (balanced IN/OUT), got {self.n_shadows}"
            )
        if self.steps < 1 or self.eps <= 0 or self.lr < 0:
            raise ValueError(
                f"need steps >= 1, eps > 0 and lr >= 0; got steps={self.steps}, eps={self.eps}, "
                f"lr={self.lr}"
            )
        if len(self.w) != 2:
            raise ValueError(f"w is the pair (w0, w1), got {self.w!r}")
        if self.exact not in ("split-out", "retrain"):
            raise ValueError(f"exact must be 'split-out' or 'retrain', got {self.exact!r}")

    # -- the IN models -------------------------------------------------------------------------
    def _unlearned_shadows(self, ctx: Any, pool: TargetPool, bank: ShadowBank) -> list[nn.Module]:
        """Every shadow after unlearning its members among the targets with ctx.method (cached)."""
        method = ctx.method
        params = dataclasses.asdict(method) if dataclasses.is_dataclass(method) else repr(method)
        method_id = {
            "type": f"{type(method).__module__}.{type(method).__qualname__}",
            "params": params,
        }
        log.info("apollo: %d shadows unlearn their targets with %s", len(bank.models), method)
        out = []
        for k, shadow in enumerate(bank.models):
            train_idx = bank.train_idx(k)
            is_target = np.isin(train_idx, pool.targets)
            forget_idx, retain_idx = train_idx[is_target], train_idx[~is_target]
            seed = derive_seed(ctx.seed, "apollo-unlearn", self.tag, k)
            request = {
                "what": "apollo-unlearned-shadow", "bench": ctx.bench.identity(),
                "shadow": {"train_idx": index_hash(train_idx), "seed": int(bank.seeds[k])},
                "forget": index_hash(forget_idx), "method": method_id,
                "budget": dataclasses.asdict(ctx.budget), "seed": int(seed),
            }  # fmt: skip

            def unlearn(model: nn.Module, f=forget_idx, r=retain_idx, s=seed) -> dict[str, Any]:
                forget = population_data(ctx.bench, ctx.dataset, f)
                retain = population_data(ctx.bench, ctx.dataset, r)
                with seeded(s):
                    got = method.unlearn(model, forget, retain, task=ctx.task, budget=ctx.budget)
                if got is not model:  # a method may return a new module: store its weights
                    model.load_state_dict(got.state_dict())
                return {"n_forget": int(len(f)), "n_retain": int(len(r))}

            model, _ = ctx.cache.get_or_train(
                "apollo-unlearned", request, lambda m=shadow: copy.deepcopy(m), unlearn
            )
            bad = [
                n
                for n, p in model.state_dict().items()
                if p.is_floating_point() and not torch.isfinite(p).all()
            ]
            if bad:
                raise FloatingPointError(
                    f"{type(method).__name__} made shadow {k}'s weights non-finite ({bad[0]}): "
                    f"the method diverged on a shadow model. Lower its learning rate."
                )
            out.append(model)
        return out

    def _roles(
        self,
        ctx: Any,
        original: nn.Module,
        unlearned: nn.Module,
        pool: TargetPool,
        bank: ShadowBank,
    ) -> tuple[list[nn.Module], list[nn.Module], np.ndarray, str]:
        """(IN models, OUT models, role (K, N), what) for this row."""
        members = bank.members[:, pool.target_cols]  # (K, N) shadow k trained on target n
        role = np.where(members, 1, -1)
        mode = _mode(ctx, original, unlearned)
        if mode == "method":
            ins = self._unlearned_shadows(ctx, pool, bank)
            return ins, bank.models, role, f"IN = shadows unlearned by {type(ctx.method).__name__}"
        if mode == "identity":
            return (
                bank.models,
                bank.models,
                role,
                "no unlearning (original row): IN = trained shadows",
            )
        if self.exact == "retrain":
            sets = [np.setdiff1d(bank.train_idx(k), pool.targets) for k in range(len(bank.seeds))]
            ins = train_models(ctx, sets, bank.seeds, kind="shadow")
            what = "exact unlearning (oracle row): IN = shadows retrained without the targets"
            return ins, bank.models, role, what
        # split-out: each target's OUT shadows, in a seeded random order, half IN half OUT
        rng = np.random.default_rng(derive_seed(ctx.seed, "apollo-split", self.tag))
        role = np.zeros(members.shape, dtype=np.int64)
        for n in range(members.shape[1]):
            outs = rng.permutation(np.flatnonzero(~members[:, n]))
            half = len(outs) // 2
            role[outs[:half], n], role[outs[half:], n] = 1, -1
        what = "exact unlearning (oracle row): IN and OUT = two halves of the OUT shadows"
        return bank.models, bank.models, role, what

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        pool = target_pool(
            ctx, n_targets=self.n_targets, n_reference=0, n_background=self.n_background,
            tag=self.tag,
        )  # fmt: skip
        bank = shadow_bank(
            ctx, n_models=self.n_shadows, pool_idx=pool.pool, tag=self.tag,
            always_in=pool.background,
        )  # fmt: skip
        ins, outs, role, what = self._roles(ctx, original, unlearned, pool, bank)
        ins, outs = [frozen_copy(m) for m in ins], [frozen_copy(m) for m in outs]
        data = population_data(ctx.bench, ctx.dataset, pool.targets)
        x, y = data.x, data.y.long()
        train_x = ctx.dataset.train.x
        lo, hi = float(train_x.min()), float(train_x.max())  # normalised pixels 0 and 255
        oracle = LabelOracle(copy.deepcopy(unlearned))  # never touch the audited model

        # 0. the gap baseline: the label at x itself
        gap = np.concatenate([oracle.labels(x[s : s + self.batch_size]).numpy()
                              for s in range(0, len(x), self.batch_size)])  # fmt: skip
        conf, pred = {}, {}
        for variant, sign in zip(VARIANTS, (1.0, -1.0), strict=True):
            cs, ps = [], []
            for s in range(0, len(x), self.batch_size):
                sl = slice(s, s + self.batch_size)
                c, p = apollo_walk(
                    x[sl], y[sl], in_models=ins, out_models=outs, role=role[:, sl],
                    target=oracle, sign=sign, steps=self.steps, lr=self.lr, eps=self.eps,
                    w=self.w, lo=lo, hi=hi,
                )  # fmt: skip
                cs.append(c)
                ps.append(p)
            conf[variant], pred[variant] = np.concatenate(cs), np.concatenate(ps)

        yn, is_member = y.numpy(), pool.is_member
        member = is_member.astype(bool)
        gap_pos = gap == yn
        metrics: dict[str, float] = {
            "gap_tpr": float(gap_pos[member].mean()),
            "gap_fpr": float(gap_pos[~member].mean()),
        }
        curves: dict[str, dict[str, list[float]]] = {}
        arrays: dict[str, np.ndarray] = {
            "target_idx": pool.targets, "is_member": is_member.astype(np.int8), "y": yn,
            "gap_pred": gap,
        }  # fmt: skip
        for v in VARIANTS:
            pts = operating_points(conf[v], pred[v], yn, is_member, v)
            metrics |= _summarise(pts, self.fprs, v)
            order = np.lexsort((pts["tpr"], pts["fpr"]))
            curves[f"roc_{v}"] = {
                "fpr": pts["fpr"][order].tolist(),
                "tpr": pts["tpr"][order].tolist(),
            }
            arrays |= {f"{v}_conf": conf[v], f"{v}_pred": pred[v]}
            # per step: the OUT shadows' mean true-class logit and how often the target keeps y
            curves[f"walk_{v}"] = {
                "out_logit": conf[v].mean(0).tolist(),
                "target_keeps_y_forget": (pred[v][member] == yn[member, None]).mean(0).tolist(),
                "target_keeps_y_heldout": (pred[v][~member] == yn[~member, None]).mean(0).tolist(),
            }
        # how far the walks go: the OUT shadows' mean true-class logit at the first/last step
        metrics |= {
            "under_out_logit_first": float(conf["under"][:, 0].mean()),
            "under_out_logit_last": float(conf["under"][:, -1].mean()),
            "queries": float(oracle.queries),
            "queries_per_target": float(oracle.queries / max(len(x), 1)),
            "n_shadows": float(self.n_shadows),
            "n_targets": float(len(pool.forget)),
        }
        notes = [f"Apollo, {self.n_shadows} shadows, {what}, {pool.info}"]
        return Report("apollo", metrics, arrays=arrays, curves=curves, notes=notes)
