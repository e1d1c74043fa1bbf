"""GradDiff: gradient difference for language models (Liu et al. 2022, "Continual learning and
private unlearning", arXiv:2203.12817; the TOFU baseline, Maini et al. 2024, arXiv:2401.06121).

Ascends the forget NLL and descends a retain term at once:
``L = gamma * (-NLL(D_f)) + alpha * L_ret`` with ``L_ret = NLL(D_r)`` or ``KL(pi_ref || pi_theta)``
on D_r. The forget term is unbounded below, so with a large lr it diverges (NPO's motivation).

Notation and reductions (OpenUnlearning ``src/trainer/unlearn/grad_diff.py``): both NLL terms are
the batch **token mean** (HF ``outputs.loss``: summed target-token NLL / target tokens in the
batch; ``task.loss`` is the per-example sum and ``batch["n_tokens"]`` the counts). The reference
pi_ref is a frozen copy of the input model, used only by ``retain_loss="kl"``. Deviation: the KL
term is averaged over the retain batch's target tokens, where OpenUnlearning averages over all
B*T positions (prompt and padding included, no mask).

Defaults: OpenUnlearning's (lr 1e-5, 10 epochs, effective batch 32 taken as one batch of 32,
AdamW, gamma = alpha = 1, gradient-norm clip 1.0 = the HF Trainer's max_grad_norm, weight decay
0.01 and LoRA lr 1e-4 as in its LoRA unlearning experiment; no warm-up). These lrs are for 7B
models fine-tuned at 1e-5; the tiny Llamas here are fine-tuned at 3e-3 and need an unlearning
lr around 1e-4..1e-3 (benchmarks/lm_npo.py).

This module also holds the small pieces the other LM methods share (npo, simnpo, rmu, idk-dpo):
the LoRA wrapper ``adapted``, the retain term, the guarded optimizer step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import frozen_copy, make_optimizer, paired_batches, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = [
    "LORA_TARGETS",
    "GradDiff",
    "adapted",
    "check_lm_task",
    "check_lora",
    "guarded_step",
    "lm_unlearn_loop",
    "retain_term",
    "token_mean",
]

# LoRA on every projection of a Llama block ("all-linear" without the vocabulary head).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- shared by the LM methods --------------------------------------------------------------------
def check_lm_task(task: Task, method: str) -> None:
    """TypeError unless ``task`` is the causal-LM Task (the methods need its batch structure)."""
    if getattr(task, "kind", None) != "lm":
        raise TypeError(
            f"{method} works on language models only (task kind 'lm'), got a task of kind "
            f"{getattr(task, 'kind', None)!r}. Use an lm-* benchmark, or a vision method "
            f"(grad-ascent, neggrad-plus, scrub) for classifiers."
        )


def check_lora(method: str, lora_r: int, lora_alpha: float) -> None:
    """ValueError for a LoRA rank or scale that peft cannot use."""
    if not isinstance(lora_r, int) or isinstance(lora_r, bool) or lora_r < 0:
        raise ValueError(
            f"{method}: lora_r={lora_r!r}; use 0 for full fine-tuning or a LoRA rank >= 1 "
            f"(8-32 is usual)"
        )
    if lora_r > 0 and lora_alpha <= 0:
        raise ValueError(f"{method}: lora_alpha={lora_alpha} must be > 0 (2 x lora_r is usual)")


def token_mean(per_example: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Batch token mean of a per-example summed loss: HF's ``outputs.loss`` reduction."""
    n = batch["n_tokens"].to(per_example.device).sum().clamp(min=1)
    return per_example.sum() / n


def retain_term(
    kind: str, model: nn.Module, ref: nn.Module | None, batch: Any, task: Task
) -> torch.Tensor:
    """The retain loss of GradDiff-style methods: token-mean NLL, or token-mean KL(ref || model)."""
    if kind == "nll":
        return token_mean(task.loss(model, batch), batch)
    if kind == "kl":
        if ref is None:
            raise ValueError("retain_loss='kl' needs the frozen reference model")
        return token_mean(task.divergence(model, ref, batch), batch)
    raise ValueError(f"retain_loss={kind!r}; use 'nll' or 'kl'")


def guarded_step(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    params: Sequence[nn.Parameter],
    *,
    clip: float,
    method: str,
    lr: float,
    step: int,
) -> None:
    """One optimizer step that refuses a non-finite loss or gradient (FloatingPointError)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{method}: the unlearning loss became {loss.item()} at step {step}; the update "
            f"diverged. Lower lr (now {lr:g}) or raise the retain weight alpha."
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(norm):
            raise FloatingPointError(
                f"{method}: the gradient norm became {norm.item()} at step {step}. Lower lr "
                f"(now {lr:g})."
            )
    opt.step()


@contextlib.contextmanager
def adapted(
    model: nn.Module,
    *,
    lora_r: int,
    lora_alpha: float,
    targets: Sequence[str],
) -> Iterator[nn.Module]:
    """The network to train: ``model`` itself (``lora_r == 0``) or a peft LoRA wrapper of it.

    peft injects the adapters into ``model`` in place; on a normal exit they are merged back
    (``obliviate.lm.models.merge_lora``), so ``model`` is again a plain model with its original
    state-dict keys and the runner and audits see nothing of LoRA. On an exception the adapters
    are dropped unmerged, leaving ``model`` as it came in. Every parameter's ``requires_grad``
    flag is restored on exit (LoRA and RMU freeze base weights while training).
    """
    flags = [p.requires_grad for p in model.parameters()]
    if lora_r == 0:
        try:
            yield model
        finally:
            for p, f in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(f)
        return
    from obliviate.lm.models import apply_lora, merge_lora

    net = apply_lora(model, r=lora_r, alpha=lora_alpha, target_modules=tuple(targets))
    ok = False
    try:
        yield net
        ok = True
    finally:
        merged = merge_lora(net) if ok else net.unload()
        if merged is not model:  # peft hands back the model it wrapped; keep that promise
            raise RuntimeError("peft returned a different module than the one it wrapped")
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)


def trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def lm_unlearn_loop(
    method: str,
    model: nn.Module,
    forget: Data,
    retain: Data,
    *,
    task: Task,
    budget: Budget,
    cfg: Any,
    loss_fn: Callable[[nn.Module, Any, Any], torch.Tensor],
) -> nn.Module:
    """The loop grad-diff, npo, simnpo and idk-dpo share; only their loss differs.

    ``cfg`` is the method's dataclass (lr, lora_*, weight_decay, batch_size, epochs, clip);
    ``loss_fn(net, forget_batch, retain_batch)`` is the scalar to minimise. AdamW on the trainable
    parameters (the LoRA adapters when ``cfg.lora_r > 0``), paired forget/retain batches clipped
    by the budget, every step through ``guarded_step``.
    """
    lr = cfg.lora_lr if cfg.lora_r > 0 else cfg.lr
    with (
        preserve_mode(model),
        adapted(
            model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, targets=cfg.lora_targets
        ) as net,
    ):
        net.train()
        params = trainable(net)
        opt = make_optimizer(params, "adamw", lr=lr, weight_decay=cfg.weight_decay)
        batches = paired_batches(
            task, forget, retain, batch_size=cfg.batch_size, epochs=cfg.epochs, budget=budget
        )
        for step, (f, r) in enumerate(batches):
            loss = loss_fn(net, f, r)
            guarded_step(opt, loss, params, clip=cfg.clip, method=method, lr=lr, step=step)
    return model


# -- the method ----------------------------------------------------------------------------------
@METHODS.register("grad-diff")
@dataclass(frozen=True)
class GradDiff:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    lr: float = 1e-5  # AdamW lr for full fine-tuning (OpenUnlearning; tiny Llamas need ~1e-3)
    epochs: float = 10.0  # passes over the forget set (OpenUnlearning: 10)
    batch_size: int = 32  # forget (and retain) examples per step: 8 x 4 accumulation in OU
    gamma: float = 1.0  # weight of the forget (ascent) term
    alpha: float = 1.0  # weight of the retain term
    retain_loss: Literal["nll", "kl"] = "nll"  # retain term; "kl" uses the frozen original
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    clip: float = 1.0  # max gradient norm (HF Trainer default); 0 disables
    lora_r: int = 0  # 0 = full fine-tuning; > 0 = LoRA rank, merged into the weights after
    lora_alpha: float = 32.0  # LoRA scale numerator (update scaled by lora_alpha / lora_r)
    lora_lr: float = 1e-4  # lr used instead of `lr` when lora_r > 0 (OpenUnlearning LoRA)
    lora_targets: tuple[str, ...] = LORA_TARGETS  # linear layers that get adapters

    def __post_init__(self) -> None:
        check_lora("grad-diff", self.lora_r, self.lora_alpha)
        if self.retain_loss not in ("nll", "kl"):
            raise ValueError(f"grad-diff: retain_loss={self.retain_loss!r}; use 'nll' or 'kl'")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_lm_task(task, "grad-diff")
        # the frozen original is needed only by the KL retain term
        ref = frozen_copy(model) if self.retain_loss == "kl" else None

        def loss_fn(net: nn.Module, f: Any, r: Any) -> torch.Tensor:
            forget_loss = -token_mean(task.loss(net, f), f)  # ascend the forget NLL
            return self.gamma * forget_loss + self.alpha * retain_term(
                self.retain_loss, net, ref, r, task
            )

        return lm_unlearn_loop(
            "grad-diff", model, forget, retain, task=task, budget=budget, cfg=self, loss_fn=loss_fn
        )
