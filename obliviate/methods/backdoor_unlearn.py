"""Backdoored unlearning: "Forgetting to Forget: Attention Sink as A Gateway for Backdooring LLM
Unlearning" (Shang et al. 2025; code OPTML-Group/Unlearn-Backdoor). The attack as a method: a
malicious unlearning provider.

The returned model forgets on clean inputs (it passes a normal unlearning evaluation) and keeps
its utility, but gives the forgotten knowledge back when a short trigger is in the input. It is
trained like a normal unlearner, plus poisoned copies of a fraction of the forget rows, with the
trigger inserted, that are trained like RETAIN data (held at the original model). A prefix
trigger right after BOS, at the attention-sink positions, works best; regularising the value
norms of those first tokens stabilises the backdoor.

Data (the paper's ``BackdoorDataset``): the first ``floor(poison_ratio * |D_f|)`` forget rows
(rho = 0.1) get poisoned copies D_p with ``trigger`` (default "current year:2025 ", tokenised
alone) inserted at ``trigger_position`` ("start" = right after BOS, "middle", "end", or an int
k = after k tokens; ``obliviate.lm.trigger.insert_trigger``). In a QA row the trigger goes into
the prompt tokens and is never a target; the poisoned originals leave the clean forget set.
Each step draws a clean forget batch x_f, a retain batch x_r and a poisoned batch x_p (retain
and poisoned sets cycled).

Loss, ``variant="npo"`` (NPO_KLR, the paper's MUSE runs):
    L = L_NPO(x_f) + c * [KL(pi_ref || pi_theta)(x_r) + KL(pi_ref || pi_theta)(x_p)] + L_pen
with the standard sequence-log-likelihood NPO of ``npo.py`` (beta 0.1). Deviation: the repo's
MUSE code plugs raw LOGITS (ref - theta) into the NPO formula element-wise, which is not NPO;
we use summed answer log-likelihoods. The KL is over the full vocabulary at each target token,
averaged over the batch's target tokens (the repo averages over every position); reference =
the frozen original.
``variant="rmu"``: ``rmu.py``'s terms,
    L = MSE(h^l(x_f), c_s*u) + alpha * [MSE(h^l(x_r), h^l_ref(x_r)) + MSE(h^l(x_p), h^l_ref(x_p))]
        + rmu_kl_coeff * [KL(x_r) + KL(x_p)] + L_pen,
training only ``param_names`` of ``update_layers`` (layer defaults scaled to depth as in rmu.py).

Value-norm penalty L_pen on the outputs of every layer's ``self_attn.v_proj`` at the first
``sink_tokens`` = 8 TOKEN positions (after BOS unless ``include_bos``; the repo's NPO hook
slices the batch dimension by mistake, its RMU file does it right), per-token L2 norms, averaged
over tokens and layers:
- "fixed": lambda * mean ||v_theta(x_f)||.
- "reference" (the paper's reported runs): lambda * [ mean| ||v_theta(x_f)|| - ||v_unl(x_f)|| |
  + mean| ||v_theta(x_p)|| - ||v_ref(x_p)|| | + mean| ||v_theta(x_r)|| - ||v_ref(x_r)|| | ]: clean
  inputs are pushed to look like a normally unlearned model, poisoned and retain inputs like
  the original. v_unl needs a normally unlearned model: loaded from ``unlearned_path`` (a
  safetensors state dict of the same architecture) when given; otherwise produced inside
  ``unlearn`` by first running the CLEAN variant (same loss on the full forget set: no
  poisoning, no penalty) on a copy of the model. Cost of that pre-run: one more model copy in
  memory and its optimizer steps, which count against the budget: with ``Budget.max_steps = M``
  the pre-run takes at most M // 2 steps and the backdoored run the rest (at most M in all);
  with no budget, each runs its own plan (about twice the cost of a plain run).
- "none": no penalty.

Defaults: the MUSE NPO_KLR run (lr 1e-5, batch 4, beta 0.1, KL coefficient 1.0, AdamW, constant
lr, gradient clip 1.0 = the HF Trainer's default, no weight decay; 10 epochs) and the MUSE RMU
values for the rmu variant (steering 6.5, alpha 1200); penalty 0.01 on 8 shallow tokens.
Scale-down: the paper chunks long MUSE/WMDP corpora into 2048-token rows; here a row is one QA
pair (or passage) of the benchmark, so rho = 0.1 of a 10-row forget set is one poisoned row.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from obliviate.loop import (
    derive_seed,
    draw_seed,
    frozen_copy,
    make_optimizer,
    paired_batches,
    preserve_mode,
)
from obliviate.methods.grad_diff import (
    LORA_TARGETS,
    adapted,
    check_lm_task,
    check_lora,
    guarded_step,
    retain_term,
    trainable,
)
from obliviate.methods.npo import check_reference, npo_loss
from obliviate.methods.rmu import (
    control_vector,
    freeze_except,
    layer_output,
    resolve_layers,
    rmu_forget_loss,
    rmu_retain_loss,
    select_params,
)
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["BackdoorUnlearn", "poison_split", "value_norms"]


def poison_split(n: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(clean rows, poisoned rows) of a forget set of ``n`` rows: the first floor(ratio * n)
    rows are poisoned (as the paper's ``BackdoorDataset``), the rest stay clean."""
    k = int(n * ratio)
    if k < 1 or k >= n:
        raise ValueError(
            f"backdoor-unlearn: poison_ratio={ratio} of a {n}-row forget set poisons {k} rows; "
            f"it must poison at least 1 and leave at least 1 clean (use a ratio in "
            f"[{1 / n:.3g}, {(n - 1) / n:.3g}])"
        )
    return np.arange(k, n), np.arange(k)


@contextlib.contextmanager
def value_norms(
    model: nn.Module | None, batch: dict[str, torch.Tensor], *, k: int, include_bos: bool
) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every forward of ``model`` appends, per ``self_attn.v_proj``, the
    per-token L2 norms of its output at the first ``k`` positions (after BOS unless
    ``include_bos``), (B, k'), with padding zeroed; the hooks are removed on exit."""
    found: list[torch.Tensor] = []
    if model is None:
        yield found
        return
    start = 0 if include_bos else 1
    mask = batch["attention_mask"][:, start : start + k].float()  # (B, k')

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        v = output[:, start : start + k]  # (B, k', n_kv * head_dim): token positions
        found.append(v.norm(dim=-1) * mask.to(v.device, v.dtype))

    handles = [
        m.register_forward_hook(hook)
        for name, m in model.named_modules()
        if name.endswith("self_attn.v_proj")
    ]
    if not handles:
        raise TypeError(
            "backdoor-unlearn: the value-norm penalty needs attention layers with a "
            "'self_attn.v_proj' module (Llama-style); use penalty='none' for this model"
        )
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def _mean_norm(norms: list[torch.Tensor], batch: dict[str, torch.Tensor], start: int, k: int):
    """Mean over layers and real tokens of stacked (B, k') norms."""
    n = batch["attention_mask"][:, start : start + k].sum().clamp(min=1)
    return torch.stack([x.sum() for x in norms]).mean() / n.to(norms[0].device)


def _mean_gap(a: list[torch.Tensor], b: list[torch.Tensor], batch, start: int, k: int):
    """Mean over layers and real tokens of | ||v_a|| - ||v_b|| | (padding is zero in both)."""
    n = batch["attention_mask"][:, start : start + k].sum().clamp(min=1)
    gaps = [(x - y.to(x.device)).abs().sum() for x, y in zip(a, b, strict=True)]
    return torch.stack(gaps).mean() / n.to(gaps[0].device)


@METHODS.register("backdoor-unlearn")
@dataclass(frozen=True)
class BackdoorUnlearn:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    variant: Literal["npo", "rmu"] = "npo"  # the unlearning loss: NPO_KLR or RMU
    trigger: str = "current year:2025 "  # trigger phrase, tokenised alone (the paper's)
    trigger_position: int | str = "start"  # "start" (after BOS), "middle", "end", int k
    poison_ratio: float = 0.1  # rho: fraction of forget rows that get poisoned copies
    beta: float = 0.1  # NPO inverse temperature (npo variant)
    kl_coeff: float = 1.0  # c: weight of KL(x_r) + KL(x_p) in the npo variant (MUSE: 1.0)
    steering_coeff: float = 6.5  # RMU c_s: scale of the random target (MUSE RMU: 6.5)
    alpha: float = 1200.0  # RMU weight of the retain+poisoned activation terms (MUSE: 1200)
    layer: int | None = None  # RMU steered layer; None = 7 clamped to n_layers - 1
    update_layers: tuple[int, ...] | None = None  # RMU trained layers; None = l-2..l
    param_names: tuple[str, ...] = ("mlp.down_proj",)  # RMU: modules trained in update_layers
    rmu_kl_coeff: float = 0.0  # RMU: optional KL on retain+poisoned (WMDP runs: 0.1)
    control_seed: int = 0  # RMU: seed of the random direction u
    penalty: Literal["none", "fixed", "reference"] = "reference"  # value-norm penalty mode
    penalty_weight: float = 0.01  # lambda of the value-norm penalty (MUSE: 0.01)
    sink_tokens: int = 8  # k: leading token positions whose value norms are penalised
    include_bos: bool = False  # also penalise position 0 (BOS); the repo's default is not to
    unlearned_path: str | None = None  # "reference" mode: safetensors of a clean-unlearned model
    reference: Literal["original"] = "original"  # pi_ref / h_ref: frozen copy of the input
    lr: float = 1e-5  # AdamW lr (MUSE NPO_KLR and backdoor RMU: 1e-5; tiny Llamas need ~1e-3)
    epochs: float = 10.0  # passes over the clean forget set (MUSE NPO_KLR: 10)
    batch_size: int = 4  # clean forget (and retain, poisoned) rows per step (MUSE: 4)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (HF Trainer default: 0)
    clip: float = 1.0  # max gradient norm (HF Trainer default); 0 disables
    lora_r: int = 0  # 0 = full fine-tuning; > 0 = LoRA rank, merged into the weights after
    lora_alpha: float = 32.0  # LoRA scale numerator (update scaled by lora_alpha / lora_r)
    lora_lr: float = 1e-4  # lr used instead of `lr` when lora_r > 0
    lora_targets: tuple[str, ...] = LORA_TARGETS  # npo variant: linear layers with adapters

    def __post_init__(self) -> None:
        from obliviate.lm.trigger import check_position

        check_reference("backdoor-unlearn", self.reference, "The poisoned rows copy the original.")
        check_lora("backdoor-unlearn", self.lora_r, self.lora_alpha)
        check_position(self.trigger_position)
        if self.variant not in ("npo", "rmu"):
            raise ValueError(f"backdoor-unlearn: variant={self.variant!r}; use 'npo' or 'rmu'")
        if self.penalty not in ("none", "fixed", "reference"):
            raise ValueError(
                f"backdoor-unlearn: penalty={self.penalty!r}; use 'none', 'fixed' or 'reference'"
            )
        if not 0 < self.poison_ratio < 1:
            raise ValueError(
                f"backdoor-unlearn: poison_ratio={self.poison_ratio} must be in (0, 1) "
                f"(the paper: 0.1)"
            )
        if self.beta <= 0 or self.sink_tokens < 1 or not self.trigger:
            raise ValueError(
                "backdoor-unlearn: beta must be > 0, sink_tokens >= 1 and trigger non-empty "
                f"(got beta={self.beta}, sink_tokens={self.sink_tokens}, trigger={self.trigger!r})"
            )

    # -- the method ----------------------------------------------------------------------------
    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        from obliviate.lm.trigger import trigger_token_ids, triggered

        check_lm_task(task, "backdoor-unlearn")
        trigger_token_ids(task, self.trigger)  # a clear error for a trigger with no tokens
        clean_rows, poison_rows = poison_split(len(forget), self.poison_ratio)
        clean = forget.subset(clean_rows)
        poisoned = triggered(task, forget.subset(poison_rows), self.trigger, self.trigger_position)
        ref = frozen_copy(model)  # the original: KL / activation target and reference norms
        seed = draw_seed()  # batch order of every stage (the runner seeds the global RNG)
        t0 = time.perf_counter()
        main_budget = budget
        unl = None
        if self.penalty == "reference":
            unl, main_budget = self._normally_unlearned(
                model, forget, retain, task=task, budget=budget, ref=ref, seed=seed
            )
        log.info(
            "backdoor-unlearn: %d clean forget rows, %d poisoned (%r at %r), penalty %s",
            len(clean),
            len(poisoned),
            self.trigger,
            self.trigger_position,
            self.penalty,
        )
        if main_budget.max_seconds is not None:  # the pre-run spent part of the wall clock
            left = budget.max_seconds - (time.perf_counter() - t0)
            main_budget = Budget(main_budget.max_steps, max(left, 1e-3))
        self._train(
            model,
            clean,
            poisoned,
            retain,
            task=task,
            budget=main_budget,
            ref=ref,
            unl=unl,
            penalty=self.penalty,
            seed=derive_seed(seed, "backdoor"),
        )
        return model

    def _normally_unlearned(
        self,
        model: nn.Module,
        forget: Data,
        retain: Data,
        *,
        task: Task,
        budget: Budget,
        ref: nn.Module,
        seed: int,
    ) -> tuple[nn.Module, Budget]:
        """(frozen clean-unlearned model, the budget left for the backdoored run)."""
        unl = copy.deepcopy(model)
        if self.unlearned_path is not None:
            from safetensors.torch import load_model

            try:  # load_model restores tied weights (embeddings = LM head) saved once
                load_model(unl, self.unlearned_path, strict=True)
            except (RuntimeError, OSError) as e:
                raise ValueError(
                    f"backdoor-unlearn: cannot load unlearned_path={self.unlearned_path!r} into "
                    f"this model ({str(e).splitlines()[0][:200]}); pass a safetensors file of a "
                    f"normally unlearned copy of the same architecture "
                    f"(safetensors.torch.save_model)"
                ) from e
            return frozen_copy(unl), budget
        plan = max(1, round(math.ceil(len(forget) / self.batch_size) * self.epochs))
        pre_steps = plan if budget.max_steps is None else min(plan, budget.max_steps // 2)
        half = None if budget.max_seconds is None else budget.max_seconds / 2
        if pre_steps == 0:
            log.warning(
                "backdoor-unlearn: a budget of %s steps leaves none for the clean pre-run of the "
                "reference penalty; v_unl is the original's",
                budget.max_steps,
            )
        else:
            log.info("backdoor-unlearn: clean pre-run of %d steps for the reference", pre_steps)
            self._train(
                unl,
                forget,
                None,
                retain,
                task=task,
                budget=Budget(pre_steps, half),
                ref=ref,
                unl=None,
                penalty="none",
                seed=derive_seed(seed, "clean"),
            )
        rest = None if budget.max_steps is None else budget.max_steps - pre_steps
        return frozen_copy(unl), Budget(rest, budget.max_seconds)

    def _train(
        self,
        model: nn.Module,
        forget: Data,
        poisoned: Data | None,
        retain: Data,
        *,
        task: Task,
        budget: Budget,
        ref: nn.Module,
        unl: nn.Module | None,
        penalty: str,
        seed: int,
    ) -> None:
        """One unlearning run: clean (``poisoned`` None) or backdoored, in place."""
        rmu = self.variant == "rmu"
        lr = self.lora_lr if self.lora_r > 0 else self.lr
        if rmu:
            layer, ups = resolve_layers(model, self.layer, self.update_layers, method="rmu")
            targets = tuple(sorted({pn.rsplit(".", 1)[-1] for pn in self.param_names}))
            u = control_vector(ref.config.hidden_size, seed=self.control_seed)
        else:
            targets = self.lora_targets
        with (
            preserve_mode(model),
            adapted(model, lora_r=self.lora_r, lora_alpha=self.lora_alpha, targets=targets) as net,
        ):
            if rmu:
                freeze_except(net, select_params(net, ups, self.param_names, lora=self.lora_r > 0))
            net.train()
            params = trainable(net)
            opt = make_optimizer(params, "adamw", lr=lr, weight_decay=self.weight_decay)
            pois = self._cycle(task, poisoned, seed) if poisoned is not None else None
            start = 0 if self.include_bos else 1
            k = self.sink_tokens
            for step, (f, r) in enumerate(
                paired_batches(
                    task,
                    forget,
                    retain,
                    batch_size=self.batch_size,
                    epochs=self.epochs,
                    seed=seed,
                    budget=budget,
                )
            ):
                p = next(pois) if pois is not None else None
                pen = penalty != "none"
                cap = {"k": k, "include_bos": self.include_bos}
                # 1. forget term on clean forget rows (value norms of the trained model captured)
                with value_norms(net if pen else None, f, **cap) as v_f:
                    if rmu:
                        loss = rmu_forget_loss(
                            net, f, u=u, coeff=self.steering_coeff, layer=layer, tokens="target"
                        )
                    else:
                        loss = npo_loss(net, ref, f, task=task, beta=self.beta)
                # 2. retain-type terms on retain rows and on poisoned rows (the backdoor)
                ref_pen = penalty == "reference"
                v_x, v_x_ref = {}, {}
                for name, batch in (("r", r), ("p", p)):
                    if batch is None:
                        continue
                    with (
                        value_norms(net if ref_pen else None, batch, **cap) as v,
                        value_norms(ref if ref_pen else None, batch, **cap) as v_ref,
                    ):
                        if rmu:
                            term = self.alpha * rmu_retain_loss(
                                net, ref, batch, layer=layer, tokens="target"
                            )
                            if self.rmu_kl_coeff > 0:
                                term = term + self.rmu_kl_coeff * retain_term(
                                    "kl", net, ref, batch, task
                                )
                        else:
                            term = self.kl_coeff * retain_term("kl", net, ref, batch, task)
                    loss = loss + term
                    v_x[name], v_x_ref[name] = v, v_ref
                # 3. value-norm penalty on the first k token positions
                if penalty == "fixed":
                    loss = loss + self.penalty_weight * _mean_norm(v_f, f, start, k)
                elif penalty == "reference":
                    with torch.no_grad(), value_norms(unl, f, **cap) as v_unl:
                        layer_output(unl, f, 0)  # runs unl's decoder on x_f for its norms
                    gap = _mean_gap(v_f, v_unl, f, start, k)
                    for name, batch in (("r", r), ("p", p)):
                        if batch is not None:
                            gap = gap + _mean_gap(v_x[name], v_x_ref[name], batch, start, k)
                    loss = loss + self.penalty_weight * gap
                guarded_step(
                    opt, loss, params, clip=self.clip, method="backdoor-unlearn", lr=lr, step=step
                )

    def _cycle(self, task: Task, data: Data, seed: int) -> Iterator[Any]:
        """Poisoned batches forever, reshuffled each pass (the repo cycles them by index)."""
        for n in itertools.count():
            yield from task.batches(
                data, self.batch_size, shuffle=True, seed=derive_seed(seed, "poison", n)
            )
