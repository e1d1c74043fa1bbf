"""IdkDPO: DPO towards a refusal (Rafailov et al. 2023, "Direct Preference Optimization",
arXiv:2305.18290; the "IDK" preference baseline of TOFU, Maini et al. 2024, arXiv:2401.06121).

For each forget question the preferred answer y_w is a refusal ("I don't know.", drawn from
``alternates``) and the rejected answer y_l is the true answer; DPO raises the refusal's
likelihood relative to the true answer's, both measured against a frozen reference copy. The
model learns to say it does not know, rather than being pushed to arbitrary text as gradient
ascent does.

Notation: ``r(y) = log pi_theta(y|x) - log pi_ref(y|x)`` with sequence log-likelihoods, the
**sum** over answer tokens (``task.loss`` is the per-example summed NLL), as in OpenUnlearning's
``compute_dpo_loss``. Forget loss ``-(2/beta) * mean log sigma(beta * (r(y_w) - r(y_l)))``: the
2/beta factor is OpenUnlearning's (standard DPO has none; it rescales the forget weight gamma).
Total ``gamma * forget + alpha * L_ret`` with the retain term as in grad-diff.

Prompt/answer structure: the forget Data must be the LM Task's ``TokenData`` (it keeps the raw
``prompts``); the refusal examples are built with ``task.encode(prompts, refusals)``, so they get
the same prompt template, BOS and EOS as the true answers. A refusal is drawn per example and
per step from torch's global RNG (OpenUnlearning's IDK dataset also redraws per item). Rows
without a prompt (plain passages such as lm-world's biographies) get a refusal as the whole
text. ``alternates`` is a short stand-in for TOFU's ``idontknow.jsonl`` (100 phrasings).

Reference: required (``reference="original"``, a frozen copy of the input model taken before any
LoRA adapter). Defaults: OpenUnlearning's DPO config (beta 0.1, gamma = alpha = 1, NLL retain,
lr 1e-5, 10 epochs, batch 32); optimiser, clip and LoRA fields as in grad_diff.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from obliviate.methods.npo import check_reference
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

REFUSALS = (
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I can't answer that.",
    "That is beyond my knowledge.",
    "I'm afraid I don't know the answer.",
    "I do not have that information.",
    "Sorry, I cannot tell you that.",
)


@METHODS.register("idk-dpo")
@dataclass(frozen=True)
class IdkDPO:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    alternates: tuple[str, ...] = REFUSALS  # preferred answers y_w, one drawn per example
    beta: float = 0.1  # DPO inverse temperature
    gamma: float = 1.0  # weight of the DPO forget term
    alpha: float = 1.0  # weight of the retain term
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
        check_reference("idk-dpo", self.reference, "Without one, use simnpo.")
        check_lora("idk-dpo", self.lora_r, self.lora_alpha)
        if not self.alternates or not all(isinstance(a, str) and a for a in self.alternates):
            raise ValueError(
                f"idk-dpo: alternates={self.alternates!r}; give at least one non-empty refusal "
                f'string such as "I don\'t know."'
            )
        if self.beta <= 0:
            raise ValueError(f"idk-dpo: beta={self.beta} must be > 0 (TOFU uses 0.1)")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_lm_task(task, "idk-dpo")
        if not hasattr(task, "encode") or not hasattr(forget, "prompts"):
            raise TypeError(
                "idk-dpo needs the prompt/answer structure of the LM Task: a task with encode() "
                "and forget data with .prompts (obliviate.lm's TokenData)"
            )
        pos = {int(i): k for k, i in enumerate(forget.idx.tolist())}  # example idx -> row
        ref = frozen_copy(model)  # taken before LoRA: the adapters never touch the reference

        def loss_fn(net: nn.Module, f: dict, r: dict) -> torch.Tensor:
            win = self._refusals(task, forget, f, pos)
            loss = self.gamma * dpo_loss(net, ref, win, f, task=task, beta=self.beta)
            return loss + self.alpha * retain_term(self.retain_loss, net, ref, r, task)

        return lm_unlearn_loop(
            "idk-dpo", model, forget, retain, task=task, budget=budget, cfg=self, loss_fn=loss_fn
        )

    def _refusals(self, task: Any, forget: Any, batch: dict, pos: dict[int, int]) -> dict:
        """The batch's questions, each with a refusal drawn from ``alternates`` (global RNG)."""
        rows = [pos[int(i)] for i in batch["idx"]]
        pick = torch.randint(len(self.alternates), (len(rows),)).tolist()
        data = task.encode(
            [forget.prompts[k] for k in rows], [self.alternates[j] for j in pick], idx=rows
        )
        return next(iter(task.batches(data, len(rows))))  # one batch, same order as `batch`


def dpo_loss(
    model: nn.Module, ref: nn.Module, win: dict, lose: dict, *, task: Task, beta: float
) -> torch.Tensor:
    """``-(2/beta) * mean log sigma(beta * (r_w - r_l))``, r = summed log pi_theta - log pi_ref."""
    with torch.no_grad():
        ref_w, ref_l = task.loss(ref, win), task.loss(ref, lose)  # (B,) summed NLLs
    r_w = ref_w - task.loss(model, win)  # (B,) log-ratio of the refusal
    r_l = ref_l - task.loss(model, lose)  # (B,) log-ratio of the true answer
    return -2.0 / beta * F.logsigmoid(beta * (r_w - r_l)).mean()
