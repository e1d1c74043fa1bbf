"""MinNorm-OG: Block, Mokhtari, Shakkottai, "Machine Unlearning under Overparameterization"
(NeurIPS 2025, arXiv:2505.22601; code: jacob-block/overparameterized-unlearning).

When a model interpolates its data, the retain-loss gradient vanishes at the original weights,
so loss-gradient methods have nothing to follow. The paper defines the unlearned model as the
minimum-norm interpolator of D_r and relaxes it to an orthogonal-gradient problem: move theta
only where the outputs on retain samples do not change to first order, and shrink it there.
MinNorm-OG alternates that proximal shrink (closed form below) with AdamW descent on retain
batches, and ends with plain-descent epochs.

Notation (Algorithm 1, R = ||theta||^2, R_hat = lambda ||Delta||^2):
- ``G`` (d, n): per-sample gradients of the *function output* f(theta, x_i) on a sample of the
  retain batch; classifiers use the max logit, regression the scalar output.
- ``P_perp theta = theta - Q Q^T theta`` with Q an orthonormal basis of span(G) (the code: QR
  in float64; we use the equal Gram-matrix form, see ``project_min_norm``).
- ``rho = 1 / (1 + lambda)`` (``reg_coef``); step ``theta <- theta - rho * P_perp theta``, then
  ``rho <- rho * reg_coef_decay`` after every projection.
- Projection epochs: ``t % proj_pd == 0`` and ``t < epochs - num_gd_epochs``.

As in the code, one step is taken per forget batch, paired with a retain batch; the forget set is
never read otherwise. Retain access is limited (``retain_access``: a seeded random subset of D_r,
1% as in the label-erasure runs). Deviations from the code, on purpose:
- the descent step after a projection takes its gradient at the projected weights (Algorithm 1);
  the code runs the forward pass before projecting, which mixes pre- and post-projection values;
- G is computed in eval mode, so BatchNorm uses its running statistics rather than coupling the
  50 samples through batch statistics (the code takes the 50 gradients in train mode);
- the projector onto span(G) comes from G's Gram matrix instead of a QR (same projection);
- the code clamps logits to +-30 before the loss on its CIFAR experiments; we do not.

Defaults: the paper grid-searches every setting (methods.md section 8). The defaults are a point
of the label-erasure / representation-collapse grids (AdamW lr 1e-3, rho 0.1, decay 0.4, 50
gradient samples, 1% retain access, batch 256) with 5 epochs over the forget set, which on
fmnist-class (6,000 forget images: 24 steps an epoch, 118 steps, about 5% of a 10-epoch retrain's
steps) removes the class while keeping test accuracy near the original's (see
tests/test_minnorm_og.py and the module's scale-down note in benchmarks/overparam.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from obliviate.loop import paired_batches, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["MinNormOG", "function_gradients", "project_min_norm"]


def _sample_rows(batch: dict[str, torch.Tensor], n: int, *, balanced: bool) -> torch.Tensor:
    """Indices of up to ``n`` rows of ``batch``; class-balanced on ``y`` when ``balanced``.

    Balanced as in the code: n // (classes present) random rows of every class in the batch.
    Randomness comes from torch's global RNG (seeded by the caller).
    """
    y = batch["y"]
    if not balanced:
        return torch.randperm(len(y))[:n]
    classes = torch.unique(y)
    per_class = max(1, n // len(classes))
    rows = []
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        rows.append(idx[torch.randperm(len(idx))[:per_class]])
    return torch.cat(rows)


def function_gradients(model: nn.Module, x: torch.Tensor, *, reduce_max: bool) -> torch.Tensor:
    """G (d, n*K): per-sample gradients of the model's output at each row of ``x``.

    ``reduce_max`` takes the max over the output dimension first (classifiers: the max logit,
    K = 1); otherwise every output dimension is one function (regression: K outputs). The model
    is run in eval mode, so each column is the gradient of f(theta, x_i) alone; only parameters
    with requires_grad count, in ``model.parameters()`` order (``parameters_to_vector``'s).
    One forward pass and one batched backward (``is_grads_batched``), about 30x faster on CPU
    than ``vmap`` over ``functional_call`` for the sin MLP.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    with preserve_mode(model), torch.enable_grad():
        model.eval()
        out = model(x).reshape(len(x), -1)  # (n, K)
        if reduce_max:
            out = out.max(dim=1, keepdim=True).values  # (n, 1)
        flat = out.reshape(-1)  # (n*K,), sample-major
        eye = torch.eye(len(flat), dtype=flat.dtype)  # one backward per output, batched
        grads = torch.autograd.grad(
            flat, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True
        )
    cols = [
        g.reshape(len(flat), -1) if g is not None else torch.zeros(len(flat), p.numel())
        for g, p in zip(grads, params, strict=True)
    ]  # each (n*K, numel)
    return torch.cat(cols, dim=1).T.detach()  # (d, n*K)


@torch.no_grad()
def project_min_norm(model: nn.Module, grads: torch.Tensor, rho: float) -> float:
    """theta <- theta - rho * (theta - P theta), P the orthogonal projector onto span(G).

    The closed form of argmin_Delta ||theta + Delta||^2 + lambda ||Delta||^2 s.t. G^T Delta = 0,
    with rho = 1 / (1 + lambda). The code builds P = Q Q^T from a float64 QR of G; we compute the
    same projection as G (G^T G)^+ G^T theta from the (n, n) Gram matrix in float64 (eigh,
    pseudo-inverse): equal to the QR form to ~1e-14 for full-rank G, exact on span(G) when G is
    rank-deficient (where Householder QR adds arbitrary directions), and ~3x cheaper on CPU.
    Returns ||theta - P theta|| (for logging).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    theta = torch.nn.utils.parameters_to_vector(params).double()  # (d,)
    g = grads.double()  # (d, n)
    w, v = torch.linalg.eigh(g.T @ g)  # Gram eigenpairs, ascending
    keep = w > w[-1].clamp_min(0) * len(w) * torch.finfo(torch.float64).eps  # numerical rank
    coef = v[:, keep] @ ((v[:, keep].T @ (g.T @ theta)) / w[keep])  # (G^T G)^+ G^T theta
    perp = theta - g @ coef
    new = theta - rho * perp
    if not torch.isfinite(new).all():
        raise FloatingPointError(
            "MinNorm-OG: the projected weights are not finite; the model already held non-finite "
            "weights or outputs. Lower lr or reg_coef."
        )
    torch.nn.utils.vector_to_parameters(new.to(params[0].dtype), params)
    return float(perp.norm())


@METHODS.register("minnorm-og")
@dataclass(frozen=True)
class MinNormOG:
    supports: ClassVar[frozenset[str]] = frozenset({"vision", "regression"})
    lr: float = 1e-3  # AdamW learning rate of the retain-descent steps (grid 1e-6..5e-3)
    weight_decay: float = 0.01  # AdamW weight decay (torch's default, as in the code)
    epochs: int = 5  # T: passes over the forget set; one step per forget batch
    reg_coef: float = 0.1  # rho = 1/(1+lambda) in [0, 1]: fraction of P_perp theta removed
    reg_coef_decay: float = 0.4  # rho is multiplied by this after every projection
    num_gd_epochs: int = 0  # final epochs of plain retain descent (no projection)
    proj_pd: int = 1  # project in epochs t with t % proj_pd == 0
    grad_sample_size: int = 50  # retain samples whose function gradients span G
    retain_access: float = 0.01  # fraction of D_r the method may read (1.0 = all of it)
    batch_size: int = 256  # forget and retain examples per step

    def __post_init__(self) -> None:
        if not 0.0 <= self.reg_coef <= 1.0:
            raise ValueError(
                f"reg_coef is rho = 1/(1+lambda) and must lie in [0, 1], got {self.reg_coef}"
            )
        if not 0.0 < self.retain_access <= 1.0:
            raise ValueError(f"retain_access must be in (0, 1], got {self.retain_access}")
        if self.proj_pd < 1 or self.grad_sample_size < 1 or self.batch_size < 1:
            raise ValueError("proj_pd, grad_sample_size and batch_size must be >= 1")
        if self.epochs < 0 or self.num_gd_epochs < 0:
            raise ValueError("epochs and num_gd_epochs must be >= 0")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        if task.kind not in self.supports:
            raise TypeError(f"minnorm-og supports {sorted(self.supports)} tasks, not {task.kind!r}")
        if len(forget) == 0 or len(retain) == 0 or self.epochs == 0:
            return model
        # 1. Limited retain access: a seeded random subset of D_r is all the method reads.
        n_keep = max(1, int(self.retain_access * len(retain)))
        if n_keep < len(retain):
            retain = retain.subset(torch.randperm(len(retain))[:n_keep].sort().values.numpy())
        per_epoch = math.ceil(len(forget) / self.batch_size)
        classifier = task.kind != "regression"
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rho, n_proj, n_steps = self.reg_coef, 0, 0
        with preserve_mode(model):
            model.train()
            pairs = paired_batches(
                task, forget, retain, batch_size=self.batch_size, epochs=self.epochs,
                budget=budget,
            )  # fmt: skip
            for step, (_, r) in enumerate(pairs):
                epoch = step // per_epoch
                # 2. Projection epochs: shrink theta toward span(G) of the retain outputs.
                if epoch < self.epochs - self.num_gd_epochs and epoch % self.proj_pd == 0:
                    rows = _sample_rows(r, self.grad_sample_size, balanced=classifier)
                    grads = function_gradients(model, r["x"][rows], reduce_max=classifier)
                    norm = project_min_norm(model, grads, rho)
                    log.debug("step %d: rho %.3g, |P_perp theta| %.4g", step, rho, norm)
                    rho *= self.reg_coef_decay
                    n_proj += 1
                # 3. Descent on the retain loss at the projected weights.
                loss = task.loss(model, r).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n_steps += 1
        log.info("minnorm-og: %d descent steps, %d projections", n_steps, n_proj)
        return model
