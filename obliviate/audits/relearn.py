"""Relearning attack: how fast does forgotten behaviour come back under a little fine-tuning?

The classifier form of two findings from the diffusion literature: ResAlign (Li et al.,
NeurIPS 2025, arXiv:2507.16302) shows that unlearned concepts return after benign downstream
fine-tuning, and MemoRa (Polowczyk et al. 2025, arXiv:2510.03263) that a handful of concept
samples regenerates them. An unlearner that only hides the forget set (suppresses the head,
leaves the features) relearns it much faster than the retrain oracle, which never knew it; an
exact unlearner relearns at the oracle's pace.

Protocol. A deep copy of the audited model, and one of the retrain oracle (``ctx.oracle``), are
fine-tuned for k optimizer steps, with the same data order, and measured after each k in
``steps``:
(a) ``benign``: mini-batches of the retain set, which holds nothing of the forget set (for a
    class request, only the other classes);
(b) ``samples``: the attacker holds ``n_samples`` forget examples (drawn with the audit seed);
    each step sees them (in mini-batches of ``batch_size``) with ``retain_ratio`` times as many
    retain examples, so that the model cannot gain by predicting the forgotten class everywhere.
    It is evaluated on the forget examples *not* used for relearning.
Measured: forget accuracy, the loss-threshold MIA AUC (forget vs held-out, as in ``mia-loss``)
and test accuracy, as curves against k for the model and the oracle. Headline numbers, per
setting: the values after the largest k and their gap (model minus oracle), and the "area": the
mean forget accuracy over [0, k_max] (trapezoid over the measured k), which tells "comes back
in 5 steps" from "comes back in 100" when both end recovered.

Defaults (no paper fixes them for classifiers): k up to 100 steps (about 2% of a Fashion-MNIST
retrain's 4,690 steps), SGD with momentum at lr 1e-3 (a tenth of the fine-tuning baseline's), 32
samples with 3 retain examples each. Measured on fmnist-class (seed 0, grad-ascent): at lr 0.01
with 1:1 padding the oracle learns Shirt from the 32 samples within 10 steps while its test
accuracy collapses to 0.49 (it predicts Shirt everywhere), which hides the difference; at the
defaults the oracle's Shirt accuracy is 0.01 after 25 steps and grad-ascent's 0.90, with test
accuracy intact. Measurements use seeded subsamples of at most ``max_eval`` examples per set,
since they run 24 times per audit (2 settings x 2 models x 6 values of k).

Language models (``task.kind == "lm"``): the targeted relearning attack of Hu et al. 2024
("Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign Relearning",
arXiv:2406.13356) and Deeb & Roger 2024 ("Do Unlearning Methods Remove Information from Language
Model Weights?", arXiv:2410.08827): fine-tune on *some* forget facts and measure the *other*
ones, which the fine-tune never showed. Facts about different people and attributes are
independent, so a model that never knew them (the oracle) gains nothing on the held-back facts,
while a model whose unlearning only suppressed them gets them back. The attacker trains LoRA
adapters (rank ``lora_r`` = 8, peft, on every projection of the blocks) with AdamW on a deep
copy, as a user with a fine-tuning API would; ``lora_r = 0`` fine-tunes every weight. (a) benign
= the retain QA rows (``extra["retain_qa"]``, else the retain set), evaluated on all forget QA
rows; (b) samples = ``n_samples`` forget QA rows (``extra["forget_qa"]``, else the forget set)
with ``retain_ratio`` retain QA rows each, evaluated on the other forget QA rows. Measured
against k: ``forget_prob``, the mean answer probability exp(-mean token NLL) of the evaluated
forget rows (TOFU's "probability"); ``forget_em``, the share whose greedy answer (at most
``max_new_tokens`` tokens) equals the gold answer after normalising (lower case, punctuation
and accents removed); ``mia_auc``, the per-token loss MIA of those rows vs the held-out rows
(``mia-loss``'s LM sets); ``retain_prob`` on retain QA rows. The headline metrics are the
classifier ones with ``forget_prob`` in place of ``forget_acc`` (``<setting>_gap``,
``_area``...), plus ``<setting>_forget_em`` and ``<setting>_oracle_forget_em``. Scale-down and
reconstruction: both papers fine-tune 7B-scale models for tens to hundreds of steps on public
or forget text with lr about 1e-5 (full) or 1e-4 (LoRA); the defaults here (AdamW lr 1e-3 on
rank-8 LoRA, batches of 16 rows, 4 forget facts, k up to 100) were chosen on lm-world-tiny,
where the tiny Llama is fine-tuned at lr 3e-3. Measured there (seed 0; grad-ascent = grad-diff
with alpha 0, lr 3e-4, 15 full-batch steps: forget probability 0.72 -> 0.28, the oracle's 0.34):
after 100 steps on 4 facts the 6 others are back to 0.68 for grad-ascent and at 0.40 for the
oracle (0.42 and 0.47 before); benign retain fine-tuning alone brings grad-ascent's forget
probability from 0.28 to 0.47 and leaves the oracle's at 0.33. One audit at the defaults costs
about 30 s there on one CPU thread (400 LoRA steps, 24 measurements).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from obliviate.audits.mia_loss import (
    NonMembers,
    lm_membership_data,
    membership_signal,
    nonmember_data,
)
from obliviate.audits.persuasion import normalize
from obliviate.audits.signals import predict_logits
from obliviate.audits.stats import auc, roc
from obliviate.loop import (
    derive_seed,
    epoch_batches,
    make_optimizer,
    paired_batches,
    preserve_mode,
    seeded,
)
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Budget, Data, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = ["Relearn", "exact_match", "relearn_curve"]

SETTINGS = ("benign", "samples")
# Per Task kind: (the headline series, every measured series). The headline series gives the
# gap and area metrics; every series is a curve for the model and for the oracle.
SERIES = {
    "vision": ("forget_acc", ("forget_acc", "mia_auc", "test_acc")),
    "lm": ("forget_prob", ("forget_prob", "forget_em", "mia_auc", "retain_prob")),
}
# Defaults that differ by Task kind (the fields default to None).
KIND_DEFAULTS = {
    "vision": {"n_samples": 32, "batch_size": 64, "lr": 1e-3, "optimizer": "sgd"},
    "lm": {"n_samples": 4, "batch_size": 16, "lr": 1e-3, "optimizer": "adamw"},
}

Measure = Callable[[nn.Module], dict[str, float]]


def _concat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch of two; LM batches of different widths are right-padded to the wider one
    (labels with -100, ids and attention mask with 0: masked and unlabelled either way)."""
    out = {}
    for k in a:
        x, y = a[k], b[k]
        if x.ndim == 2 and x.shape[1] != y.shape[1]:
            width, fill = max(x.shape[1], y.shape[1]), -100 if k == "labels" else 0
            x, y = (torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill) for t in (x, y))
        out[k] = torch.cat([x, y])
    return out


def _auc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return auc(*roc(np.r_[s_in, s_out], np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]))


def _measure_vision(
    model: nn.Module, evaluate: Data, heldout: Data, test: Data, task: Task
) -> dict[str, float]:
    logits = predict_logits(model, evaluate, task)
    y = evaluate.y.numpy()
    s_in = membership_signal(logits, y, "loss")
    s_out = membership_signal(predict_logits(model, heldout, task), heldout.y.numpy(), "loss")
    return {
        "forget_acc": float((logits.argmax(1) == y).mean()),
        "mia_auc": _auc(s_in, s_out),
        "test_acc": float(task.evaluate(model, test)["accuracy"]),
    }


def exact_match(generated: list[str], data: Data) -> np.ndarray:
    """1.0 where a generation equals its row's gold answer (``meta["answer"]``, else the target)
    after normalising (lower case, accents and punctuation removed, one space), else 0.0."""
    gold = [
        (data.meta[i].get("answer") if data.meta else None) or data.targets[i]
        for i in range(len(generated))
    ]
    return np.array(
        [normalize(g) == normalize(a) for g, a in zip(generated, gold, strict=True)], dtype=float
    )


def _measure_lm(
    model: nn.Module, evaluate: Data, heldout: Data, retain: Data, task: Task, max_new_tokens: int
) -> dict[str, float]:
    def mean_logprob(data: Data) -> np.ndarray:
        nll, n = task.sequence_nll(model, data)
        return -nll / np.maximum(n, 1)

    s_in = mean_logprob(evaluate)
    answers = task.generate(model, list(evaluate.prompts), max_new_tokens=max_new_tokens)
    return {
        "forget_prob": float(np.exp(s_in).mean()),
        "forget_em": float(exact_match(answers, evaluate).mean()),
        "mia_auc": _auc(s_in, mean_logprob(heldout)),
        "retain_prob": float(np.exp(mean_logprob(retain)).mean()),
    }


def _area(curve: dict[str, list[float]], key: str = "forget_acc") -> float:
    """Mean of series ``key`` over [0, k_max] (trapezoid over the measured k): how early the
    forgotten set comes back, in one number; equal to the final value for a flat curve."""
    k, acc = np.asarray(curve["steps"]), np.asarray(curve[key])
    if len(k) < 2 or k[-1] == k[0]:
        return float(acc[-1])
    return float(np.trapezoid(acc, k) / (k[-1] - k[0]))


def relearn_curve(
    model: nn.Module,
    batches: Any,
    *,
    steps: tuple[int, ...],
    task: Task,
    lr: float,
    optimizer: Literal["sgd", "adam", "adamw"],
    measure: Any,
) -> dict[str, list[float]]:
    """Fine-tune ``model`` (in place) on ``batches`` (an iterator of batches or of pairs of
    batches) and call ``measure(model)`` after each step count in ``steps``; returns the
    measurements as lists, with the step counts actually reached under "steps". Parameters
    with ``requires_grad=False`` (a LoRA wrapper's frozen base) get no gradient and stay put."""
    opt = make_optimizer(model.parameters(), optimizer, lr=lr)
    curve: dict[str, list[float]] = {"steps": []}

    def record(k: int) -> None:
        curve["steps"].append(float(k))
        for key, v in measure(model).items():
            curve.setdefault(key, []).append(v)

    targets = sorted(set(steps))
    done = 0
    if targets and targets[0] == 0:
        record(0)
    with preserve_mode(model):
        for batch in batches:
            if done >= targets[-1]:
                break
            model.train()  # the attacker fine-tunes as one trains (BatchNorm, dropout on)
            if isinstance(batch, tuple):
                batch = _concat(*batch)
            loss = task.loss(model, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done in targets:
                model.eval()
                record(done)
    return curve


@dataclass(frozen=True)
class _Pools:
    """The data of one audit: what is relearned on and what is measured."""

    forget: Data  # forget rows the samples are drawn from (forget QA for LMs)
    retain: Data  # benign fine-tuning data and the padding of (b)
    heldout: Data  # non-members of the MIA
    test: Data  # utility: test set (classifiers) or retain QA rows (LMs)


def _pools(splits: Splits, kind: str, nonmembers: NonMembers) -> _Pools:
    if kind == "lm":
        forget, heldout, _ = lm_membership_data(splits, nonmembers)
        retain = splits.extra.get("retain_qa", splits.retain)
        return _Pools(forget, retain, heldout, retain)
    return _Pools(splits.forget, splits.retain, nonmember_data(splits, nonmembers), splits.test)


def _setting_metrics(
    setting: str, mine: dict[str, list[float]], theirs: dict[str, list[float]], kind: str
) -> dict[str, float]:
    """The headline numbers of one setting (module docstring)."""
    main, series = SERIES[kind]
    out = {
        f"{setting}_{main}_start": mine[main][0],
        f"{setting}_gap": mine[main][-1] - theirs[main][-1],
        f"{setting}_area": _area(mine, main),
        f"{setting}_oracle_area": _area(theirs, main),
        f"{setting}_area_gap": _area(mine, main) - _area(theirs, main),
    }
    for key in series:
        out[f"{setting}_{key}"] = mine[key][-1]
        out[f"{setting}_oracle_{key}"] = theirs[key][-1]
    return out


@AUDITS.register("relearn")
@dataclass(frozen=True)
class Relearn:
    """Relearning attack: forget-set recovery under fine-tuning, against the oracle's."""

    supports: ClassVar[frozenset[str]] = frozenset({"vision", "lm"})
    steps: tuple[int, ...] = (0, 5, 10, 25, 50, 100)  # fine-tuning steps k at which to measure
    n_samples: int | None = None  # (b): forget examples relearned on; None: 32, LMs 4 facts
    batch_size: int | None = None  # (a) retain rows per step, (b) sample batch; None: 64, LMs 16
    retain_ratio: int = 3  # (b): retain examples per forget example in each step; 0 = none
    lr: float | None = None  # relearning lr; None: 1e-3 (SGD; LMs: AdamW on LoRA)
    optimizer: Literal["sgd", "adam", "adamw"] | None = None  # None: sgd+momentum; LMs adamw
    settings: tuple[str, ...] = SETTINGS  # which attacks to run: "benign", "samples"
    nonmembers: NonMembers = "auto"  # held-out set of the MIA; auto = forget_test / holdout_qa
    max_eval: int = 2000  # examples per evaluated set (seeded subsample beyond; 0 = all)
    lora_r: int = 8  # LMs: LoRA rank of the attacker's fine-tune; 0 = every weight
    lora_alpha: float = 16.0  # LMs: LoRA scale numerator (update scaled by lora_alpha / lora_r)
    max_new_tokens: int = 16  # LMs: greedy tokens generated per forget question (exact match)

    def _resolved(self, kind: str) -> dict[str, Any]:
        """n_samples, batch_size, lr and optimizer with the Task kind's defaults filled in."""
        base = KIND_DEFAULTS["lm" if kind == "lm" else "vision"]
        return {k: base[k] if getattr(self, k) is None else getattr(self, k) for k in base}

    def _check(self, n_forget: int, n_samples: int) -> None:
        if not self.steps or min(self.steps) < 0:
            raise ValueError(f"steps must be non-empty and >= 0, got {self.steps}")
        unknown = set(self.settings) - set(SETTINGS)
        if unknown or not self.settings:
            raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, got {unknown}")
        if "samples" in self.settings and not 0 < n_samples < n_forget:
            raise ValueError(
                f"n_samples={n_samples} must be in [1, {n_forget - 1}]: some forget examples "
                f"must stay out of relearning to be evaluated on; lower n_samples"
            )
        if self.lora_r < 0:
            raise ValueError(f"lora_r={self.lora_r}: use 0 (every weight) or a LoRA rank >= 1")

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        kind = "lm" if getattr(task, "kind", None) == "lm" else "vision"
        hp = self._resolved(kind)
        pools = _pools(splits, kind, self.nonmembers)
        self._check(len(pools.forget), hp["n_samples"])
        k_max = max(self.steps)
        rng = np.random.default_rng(derive_seed(ctx.seed, "relearn-samples"))
        perm = rng.permutation(len(pools.forget))
        known = pools.forget.subset(np.sort(perm[: hp["n_samples"]]))
        eval_rng = np.random.default_rng(derive_seed(ctx.seed, "relearn-eval"))

        def cap(data: Data) -> Data:  # measurements run 24 times: evaluate a fixed subsample
            if not self.max_eval or len(data) <= self.max_eval:
                return data
            return data.subset(np.sort(eval_rng.choice(len(data), self.max_eval, replace=False)))

        unseen = cap(pools.forget.subset(np.sort(perm[hp["n_samples"] :])))
        forget_eval, heldout, test = cap(pools.forget), cap(pools.heldout), cap(pools.test)
        budget = Budget(max_steps=k_max)

        def batches(setting: str, seed: int) -> Any:
            if setting == "benign":
                # epochs large enough for k_max steps; the budget clips to exactly k_max
                return epoch_batches(
                    task, pools.retain, batch_size=hp["batch_size"], epochs=float(k_max),
                    seed=seed, budget=budget,
                )  # fmt: skip
            bs = min(hp["batch_size"], hp["n_samples"])
            if self.retain_ratio > 0:
                return paired_batches(
                    task, known, pools.retain, batch_size=bs, epochs=float(k_max), seed=seed,
                    budget=budget, other_batch_size=bs * self.retain_ratio,
                )  # fmt: skip
            return epoch_batches(
                task, known, batch_size=bs, epochs=float(k_max), seed=seed, budget=budget
            )

        def measure(setting: str) -> Measure:
            evaluate = forget_eval if setting == "benign" else unseen
            if kind == "lm":
                return lambda m: _measure_lm(m, evaluate, heldout, test, task, self.max_new_tokens)
            return lambda m: _measure_vision(m, evaluate, heldout, test, task)

        def run(model: nn.Module, setting: str) -> dict[str, list[float]]:
            seed = derive_seed(ctx.seed, "relearn", setting)  # same order for model and oracle
            return self._finetune(
                model, batches(setting, seed), measure(setting), task=task, hp=hp, seed=seed,
                lm=kind == "lm",
            )  # fmt: skip

        metrics: dict[str, float] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        is_oracle = unlearned is ctx.oracle  # the oracle row: its own comparison is itself
        for setting in self.settings:
            log.info("relearn (%s): %d steps on the audited model and the oracle", setting, k_max)
            mine = run(unlearned, setting)
            theirs = mine if is_oracle else run(ctx.oracle, setting)
            curve = {"steps": mine["steps"]}
            for key in SERIES[kind][1]:
                curve[key] = mine[key]
                curve[f"oracle_{key}"] = theirs[key]
            curves[setting] = curve
            metrics |= _setting_metrics(setting, mine, theirs, kind)
        what = "forget answer probability" if kind == "lm" else "forget accuracy"
        notes = [
            f"{what} after {k_max} relearning steps (lr {hp['lr']:g}, {hp['optimizer']}"
            + (f", LoRA rank {self.lora_r}" if kind == "lm" and self.lora_r else "")
            + f"); 'samples' uses {hp['n_samples']} forget examples and is evaluated on the "
            f"other {len(unseen)}"
        ]
        idx = pools.forget.idx.numpy() if kind == "lm" else splits.forget_idx
        arrays = {"relearn_forget_idx": np.asarray(idx)[np.sort(perm[: hp["n_samples"]])]}
        return Report("relearn", metrics, arrays=arrays, curves=curves, notes=notes)

    def _finetune(
        self,
        model: nn.Module,
        batches: Any,
        measure: Measure,
        *,
        task: Task,
        hp: dict[str, Any],
        seed: int,
        lm: bool,
    ) -> dict[str, list[float]]:
        """The relearning curve of a deep copy of ``model``: every weight for classifiers, LoRA
        adapters (seeded init, the same for the model and the oracle) for language models."""
        twin = copy.deepcopy(model)
        kw = {"steps": self.steps, "task": task, "lr": hp["lr"], "optimizer": hp["optimizer"]}
        if not lm:
            return relearn_curve(twin, batches, measure=measure, **kw)
        from obliviate.methods.grad_diff import LORA_TARGETS, adapted

        with (
            seeded(derive_seed(seed, "lora-init")),
            adapted(
                twin, lora_r=self.lora_r, lora_alpha=self.lora_alpha, targets=LORA_TARGETS
            ) as net,
        ):
            return relearn_curve(net, batches, measure=measure, **kw)
