"""FT: fine-tune on the retain set only (Warnecke et al. 2023; the baseline of SalUn, Fan et al.
2024, arXiv:2310.12508). Catastrophic forgetting of D_f is hoped for; nothing pushes it away.

Scale-down: the papers fine-tune 10 epochs against a 182-epoch retrain (5% of its cost); our
benchmarks retrain in 10 epochs, so the default is 1 epoch at the papers' lr 0.01 (10% of it).
Modality-free through ``task.loss`` (retain NLL for LMs, the DDPM loss for diffusion models); the
defaults are the classifier papers', other modalities pass their own lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from obliviate.loop import epoch_batches, make_optimizer, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task


@METHODS.register("finetune")
@dataclass(frozen=True)
class FineTune:
    supports: ClassVar[frozenset[str]] = frozenset({"vision", "lm", "diffusion"})
    lr: float = 0.01  # SGD learning rate (Apollo/SalUn FT use 0.01)
    epochs: float = 1.0  # passes over the retain set (see the scale-down note)
    batch_size: int = 128  # retain examples per step
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        opt = make_optimizer(model.parameters(), self.optimizer, lr=self.lr)
        with preserve_mode(model):
            model.train()
            for batch in epoch_batches(
                task, retain, batch_size=self.batch_size, epochs=self.epochs,
                budget=budget,
            ):  # fmt: skip
                loss = task.loss(model, batch).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return model
