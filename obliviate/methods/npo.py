"""NPO: Negative Preference Optimization (Zhang, Lin, Bai & Mei 2024, "Negative Preference
Optimization: From Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868).

DPO with only a losing response: push the forget answers' likelihood below a frozen reference
copy of the input model. The loss ``(2/beta) * log(1 + (pi_theta / pi_ref)^beta)`` is bounded
below by 0 and its gradient is gradient ascent's weighted by ``2 * sigma(beta * log_ratio)``,
which vanishes once an answer is forgotten, so NPO does not run away the way gradient ascent
does (the paper's point: "catastrophic collapse" is slowed exponentially).

Notation: ``log_ratio = log pi_theta(y|x) - log pi_ref(y|x)`` with sequence log-likelihoods, the
**sum** over answer tokens (``task.loss`` is the per-example summed NLL, so
``log_ratio = task.loss(ref) - task.loss(model)``), as in the paper and OpenUnlearning's
``compute_dpo_loss``. Forget loss ``-(2/beta) * mean log sigma(-beta * log_ratio)`` (= the
softplus form), total ``gamma * forget + alpha * L_ret`` with the retain term as in grad-diff
(token-mean NLL, or token-mean KL to the reference). As beta -> 0 the forget loss tends to
``log_ratio + 2 log 2 / beta``: gradient ascent on the summed NLL.

Reference: required. ``reference="original"`` (the only value) is a frozen copy of the model
passed to ``unlearn``, taken before any LoRA adapter; "none" is refused with a pointer to simnpo,
the reference-free variant.

Defaults: OpenUnlearning's ``NPO`` trainer config (beta 0.1, gamma = alpha = 1, NLL retain, lr
1e-5, 10 epochs, batch 32); see grad_diff.py for the optimiser, clip and LoRA fields and for the
lr the tiny Llamas need (~1e-3).
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


def check_reference(method: str, reference: str, alternative: str) -> None:
    """ValueError unless the method's reference is the frozen original it cannot do without."""
    if reference != "original":
        raise ValueError(
            f"{method}: reference={reference!r}, but {method}'s loss is measured against a "
            f"reference model: it needs reference='original' (a frozen copy of the model before "
            f"unlearning). {alternative}"
        )


@METHODS.register("npo")
@dataclass(frozen=True)
class NPO:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    beta: float = 0.1  # inverse temperature; beta -> 0 recovers gradient ascent
    gamma: float = 1.0  # weight of the NPO forget term
    alpha: float = 1.0  # weight of the retain term; 0 gives pure NPO
    retain_loss: Literal["nll", "kl"] = "nll"  # retain term (token mean), "kl" to the reference
    reference: Literal["original"] = "original"  # pi_ref: frozen copy of the input model
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
        check_reference("npo", self.reference, "For a reference-free variant use simnpo.")
        check_lora("npo", self.lora_r, self.lora_alpha)
        if self.beta <= 0:
            raise ValueError(f"npo: beta={self.beta} must be > 0 (the paper uses 0.1)")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_lm_task(task, "npo")
        ref = frozen_copy(model)  # taken before LoRA: the adapters never touch the reference

        def loss_fn(net: nn.Module, f: dict, r: dict) -> torch.Tensor:
            loss = self.gamma * npo_loss(net, ref, f, task=task, beta=self.beta)
            return loss + self.alpha * retain_term(self.retain_loss, net, ref, r, task)

        return lm_unlearn_loop(
            "npo", model, forget, retain, task=task, budget=budget, cfg=self, loss_fn=loss_fn
        )


def npo_loss(
    model: nn.Module, ref: nn.Module, batch: dict, *, task: Task, beta: float
) -> torch.Tensor:
    """``-(2/beta) * mean log sigma(-beta * log_ratio)`` on summed sequence log-likelihoods."""
    with torch.no_grad():
        ref_nll = task.loss(ref, batch)  # (B,) -log pi_ref(y|x), summed over answer tokens
    log_ratio = ref_nll - task.loss(model, batch)  # (B,) log pi_theta - log pi_ref
    return -2.0 / beta * F.logsigmoid(-beta * log_ratio).mean()
