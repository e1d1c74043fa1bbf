"""GA / NegGrad: gradient ascent on the forget set (Thudi et al. 2022; Graves et al. 2021).

Maximises the cross-entropy of D_f and nothing else, so it forgets fast and damages the rest;
the standard lower bar. Defaults follow Apollo's `unlearn/GA.py` (lr 2e-4, 10 epochs over D_f,
gradient-norm clip 0.1, the model in eval mode so BatchNorm statistics stay fixed).

Modality-free through ``task.loss``: the cross-entropy for classifiers, the per-example *summed*
answer NLL for language models, the DDPM loss for diffusion models (so it also serves as the
"gradient ascent" row of the LM and text-to-image benchmarks). The defaults are the classifier
papers'; OpenUnlearning's GradAscent for LMs is AdamW at lr 1e-5 for 10 epochs of batch 32 on a
7B model (``--set optimizer=adamw lr=1e-5 batch_size=32``); the LM benchmarks pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import epoch_batches, make_optimizer, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task


@METHODS.register("grad-ascent")
@dataclass(frozen=True)
class GradAscent:
    supports: ClassVar[frozenset[str]] = frozenset({"vision", "lm", "diffusion"})
    lr: float = 2e-4  # SGD learning rate; GA diverges quickly above ~1e-3
    epochs: float = 10.0  # passes over the forget set
    batch_size: int = 128  # forget examples per step
    clip: float = 0.1  # max gradient norm; 0 disables clipping
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD
    train_mode: bool = False  # False keeps BatchNorm/Dropout in eval mode, as in Apollo

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        opt = make_optimizer(model.parameters(), self.optimizer, lr=self.lr)
        with preserve_mode(model):
            model.train(self.train_mode)
            for batch in epoch_batches(
                task, forget, batch_size=self.batch_size, epochs=self.epochs,
                budget=budget,
            ):  # fmt: skip
                loss = -task.loss(model, batch).mean()  # ascend the forget loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
                opt.step()
        return model
