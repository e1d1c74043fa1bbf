"""ResAlign: resilient safety-driven unlearning for diffusion models (Li et al., NeurIPS 2025,
arXiv:2507.16302; code AntigoneRandy/ResAlign).

Safety unlearning comes back when a user fine-tunes the model, even on benign data. ResAlign
unlearns with a term that scores the concept *after a simulated fine-tune*: the fine-tune is
modelled as a Moreau envelope (proximal) problem, so the gradient of the post-fine-tune loss
comes from the implicit function theorem, ``dθ*/dθ = (I + γH)^-1``, evaluated at the fine-tune's
end point with K fixed-point (Neumann) iterations of Hessian-vector products; the simulated
fine-tunes are sampled from a list of configurations (meta-learning), so that the resilience
generalises.

Notation (the code's, per outer step). θ: the LoRA weights being learned; θ*: θ after one inner
fine-tune (plain GD or Adam on benign data, NOT backpropagated). Outer loss
``L_out = (1 - λ) L_harm(θ) + λ L_harm(θ*) + w_ret R(θ)`` with ``L_harm`` the *negative* DDPM loss
on the concept's image-prompt pairs (``loss_mode="ga"``) and ``R`` the MSE between the noise
predictions of the LoRA'd model and of the frozen original on retain data. With
``g_w = ∂L_out/∂θ*`` and ``g_θ = ∂L_out/∂θ`` (direct), the hypergradient is
``g_θ + (s/γ) v`` where ``v`` is the fixed point of ``v <- (∂Φ/∂w)^T v + g_w`` for one proximal GD
step ``Φ(w, θ) = w - s ∇_w[L_FT(w) + ||w - θ||² / 2γ]``; its limit ``(I + γH)^-1 g_w`` does not
depend on the step size s. Guard (``implicit_hypergradient``): when the mean ratio of JVP norms
exceeds 1 (the series diverges) or ``||hypergradient|| > max_grad_norm``, halve s and retry (at
most ``max_retries`` times), then use the direct gradient ``g_θ``; if even that is not finite,
raise. The hypergradients of the ``inner_sample_k`` sampled configurations are averaged, scaled
by ``meta_rate`` and given to AdamW; the LoRA is merged into the weights at the end, so the
returned module is a plain ``T2IModel``.

Ablations (the paper's table, IP after DreamBench++ fine-tuning):
- plain unlearning: ``outer_lambda=0`` (no inner fine-tune is run at all);
- + hypergradient: ``meta_data=False, meta_configs=False`` (always ``inner_configs[0]``);
- + meta-learning over data: ``meta_data=True, meta_configs=False`` (the data shard is drawn
  from the shards the configurations name; the hyperparameters stay those of config 0);
- + over configurations (full ResAlign, the default): ``meta_data=True, meta_configs=True``.
``hypergradient="unrolled"`` replaces the implicit gradient by backpropagation through the inner
loop (create_graph=True), the shortcut the paper argues against.

Budget. One outer AdamW step is one budget step (``Budget.max_steps`` clips ``outer_steps``).
The inner fine-tunes, Hessian-vector products and retries are extra compute, taken with
hand-written GD/Adam updates on tensors (no ``torch.optim`` step, so they are not counted as
optimizer steps); their totals are logged at the end ("inner steps", "HVPs", "fallbacks").
Measured on t2i-tiny (one CPU thread, 8 outer steps): 0.85 s per outer step at the defaults
(3 configs, ~24 inner steps and 12 HVPs per step, no retry or fallback), 1.6 s with
``hypergradient="unrolled"``, 0.06 s for plain unlearning (``outer_lambda=0``).

Scale-downs (CPU, 8x8 images). LoRA on every attention projection of the UNet (``attn1`` and
``attn2``: to_q, to_k, to_v, to_out.0), as the code's ``train_method=full``; the text encoder is
frozen. The benign fine-tuning sets down1..down3 are ``n_shards`` disjoint seeded shards of the
retain set. Inner configurations follow the CPU plan of the research notes (lr {1e-3, 1e-4},
steps {5, 10, 20}, GD/Adam, LoRA vs full) instead of the code's 15 (lr down to 1e-6, up to 30
steps, one DreamBooth config with prior preservation: not reproduced). A "full" configuration
fine-tunes the full-rank weights of the LoRA'd projections only (the code: the whole UNet), then
re-extracts a rank-r LoRA by truncated SVD of the weight change, as the code does. Adam state is
reset at each inner fine-tune (the code keeps one state across calls). The ESD outer loss
(``loss_mode="esd"``) is not implemented. ``∂Φ/∂θ = (s/γ)I`` is applied in closed form rather than
by a second vector-Jacobian product (the same value).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from obliviate.loop import derive_seed, draw_seed, paired_batches, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = [
    "HypergradInfo",
    "InnerConfig",
    "ResAlign",
    "bound",
    "implicit_hypergradient",
    "lora_targets",
]

# The attention projections that carry LoRA (Stable Diffusion's names, models.py).
TARGET_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class InnerConfig:
    """One simulated downstream fine-tune (one of the code's ``configs/config*.json``)."""

    data: int = 0  # benign shard (the code's down1/down2/down3), 0 <= data < n_shards
    lr: float = 1e-3  # inner learning rate
    steps: int = 5  # inner optimiser steps
    optimizer: Literal["gd", "adam"] = "adam"  # plain gradient descent or Adam (betas 0.9/0.999)
    params: Literal["lora", "full"] = "lora"  # fine-tune the LoRA, or the full-rank weights
    batch_size: int = 1  # benign examples per inner step (the code: 1)


# CPU plan of the research notes: lr {1e-3, 1e-4}, steps {5, 10, 20}, GD/Adam, LoRA vs full.
DEFAULT_INNER = (
    InnerConfig(data=0, lr=1e-3, steps=5, optimizer="adam"),
    InnerConfig(data=1, lr=1e-4, steps=10, optimizer="adam"),
    InnerConfig(data=2, lr=1e-3, steps=10, optimizer="gd"),
    InnerConfig(data=0, lr=1e-4, steps=20, optimizer="gd"),
    InnerConfig(data=1, lr=1e-3, steps=5, optimizer="adam", params="full"),
    InnerConfig(data=2, lr=1e-4, steps=5, optimizer="adam", params="full"),
)


@dataclass
class HypergradInfo:
    """What ``implicit_hypergradient`` did: the step sizes tried, and whether it fell back."""

    step_sizes: list[float] = field(default_factory=list)  # s of every attempt, in order
    reasons: list[str] = field(default_factory=list)  # why each failed attempt was rejected
    fallback: bool = False  # True: the direct gradient g_θ was returned
    iterations: int = 0  # fixed-point iterations of the accepted attempt
    hvps: int = 0  # Hessian-vector products over all attempts
    norm: float = float("nan")  # norm of the returned gradient


def _norm(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((t.detach().double() ** 2).sum() for t in ts))


def implicit_hypergradient(
    inner_loss: Callable[[list[torch.Tensor]], torch.Tensor],
    w_star: Sequence[torch.Tensor],
    g_w: Sequence[torch.Tensor],
    g_theta: Sequence[torch.Tensor],
    *,
    K: int = 5,
    gamma: float = 1.0,
    step: float = 1.0,
    max_grad_norm: float = 0.2,
    max_retries: int = 5,
) -> tuple[list[torch.Tensor], HypergradInfo]:
    """``g_θ + (I + γH)^-1 g_w`` by K fixed-point iterations, with the code's divergence guard.

    ``inner_loss(w)`` is the fine-tuning loss L_FT at weights ``w`` (a list like ``w_star``); it is
    called once per attempt (a fresh stochastic draw each time) and differentiated twice, so the
    K Hessian-vector products ``H v`` of one attempt share that one evaluation. ``H`` is taken at
    ``w_star`` (θ*, the end of the inner fine-tune). The fixed-point map is one proximal GD step
    ``Φ(w) = w - s ∇[L_FT(w) + ||w - θ||² / 2γ]``, so ``(∂Φ/∂w)^T v = (1 - s/γ) v - s H v`` and
    ``∂Φ/∂θ = (s/γ) I``. An attempt is rejected when the mean (over tensors) ratio
    ``||(∂Φ/∂w)^T v|| / ||v||`` exceeds 1, when anything is non-finite, or when the result's norm
    exceeds ``max_grad_norm`` (0 disables the cap); then s is halved. After ``max_retries``
    retries the direct gradient ``g_theta`` is returned (``info.fallback``); a non-finite
    ``g_theta`` raises FloatingPointError.
    """
    if K < 1 or gamma <= 0 or step <= 0 or max_retries < 0:
        raise ValueError(
            f"implicit_hypergradient: need K >= 1, gamma > 0, step > 0, max_retries >= 0; got "
            f"K={K}, gamma={gamma}, step={step}, max_retries={max_retries}"
        )
    info = HypergradInfo()
    g_w = [g.detach() for g in g_w]
    g_theta = [g.detach() for g in g_theta]
    s = step
    for _ in range(max_retries + 1):
        info.step_sizes.append(s)
        w = [x.detach().clone().requires_grad_(True) for x in w_star]
        # 1. One evaluation of ∇L_FT with a graph: every HVP of this attempt differentiates it.
        grads = torch.autograd.grad(inner_loss(w), w, create_graph=True)
        v = [torch.zeros_like(g) for g in g_w]
        reason = ""
        for k in range(K):
            # 2. u = (∂Φ/∂w)^T v = (1 - s/γ) v - s H v (H symmetric: the VJP is the HVP)
            if k == 0:
                u = [torch.zeros_like(x) for x in v]  # v_0 = 0: no HVP needed
            else:
                hv = torch.autograd.grad(grads, w, grad_outputs=v, retain_graph=True)
                info.hvps += 1
                u = [(1 - s / gamma) * x - s * h for x, h in zip(v, hv, strict=True)]
                ratios = [
                    float(a.norm() / b.norm()) for a, b in zip(u, v, strict=True) if b.norm() > 0
                ]
                if ratios and (not all(map(math.isfinite, ratios)) or np.mean(ratios) > 1.0):
                    reason = f"JVP norm ratio {np.mean(ratios):.3g} > 1 at iteration {k + 1}"
                    break
            v_prev, v = v, [x + g for x, g in zip(u, g_w, strict=True)]
            info.iterations = k + 1
            if float(_norm([a - b for a, b in zip(v, v_prev, strict=True)])) < 1e-10:
                break
        if not reason:
            # 3. (∂Φ/∂θ)^T v + g_θ, with ∂Φ/∂θ = (s/γ) I
            out = [(s / gamma) * x.detach() + g for x, g in zip(v, g_theta, strict=True)]
            n = float(_norm(out))
            if not math.isfinite(n):
                reason = "non-finite hypergradient"
            elif max_grad_norm > 0 and n > max_grad_norm:
                reason = f"||hypergradient|| {n:.3g} > max_grad_norm {max_grad_norm}"
            else:
                info.norm = n
                return out, info
        info.reasons.append(reason)
        s *= 0.5  # the limit (I + γH)^-1 g_w is the same for every s; a smaller s contracts
    # 4. Every attempt diverged: the code's fallback, the direct gradient.
    info.fallback = True
    info.norm = float(_norm(g_theta))
    if not math.isfinite(info.norm):
        raise FloatingPointError(
            f"resalign: the hypergradient diverged at every step size {info.step_sizes} "
            f"({info.reasons[-1]}) and the direct gradient is not finite either: lower the outer "
            "lr, raise retain_weight, or lower outer_lambda (the 'ga' loss is unbounded below)"
        )
    return g_theta, info


def lora_targets(model: nn.Module) -> list[str]:
    """Names of the attention projections (nn.Linear) that get LoRA adapters."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and (".attn1." in name or ".attn2." in name)
        and name.endswith(TARGET_SUFFIXES)
    ]


class _Bound:
    """``model`` called with some parameters substituted (task.loss only calls the model).
    ``functional_call`` swaps the tensors in for the call only: no hook, no module change."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]):
        self.model, self.params = model, params

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return functional_call(self.model, self.params, args, kwargs, strict=False)


def bound(model: nn.Module, params: dict[str, torch.Tensor]) -> _Bound:
    """A callable ``model`` whose named parameters ``params`` are replaced, for losses."""
    return _Bound(model, params)


def _sigmoid_ramp(start: float, end: float, progress: float) -> float:
    """The code's schedule: ``start + (end - start) / (1 + exp(-10 (p - 0.5)))``."""
    return start + (end - start) / (1.0 + math.exp(-10.0 * (progress - 0.5)))


@METHODS.register("resalign")
@dataclass(frozen=True)
class ResAlign:
    supports: ClassVar[frozenset[str]] = frozenset({"diffusion"})
    outer_steps: int = 160  # outer AdamW steps (the code's "epochs"); the budget unit
    lr: float = 2e-4  # outer AdamW lr on the LoRA weights
    weight_decay: float = 1e-2  # outer AdamW decoupled weight decay
    outer_lambda: float = 0.8  # λ at the start: weight of L_harm(θ*); 0 = plain unlearning
    outer_lambda_end: float | None = None  # λ at the end (sigmoid ramp); None: = outer_lambda
    retain_weight: float = 1.6  # w_ret at the start (distillation to the frozen original)
    retain_weight_end: float = 2.0  # w_ret at the end, reached along a sigmoid centred at 50%
    meta_rate: float = 0.3  # scales the averaged hypergradient fed to AdamW
    K: int = 5  # fixed-point (Neumann) iterations per hypergradient
    gamma: float = 1.0  # proximal weight of the Moreau envelope (the code: 1, i.e. L2 of 0.5)
    max_grad_norm: float = 0.2  # hypergradient norm cap that triggers a retry; 0 disables
    max_retries: int = 5  # step-size halvings before falling back to the direct gradient
    inner_sample_k: int = 3  # inner configurations sampled per outer step
    inner_configs: tuple[InnerConfig, ...] = DEFAULT_INNER  # the meta-learning distribution
    n_shards: int = 3  # disjoint benign shards of the retain set (down1..down3)
    meta_data: bool = True  # sample the benign shard (False: shard of inner_configs[0])
    meta_configs: bool = True  # sample lr/steps/optimiser/params (False: inner_configs[0])
    hypergradient: Literal["implicit", "unrolled"] = "implicit"  # unrolled: the ablation
    loss_mode: Literal["ga"] = "ga"  # L_harm = -DDPM loss on the concept (ESD: not implemented)
    lora_r: int = 4  # LoRA rank on every attention projection of the UNet
    lora_init_up: float = 0.002  # std of the LoRA up (B) init (the code's)
    lora_init_down: float = 0.008  # std of the LoRA down (A) init (the code's)
    batch_size: int = 1  # concept examples per outer step (the code: 1)
    retain_batch_size: int = 4  # retain examples per outer step for R(θ) (the code: 4)

    def __post_init__(self) -> None:
        if self.hypergradient not in ("implicit", "unrolled"):
            raise ValueError(
                f"resalign: hypergradient={self.hypergradient!r}; use 'implicit' (the paper) "
                "or 'unrolled' (the ablation)"
            )
        if self.loss_mode != "ga":
            raise ValueError(
                f"resalign: loss_mode={self.loss_mode!r} is not implemented; use 'ga' (the "
                "negative denoising loss on the concept)"
            )
        if not self.inner_configs:
            raise ValueError("resalign: inner_configs is empty; give at least one InnerConfig")
        for c in self.inner_configs:
            if not 0 <= c.data < self.n_shards or c.steps < 1 or c.lr <= 0:
                raise ValueError(
                    f"resalign: bad inner config {c}: need 0 <= data < n_shards={self.n_shards}, "
                    "steps >= 1 and lr > 0"
                )
        if self.lora_r < 1 or self.inner_sample_k < 1:
            raise ValueError(
                f"resalign: lora_r={self.lora_r} and inner_sample_k={self.inner_sample_k} must "
                "be >= 1"
            )

    # -- parameters -------------------------------------------------------------------------
    def _full_weights(
        self, base: dict[str, torch.Tensor], lora: list[torch.Tensor], names: list[str]
    ) -> dict[str, torch.Tensor]:
        """{name.weight: W0 + B A} for every target (scale 1, the code's multiplier)."""
        return {f"{n}.weight": base[n] + lora[2 * i + 1] @ lora[2 * i] for i, n in enumerate(names)}

    def _draw(self, rng: np.random.Generator) -> list[InnerConfig]:
        """The ``inner_sample_k`` inner fine-tunes of one outer step (see the ablation map)."""
        cfgs = self.inner_configs
        k = self.inner_sample_k
        if self.meta_configs:
            picked = [cfgs[i] for i in rng.choice(len(cfgs), min(k, len(cfgs)), replace=False)]
        else:
            picked = [cfgs[0]] * k
        if not self.meta_data:
            return [
                InnerConfig(cfgs[0].data, c.lr, c.steps, c.optimizer, c.params, c.batch_size)
                for c in picked
            ]
        if not self.meta_configs:
            shards = sorted({c.data for c in cfgs})
            return [
                InnerConfig(int(rng.choice(shards)), c.lr, c.steps, c.optimizer, c.params,
                            c.batch_size)
                for c in picked
            ]  # fmt: skip
        return picked

    # -- the method ---------------------------------------------------------------------------
    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        if getattr(task, "kind", None) != "diffusion":
            raise TypeError(
                f"resalign works on text-to-image diffusion models (task kind 'diffusion'), got "
                f"{getattr(task, 'kind', type(task).__name__)!r}"
            )
        names = lora_targets(model)
        if not names:
            raise ValueError(
                "resalign: the model has no attention projections (modules named "
                "'...attn1/attn2.to_q|to_k|to_v|to_out.0'); use a T2IModel from diffusion/models.py"
            )
        seed = draw_seed()
        rng = np.random.default_rng(derive_seed(seed, "resalign-configs"))
        modules = dict(model.named_modules())
        base = {n: modules[n].weight.detach() for n in names}
        # 1. LoRA (B: out x r, A: r x in), the code's init; flat list [A0, B0, A1, B1, ...]
        gen = torch.Generator().manual_seed(derive_seed(seed, "resalign-lora"))
        theta: list[torch.Tensor] = []
        for n in names:
            out_f, in_f = base[n].shape
            a = torch.randn(self.lora_r, in_f, generator=gen) * self.lora_init_down
            b = torch.randn(out_f, self.lora_r, generator=gen) * self.lora_init_up
            theta += [nn.Parameter(a), nn.Parameter(b)]
        opt = torch.optim.AdamW(theta, lr=self.lr, weight_decay=self.weight_decay)
        shards = _shards(retain, self.n_shards, derive_seed(seed, "resalign-shards"))
        streams = _Streams(task, shards, derive_seed(seed, "resalign-inner"))
        planned = self.outer_steps
        total = budget.clip(planned)
        pairs = paired_batches(
            task, forget, retain, batch_size=self.batch_size,
            epochs=planned / math.ceil(len(forget) / self.batch_size), seed=seed, budget=budget,
            other_batch_size=self.retain_batch_size,
        )  # fmt: skip
        stats = {"inner_steps": 0, "hvps": 0, "fallbacks": 0, "hypergrads": 0, "retries": 0}
        t0 = time.perf_counter()
        steps = 0
        # The math attention kernel: the fused CPU kernels have no double backward (the HVPs).
        with preserve_mode(model), sdpa_kernel(SDPBackend.MATH):
            # eval: no dropout in the UNet; the same forward for the inner and outer losses
            model.eval()
            frozen = [p for p in model.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                for step, (f, r) in enumerate(pairs):
                    p = step / max(total - 1, 1)
                    lam_end = (
                        self.outer_lambda
                        if self.outer_lambda_end is None
                        else self.outer_lambda_end
                    )
                    lam = _sigmoid_ramp(self.outer_lambda, lam_end, p)
                    w_ret = _sigmoid_ramp(self.retain_weight, self.retain_weight_end, p)
                    grads = self._outer_grad(
                        model, base, names, theta, f, r, lam, w_ret, task, rng, streams, stats
                    )
                    for t, g in zip(theta, grads, strict=True):
                        t.grad = g.detach().clone()
                    opt.step()
                    steps += 1
            finally:
                for q in frozen:
                    q.requires_grad_(True)
            # 2. Merge the LoRA: the returned model is a plain T2IModel, no adapter left.
            with torch.no_grad():
                for n, w in self._full_weights(base, [t.detach() for t in theta], names).items():
                    modules[n.removesuffix(".weight")].weight.copy_(w)
        secs = time.perf_counter() - t0
        log.info(
            "resalign: %d outer steps in %.1f s (%.2f s/step); extra compute not counted as "
            "optimizer steps: %d inner steps, %d HVPs, %d hypergradients, %d retries, "
            "%d fallbacks to the direct gradient",
            steps, secs, secs / max(steps, 1), stats["inner_steps"], stats["hvps"],
            stats["hypergrads"], stats["retries"], stats["fallbacks"],
        )  # fmt: skip
        return model

    def _outer_grad(
        self, model, base, names, theta, f, r, lam, w_ret, task, rng, streams, stats
    ) -> list[torch.Tensor]:  # noqa: ANN001
        """The gradient fed to AdamW for one outer step (meta_rate x mean over configs)."""
        lora = [t.detach().requires_grad_(True) for t in theta]

        def at(params: dict[str, torch.Tensor]) -> _Bound:
            return _Bound(model, params)

        def harm(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            return -task.loss(at(weights), f).mean()  # "ga": the negative DDPM loss

        # 1. The direct part: (1 - λ) L_harm(θ) + w_ret R(θ); R against the frozen original
        # (the base weights, unchanged: only the LoRA is trained).
        direct = (1 - lam) * harm(self._full_weights(base, lora, names))
        direct = (
            direct
            + w_ret * task.divergence(at(self._full_weights(base, lora, names)), model, r).mean()
        )
        g_theta = list(torch.autograd.grad(direct, lora))
        if lam == 0:
            return [self.meta_rate * g for g in g_theta]
        total = [torch.zeros_like(t) for t in theta]
        configs = self._draw(rng)
        for c in configs:
            stream = streams.get(c)
            if self.hypergradient == "unrolled":
                g = self._unrolled(model, base, names, theta, c, stream, harm, lam, task, stats)
                g = [a + b for a, b in zip(g, g_theta, strict=True)]
            else:
                w_star = self._inner(model, base, names, theta, c, stream, task, stats)
                w = [x.detach().requires_grad_(True) for x in w_star]
                g_w = torch.autograd.grad(lam * harm(self._full_weights(base, w, names)), w)

                def inner_loss(ws: list[torch.Tensor], stream=stream) -> torch.Tensor:
                    b = next(stream)
                    return task.loss(at(self._full_weights(base, ws, names)), b).mean()

                g, info = implicit_hypergradient(
                    inner_loss, w_star, list(g_w), g_theta, K=self.K, gamma=self.gamma,
                    max_grad_norm=self.max_grad_norm, max_retries=self.max_retries,
                )  # fmt: skip
                stats["hvps"] += info.hvps
                stats["retries"] += len(info.reasons)
                stats["fallbacks"] += int(info.fallback)
            stats["hypergrads"] += 1
            total = [a + b for a, b in zip(total, g, strict=True)]
        return [self.meta_rate * g / len(configs) for g in total]

    def _inner(self, model, base, names, theta, c, stream, task, stats) -> list[torch.Tensor]:  # noqa: ANN001
        """θ* after the inner fine-tune ``c`` (no graph kept: the trajectory is not stored)."""
        if c.params == "lora":
            w = [t.detach().clone() for t in theta]

            def loss_of(ws: list[torch.Tensor], b: dict) -> torch.Tensor:
                return task.loss(_Bound(model, self._full_weights(base, ws, names)), b).mean()

            w = _descend(w, loss_of, c, stream, create_graph=False)
            stats["inner_steps"] += c.steps
            return [x.detach() for x in w]
        # "full": fine-tune the full-rank projections W = W0 + B A, then re-extract a rank-r LoRA
        # of W' - W0 by truncated SVD (the code's extract_lora_from_unet).
        full = self._full_weights(base, [t.detach() for t in theta], names)
        keys = list(full)

        def loss_full(ws: list[torch.Tensor], b: dict) -> torch.Tensor:
            return task.loss(_Bound(model, dict(zip(keys, ws, strict=True))), b).mean()

        ws = _descend([full[k].clone() for k in keys], loss_full, c, stream, create_graph=False)
        stats["inner_steps"] += c.steps
        out: list[torch.Tensor] = []
        for n, wn in zip(names, ws, strict=True):
            u, s, vh = torch.linalg.svd((wn - base[n]).detach(), full_matrices=False)
            root = s[: self.lora_r].sqrt()
            out += [root[:, None] * vh[: self.lora_r], u[:, : self.lora_r] * root[None]]
        return out

    def _unrolled(self, model, base, names, theta, c, stream, harm, lam, task, stats):  # noqa: ANN001
        """∂[λ L_harm(θ*(θ))]/∂θ by backpropagation through the inner loop (the ablation)."""
        lora = [t.detach().requires_grad_(True) for t in theta]
        if c.params == "lora":

            def loss_of(ws: list[torch.Tensor], b: dict) -> torch.Tensor:
                return task.loss(_Bound(model, self._full_weights(base, ws, names)), b).mean()

            w = _descend(list(lora), loss_of, c, stream, create_graph=True)
            weights = self._full_weights(base, w, names)
        else:
            full = self._full_weights(base, lora, names)
            keys = list(full)

            def loss_full(ws: list[torch.Tensor], b: dict) -> torch.Tensor:
                return task.loss(_Bound(model, dict(zip(keys, ws, strict=True))), b).mean()

            ws = _descend([full[k] for k in keys], loss_full, c, stream, create_graph=True)
            weights = dict(zip(keys, ws, strict=True))
        stats["inner_steps"] += c.steps
        return list(torch.autograd.grad(lam * harm(weights), lora))


def _descend(
    w: list[torch.Tensor],
    loss_of: Callable[[list[torch.Tensor], dict], torch.Tensor],
    c: InnerConfig,
    stream,  # noqa: ANN001
    *,
    create_graph: bool,
) -> list[torch.Tensor]:
    """``c.steps`` of GD or Adam (hand-written, fresh state) on ``loss_of(w, batch)``."""
    if not create_graph:
        w = [x.detach().requires_grad_(True) for x in w]
    m = [torch.zeros_like(x) for x in w]
    v = [torch.zeros_like(x) for x in w]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for k in range(1, c.steps + 1):
        b = next(stream)
        g = torch.autograd.grad(loss_of(w, b), w, create_graph=create_graph)
        if c.optimizer == "gd":
            new = [x - c.lr * gi for x, gi in zip(w, g, strict=True)]
        else:
            m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
            v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g, strict=True)]
            # sqrt(v + tiny) keeps the unrolled graph finite where a gradient is exactly 0
            new = [
                x - c.lr * (mi / (1 - b1**k)) / (torch.sqrt(vi / (1 - b2**k) + 1e-30) + eps)
                for x, mi, vi in zip(w, m, v, strict=True)
            ]
        w = new if create_graph else [x.detach().requires_grad_(True) for x in new]
    return w


def _shards(retain: Data, n: int, seed: int) -> list[Data]:
    """``n`` disjoint seeded shards of the retain set: the benign sets down1..down_n."""
    if len(retain) < n:
        raise ValueError(f"resalign: {len(retain)} retain examples cannot fill {n} shards")
    perm = np.random.default_rng(seed).permutation(len(retain))
    return [retain.subset(np.sort(part)) for part in np.array_split(perm, n)]


class _Streams:
    """Endless shuffled batches per (shard, batch size), each seeded, created on first use."""

    def __init__(self, task: Task, shards: list[Data], seed: int):
        self.task, self.shards, self.seed = task, shards, seed
        self.open: dict[tuple[int, int], Iterator[dict]] = {}

    def get(self, c: InnerConfig) -> Iterator[dict]:
        key = (c.data, c.batch_size)
        if key not in self.open:
            self.open[key] = self._cycle(*key)
        return self.open[key]

    def _cycle(self, shard: int, bs: int) -> Iterator[dict]:
        for k in itertools.count():
            yield from self.task.batches(
                self.shards[shard], bs, shuffle=True, seed=derive_seed(self.seed, shard, bs, k)
            )
