"""SalUn: Saliency Unlearning (Fan et al., ICLR 2024, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", arXiv:2310.12508).

Only the weights most responsible for the forget set are allowed to move. 1. A saliency map is the
magnitude of the forget-loss gradient at the original model, |∇_θ L_f(θ_o)|; the top ``gamma``
fraction of all weights (ranked globally, across layers) get mask 1, the rest 0. 2. Random-label
unlearning (``random_label.py``) then runs with every gradient multiplied by the mask:
θ ← θ − η m ⊙ ∇L_RL. Notation: m the mask, gamma the fraction of weights updated (the README's
"with_0.5" mask: 50%), L_f the forget cross-entropy.

The notes give the mask rule, gamma = 50% (the README example; masks for 0.1-0.9 are saved;
Apollo uses 0.2), lr 0.013 and 10 epochs. Our choices: the gradient is of the forget loss summed
over all of D_f, taken in eval mode (BatchNorm statistics stay put), and its absolute value is
ranked over all trainable weights together; the mask multiplies gradients before the optimizer
step, so weight decay (added inside the step) still reaches masked weights; random labels and the
optimizer are random-label's (see ``random_label.py``).

Scale-down: 10 epochs against a 182-epoch retrain (5.5% of its cost) become 0.55 epochs of
D_f' ∪ D_r against our 10-epoch retrain, at the README's lr.

Diffusion (``task.kind == "diffusion"``, ``salun_diffusion``): Unlearn-Saliency's DDPM
``saliency_unlearn`` (``--method rl``). The mask is the same rule on the gradient of the forget
set's denoising loss (``saliency_mask`` through ``task.loss``: ||eps - eps_theta(x_t|c_f)||^2 with
each image's own caption). Each step: forget loss MSE(eps_theta(x_t|c_f), sg[eps_theta(x_t|c')])
with c' the caption of a random retain image (another class or colour: the random relabel; the
DDPM code uses the fixed next class), plus ``alpha`` times the remain denoising loss summed over
pixels and averaged over images (the code's ``loss_registry_conditional``; its forget MSE is the
element mean, hence alpha 1e-3 from the README), gradient norm clipped to 1 and *then* masked,
Adam at lr 1e-4 (``cifar10_saliency_unlearn.yml``). Scale-down: 1000 iterations of batch 128 on
CIFAR-10 become ``diffusion_iterations`` = 100 of batch 64 on t2i-tiny, at lr 1e-3 (the tiny UNet
is trained at 3e-3; the same lr scaling as ESD's, where 1e-4 was measured too slow); the forget
set (60 images) fits in one batch. Measured on t2i-tiny (seed 0, 8 samples per prompt): concept
rate 0.88 -> 0.00, synonym 0.85 -> 0.13, unrelated class accuracy 0.84 -> 0.77, 13 s.
The text encoder is in the mask's ranking like every weight (the code masks the whole
conditional model, class embedding included). Antithetic timesteps are not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from obliviate.loop import make_optimizer, paired_batches, preserve_mode
from obliviate.methods.random_label import train_random_label
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["SalUn", "saliency_mask", "salun_diffusion"]


def saliency_mask(
    model: nn.Module, forget: Data, *, task: Task, gamma: float, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """{name: 0/1 tensor}: 1 for the top ``gamma`` fraction of weights by |∇_θ L_f|, ranked
    over all trainable parameters together. The model is left unchanged (no .grad written)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma is the fraction of weights updated, in [0, 1]; got {gamma}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for _, p in named]
    with preserve_mode(model):
        model.eval()  # as in the paper's generate_mask.py: BatchNorm statistics stay fixed
        for batch in task.batches(forget, batch_size):
            # sum, not mean, over examples: the gradient of the whole forget loss
            grads = torch.autograd.grad(task.loss(model, batch).sum(), [p for _, p in named])
            for acc, g in zip(total, grads, strict=True):
                acc.add_(g)
    scores = torch.cat([g.abs().flatten() for g in total])  # (P,) over every trainable weight
    k = round(gamma * scores.numel())
    # stable sort: ties (e.g. weights with zero gradient) are broken by position, deterministically
    keep = torch.argsort(scores, descending=True, stable=True)[:k]
    flat = torch.zeros_like(scores)
    flat[keep] = 1.0
    mask, start = {}, 0
    for name, p in named:
        mask[name] = flat[start : start + p.numel()].view_as(p)
        start += p.numel()
    return mask


@METHODS.register("salun")
@dataclass(frozen=True)
class SalUn:
    supports: ClassVar[frozenset[str]] = frozenset({"vision", "diffusion"})
    gamma: float = 0.5  # fraction of weights the mask lets move (README: 0.5; Apollo: 0.2)
    lr: float = 0.013  # SGD learning rate (README example)
    epochs: float = 0.55  # passes over D_f' ∪ D_r (10 of a 182-epoch retrain, rescaled)
    batch_size: int = 128  # examples per step, forget and retain mixed
    weight_decay: float = 5e-4  # L2 on every parameter (not masked)
    exclude_true: bool = True  # random labels among the wrong classes only
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD
    # diffusion only (Unlearn-Saliency's DDPM saliency_unlearn, scaled; see the module doc):
    diffusion_lr: float = 1e-3  # Adam lr (code: 1e-4 for 1000 iterations on CIFAR-10)
    diffusion_iterations: int = 100  # optimizer steps (code: 1000)
    diffusion_batch_size: int = 64  # forget and remain images per step (code: 128)
    alpha: float = 1e-3  # weight of the remain loss, summed over pixels (README: 1e-3)
    clip: float = 1.0  # max gradient norm before masking (code: 1); 0 disables

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        # 1. Saliency mask at the original weights (no optimizer step: free under the budget).
        mask = saliency_mask(model, forget, task=task, gamma=self.gamma)
        log.info("salun: updating %.1f%% of the weights", 100 * self.gamma)
        if getattr(task, "kind", None) == "diffusion":
            return salun_diffusion(
                model, forget, retain, task=task, budget=budget, mask=mask,
                lr=self.diffusion_lr, iterations=self.diffusion_iterations,
                batch_size=self.diffusion_batch_size, alpha=self.alpha, clip=self.clip,
            )  # fmt: skip
        # 2. Random-label unlearning with the gradients masked.
        return train_random_label(
            model, forget, retain, task=task, budget=budget, lr=self.lr, epochs=self.epochs,
            batch_size=self.batch_size, optimizer=self.optimizer,
            weight_decay=self.weight_decay, exclude_true=self.exclude_true, grad_mask=mask,
        )  # fmt: skip


def salun_diffusion(
    model: nn.Module,
    forget: Data,
    retain: Data,
    *,
    task: Task,
    budget: Budget,
    mask: dict[str, torch.Tensor],
    lr: float,
    iterations: int,
    batch_size: int,
    alpha: float,
    clip: float,
) -> nn.Module:
    """SalUn's generation loop: forget images' concept-conditioned noise prediction pulled onto
    the prediction under another image's caption, plus alpha x the remain denoising loss, with
    clipped then masked gradients (see the module docstring)."""
    if len(retain) == 0:
        raise ValueError("salun needs retain images: their captions are the random relabels")
    params = dict(model.named_parameters())
    opt = make_optimizer(model.parameters(), "adam", lr=lr)
    per_epoch = -(-len(forget) // batch_size)
    with preserve_mode(model):
        model.train()
        for f, r in paired_batches(
            task, forget, retain, batch_size=batch_size, epochs=iterations / per_epoch,
            budget=budget,
        ):  # fmt: skip
            b = task.noised(f)
            out = model(b["x_t"], b["t"], b["tokens"])
            # c': the captions of shuffled retain images (another concept), no gradient
            pseudo_tokens = r["tokens"][torch.arange(len(out)) % len(r["tokens"])]
            with torch.no_grad():
                pseudo = model(b["x_t"], b["t"], pseudo_tokens)
            forget_loss = F.mse_loss(out, pseudo)
            pixels = r["x0"][0].numel()  # the code sums the remain error over pixels
            remain_loss = task.loss(model, r).mean() * pixels
            loss = forget_loss + alpha * remain_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for name, m in mask.items():
                if params[name].grad is not None:
                    params[name].grad.mul_(m)
            opt.step()
    return model
