"""DDPM noise schedule, DDIM sampling and inversion, and the guidance rules of the pipeline.

Notation (Ho et al. 2020, arXiv:2006.11239; Song et al. 2021, arXiv:2010.02502):
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; the model predicts eps. A deterministic DDIM step
from t to s goes through x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t):
x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat. DDIM *inversion* runs the same update from
s = t_prev to t (upwards), as in MemoRa's ``latent_iversion.py``.

Guidance (``guided_eps``), all on one batched forward pass of [uncond | cond | (safety)]:
- classifier-free (Ho & Salimans 2022): eps = eps(u) + w (eps(c) - eps(u)), where u is the empty
  prompt or, with a negative prompt, the negative prompt (negative-prompt guidance);
- SLD (Schramowski et al. 2023, arXiv:2211.05105), safe latent diffusion with a safety concept
  c_S: eps = eps(u) + w [(eps(c) - eps(u)) - gamma], gamma = mu * (eps(c_S) - eps(u)) + momentum,
  mu = min(1, s_S |eps(c) - eps(c_S)|) where eps(c) - eps(c_S) < threshold (else 0), applied
  after ``warmup`` steps; the momentum accumulates gamma with ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["NoiseSchedule", "SafetyGuidance", "ddim_invert", "ddim_sample", "ddim_timesteps"]

MAX_GUIDANCE = 50.0  # larger scales saturate every pixel; anything above is a typo


@dataclass(frozen=True)
class SafetyGuidance:
    """SLD's hyperparameters; the defaults are the paper's "medium" configuration."""

    scale: float = 1000.0  # s_S: how strongly the safety concept is steered away from
    warmup: int = 7  # steps (of 50 in the paper; scaled by the sampler) before it switches on
    threshold: float = 0.01  # lambda: elements where eps(c) - eps(c_S) >= this are left alone
    momentum: float = 0.3  # s_m: weight of the accumulated safety guidance
    beta: float = 0.4  # beta_m: momentum decay


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM schedule: ``T`` steps of a linear beta schedule (pixel-space DDPM defaults).

    The betas are given for T = 1000 and scaled by 1000 / T (Nichol & Dhariwal 2021's rule for
    shorter schedules), so every T ends at pure noise: unscaled, T = 200 would end at
    abar_T = 0.13 (37% of the image left in x_T), and samples started from N(0, I) would begin
    far from anything the model was trained on.
    """

    T: int = 1000  # training timesteps
    beta_start: float = 1e-4  # beta_1 for T = 1000 (scaled by 1000 / T)
    beta_end: float = 0.02  # beta_T for T = 1000 (scaled by 1000 / T)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        scale = 1000.0 / self.T
        betas = torch.linspace(
            self.beta_start * scale, min(self.beta_end * scale, 0.999), self.T, dtype=torch.float64
        )
        return torch.cumprod(1.0 - betas, 0).float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t for (B,) timesteps ``t``."""
        ab = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps, descending (T-1 ... ~0), "leading" spacing."""
    if not 1 <= steps <= schedule.T:
        raise ValueError(f"DDIM steps must be in 1..{schedule.T}, got {steps}")
    stride = schedule.T // steps
    return list(range((steps - 1) * stride, -1, -stride))


def _step(
    ab: torch.Tensor, t: int, s: int, x: torch.Tensor, eps: torch.Tensor, *, clip: bool = False
) -> torch.Tensor:
    """The deterministic DDIM update from timestep t to s (s < t samples, s > t inverts).
    s = -1 stands for abar = 1 (the clean image). ``clip`` clamps the predicted x0 to the pixel
    range [-1, 1] (diffusers' DDIM ``clip_sample=True``, its default for pixel-space models):
    at the first steps x0_hat divides the noise-prediction error by sqrt(abar_T) ~ 0.006, and
    an unclipped x0_hat of a small, imperfect model throws the trajectory off the data range."""
    a_t = ab[t]
    a_s = ab[s] if s >= 0 else torch.tensor(1.0)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps


EpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (x, t_batch, step i) -> eps


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    start: int = 0,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Run DDIM from ``x_T`` (the latent at step ``start`` of ``steps``) down to x_0.

    ``eta`` > 0 adds DDIM's stochastic term (eta = 1 is DDPM-like ancestral sampling), drawn
    from ``generator``. ``clip`` clamps each predicted x0 to [-1, 1] (see ``_step``)."""
    ab = schedule.alphas_cumprod
    ts = ddim_timesteps(schedule, steps)
    x = x_T
    for i in range(start, len(ts)):
        t, s = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        eps = eps_fn(x, torch.full((len(x),), t, dtype=torch.long), i)
        if eta == 0.0:
            x = _step(ab, t, s, x, eps, clip=clip)
            continue
        a_t, a_s = ab[t], (ab[s] if s >= 0 else torch.tensor(1.0))
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        noise = torch.randn(x.shape, generator=generator)
        x = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp_min(0).sqrt() * eps + sigma * noise
    return x


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn, x0: torch.Tensor, schedule: NoiseSchedule, steps: int, *, stop: int = 0
) -> list[torch.Tensor]:
    """DDIM inversion: the latents [x_0, x_{t_last}, ..., x_{t_first}] going up the sampling
    grid of ``steps``. ``trajectory[-(k+1)]`` is the latent from which sampling step ``k``
    starts (``trajectory[-1]`` is x_T). ``stop`` > 0 ends at sampling step ``stop``."""
    ab = schedule.alphas_cumprod
    ts = ddim_timesteps(schedule, steps)[::-1]  # ascending
    x, out = x0, [x0]
    prev = -1
    for j, t in enumerate(ts[: len(ts) - stop]):
        # the eps at the current (lower) noise level stands in for the one at t
        eps = eps_fn(x, torch.full((len(x),), max(prev, 0), dtype=torch.long), len(ts) - 1 - j)
        x = _step(ab, prev, t, x, eps) if prev >= 0 else _invert_first(ab, t, x, eps)
        out.append(x)
        prev = t
    return out


def _invert_first(ab: torch.Tensor, t: int, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps


def check_guidance(scale: float) -> float:
    if not (isinstance(scale, int | float) and math.isfinite(scale)):
        raise ValueError(f"guidance scale must be a finite number, got {scale!r}")
    if not 0.0 <= scale <= MAX_GUIDANCE:
        raise ValueError(
            f"guidance scale {scale} is out of range: use 0 (unconditional) .. {MAX_GUIDANCE:g}; "
            f"1 is the plain conditional model, 2-7.5 the usual classifier-free guidance"
        )
    return float(scale)


class Guidance:
    """Stateful guided-eps function for one sampling run (SLD keeps a momentum)."""

    def __init__(
        self,
        net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        cond: torch.Tensor,
        uncond: torch.Tensor,
        scale: float,
        *,
        safety: torch.Tensor | None = None,
        sld: SafetyGuidance | None = None,
        warmup: int = 0,
    ):
        self.net, self.cond, self.uncond, self.scale = net, cond, uncond, check_guidance(scale)
        self.safety, self.sld, self.warmup = safety, sld, warmup
        self.momentum: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        if self.scale == 1.0 and self.safety is None:
            return self.net(x, t, self.cond)  # plain conditional model: one forward
        if self.scale == 0.0 and self.safety is None:
            return self.net(x, t, self.uncond)
        ctxs = [self.uncond, self.cond] + ([self.safety] if self.safety is not None else [])
        k = len(ctxs)
        eps = self.net(x.repeat(k, 1, 1, 1), t.repeat(k), torch.cat(ctxs)).chunk(k)
        e_u, e_c = eps[0], eps[1]
        guide = e_c - e_u
        if self.safety is not None:
            sld = self.sld or SafetyGuidance()
            e_s = eps[2]
            mu = (sld.scale * (e_c - e_s).abs()).clamp(max=1.0)
            mu = torch.where(e_c - e_s >= sld.threshold, torch.zeros_like(mu), mu)
            if self.momentum is None:
                self.momentum = torch.zeros_like(e_u)
            gamma = mu * (e_s - e_u) + sld.momentum * self.momentum
            self.momentum = sld.beta * self.momentum + (1 - sld.beta) * gamma
            if i >= self.warmup:
                guide = guide - gamma
        return e_u + self.scale * guide
