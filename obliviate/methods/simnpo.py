"""SimNPO: simple, reference-free NPO (Fan, Liu, Lin, Jia, Zhang, Mei & Liu 2024, "Simplicity
Prevails: Rethinking Negative Preference Optimization for LLM Unlearning", arXiv:2410.07163).

NPO's reference model biases unlearning towards answers the reference already finds unlikely
(short or hard ones get little push). SimNPO drops the reference and length-normalises the
likelihood instead, as SimPO does for DPO: every forget answer is pushed by its per-token NLL.

Notation and reductions (OpenUnlearning ``src/trainer/unlearn/simnpo.py``): with
``nll_bar = NLL(y|x) / |y|`` (the per-example **sum** ``task.loss`` divided by the per-example
token count ``batch["n_tokens"]``: a per-token mean), the forget loss is
``-(2/beta) * mean log sigma(beta * (nll_bar - delta))``, total ``gamma * forget + alpha * L_ret``
(retain term as in grad-diff: token-mean NLL, or token-mean KL to a frozen copy of the input
model). ``delta`` sits inside beta as in OpenUnlearning; the paper writes the margin outside,
``sigma(beta * nll_bar - gamma_paper)``, so ``gamma_paper = beta * delta`` (both 0 by default).
OpenUnlearning's ``gamma`` is the forget-term weight, not the margin, and so is ours.

Reference: none for the forget term. A frozen copy of the input model is made only for
``retain_loss="kl"``.

Defaults: OpenUnlearning's SimNPO config (beta 4.5, delta 0, gamma 0.125, alpha 1, NLL retain,
lr 1e-5, 10 epochs, batch 32); optimiser, clip and LoRA fields as in grad_diff.py (tiny Llamas
need lr ~1e-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from obliviate.loop import frozen_copy
from obliviate.methods.grad_diff import (
    LORA_TARGETS,
    check_lm_task,
    check_lora,
    lm_unlearn_loop,
    retain_term,
)
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task


@METHODS.register("simnpo")
@dataclass(frozen=True)
class SimNPO:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    beta: float = 4.5  # inverse temperature on the per-token NLL
    delta: float = 0.0  # margin in nats/token inside beta (paper's gamma = beta * delta)
    gamma: float = 0.125  # weight of the SimNPO forget term (OpenUnlearning's gamma)
    alpha: float = 1.0  # weight of the retain term
    retain_loss: Literal["nll", "kl"] = "nll"  # retain term (token mean); "kl" copies the input
    lr: float = 1e-5  # AdamW lr for full fine-tuning (OpenUnlearning; tiny Llamas need ~1e-3)
    epochs: float = 10.0  # passes over the forget set
    batch_size: int = 32  # forget (and retain) examples per step
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    clip: float = 1.0  # max gradient norm (HF Trainer default); 0 disables
    lora_r: int = 0  # 0 = full fine-tuning; > 0 = LoRA rank, merged into the weights after
    lora_alpha: float = 32.0  # LoRA scale numerator (update scaled by lora_alpha / lora_r)
    lora_lr: float = 1e-4  # lr used instead of `lr` when lora_r > 0 (OpenUnlearning LoRA)
    lora_targets: tuple[str, ...] = LORA_TARGETS  # linear layers that get adapters

    def __post_init__(self) -> None:
        check_lora("simnpo", self.lora_r, self.lora_alpha)
        if self.beta <= 0:
            raise ValueError(f"simnpo: beta={self.beta} must be > 0 (the paper uses 2.5-4.5)")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_lm_task(task, "simnpo")
        ref = frozen_copy(model) if self.retain_loss == "kl" else None

        def loss_fn(net: nn.Module, f: dict, r: dict) -> torch.Tensor:
            loss = self.gamma * simnpo_loss(net, f, task=task, beta=self.beta, delta=self.delta)
            return loss + self.alpha * retain_term(self.retain_loss, net, ref, r, task)

        return lm_unlearn_loop(
            "simnpo", model, forget, retain, task=task, budget=budget, cfg=self, loss_fn=loss_fn
        )


def simnpo_loss(
    model: nn.Module, batch: dict, *, task: Task, beta: float, delta: float
) -> torch.Tensor:
    """``-(2/beta) * mean log sigma(beta * (NLL/|y| - delta))``: reference-free, per token."""
    n = batch["n_tokens"].to(dtype=torch.float32).clamp(min=1)  # (B,) answer tokens
    nll_bar = task.loss(model, batch) / n.to(next(model.parameters()).device)  # (B,)
    return -2.0 / beta * F.logsigmoid(beta * (nll_bar - delta)).mean()
