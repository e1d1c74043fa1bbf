"""MemoRa (memory self-regeneration, arXiv:2510.03263) on hand-made cases and the t2i-tiny
fixture: slerp, the inversion to the start step, steps_to_half, the LoRA trainer, AutoMemoRa's
blend, and the attack raising the concept rate of an ESD-erased model but not the oracle's."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from obliviate.audits.memora import (
    MemoRa,
    _AutoMemoRa,
    invert_to_step,
    slerp,
    steps_to_half,
    train_lora,
)
from obliviate.diffusion.schedule import ddim_timesteps
from obliviate.loop import seeded
from obliviate.registry import BENCHMARKS, METHODS
from obliviate.types import Budget


# -- slerp ---------------------------------------------------------------------------------------
def test_slerp_endpoints_norm_and_angle():
    """tau = 0 / 1 give the endpoints; unit vectors stay unit; the result lies at angle tau*w
    from z1 and (1 - tau)*w from z2, in the plane of the two."""
    z1 = torch.tensor([1.0, 0.0, 0.0])
    z2 = torch.tensor([0.0, 1.0, 0.0])  # w = pi / 2
    assert torch.allclose(slerp(z1, z2, 0.0), z1, atol=1e-6)
    assert torch.allclose(slerp(z1, z2, 1.0), z2, atol=1e-6)
    mid = slerp(z1, z2, 0.5)
    assert torch.allclose(mid, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-6)
    # a generic pair on the unit sphere, several taus at once: (K, *shape)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    a, b = a / a.norm(), b / b.norm()
    omega = torch.arccos((a * b).sum())
    taus = [0.0, 0.1, 0.3, 0.5, 0.9, 1.0]
    out = slerp(a, b, taus)
    assert out.shape == (len(taus), 2, 4, 3)
    for tau, z in zip(taus, out, strict=True):
        assert z.norm().item() == pytest.approx(1.0, abs=1e-5)
        assert torch.arccos((z * a).sum().clamp(-1, 1)).item() == pytest.approx(
            tau * omega.item(), abs=1e-3
        )
        assert torch.arccos((z * b).sum().clamp(-1, 1)).item() == pytest.approx(
            (1 - tau) * omega.item(), abs=1e-3
        )
    # not the linear interpolation: the chord midpoint of unit vectors is shorter than 1
    assert (0.5 * (a + b)).norm().item() < 0.99 and out[3].norm().item() > 0.999


def test_slerp_scales_with_norm_and_falls_back_when_parallel():
    """Two vectors of one norm r stay at norm r (the code does not normalise the output);
    parallel inputs (sin w = 0) give the linear interpolation instead of 0/0."""
    z1, z2 = 3 * torch.tensor([1.0, 0.0]), 3 * torch.tensor([0.0, 1.0])
    assert slerp(z1, z2, 0.25).norm().item() == pytest.approx(3.0, abs=1e-5)
    p = torch.tensor([1.0, 2.0])
    out = slerp(p, 2 * p, [0.0, 0.5, 1.0])
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.stack([p, 1.5 * p, 2 * p]), atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        slerp(torch.zeros(3), torch.zeros(4), 0.5)


# -- inversion on a hand-made model --------------------------------------------------------------
class ConstantEps(nn.Module):
    """A "model" that predicts the same noise c everywhere: DDIM keeps x0_hat = x0 exactly, so
    the latent at sampling step s is sqrt(abar_t) x0 + sqrt(1 - abar_t) c with t = ts[s]."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c
        self.text_encoder = lambda tokens: torch.zeros(len(tokens), tokens.shape[1], 4)

    def forward(self, x_t, t, tokens=None, *, context=None):
        return self.c.expand_as(x_t)


@pytest.fixture(scope="module")
def task():
    bench = BENCHMARKS.get("t2i-tiny")
    return bench.task(bench.load())  # data only: no model is trained


@pytest.mark.parametrize(("steps", "start"), [(20, 6), (20, 0), (50, 15)])
def test_invert_to_step_hand_made(task, steps, start):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, *task.image_shape, generator=g) * 2 - 1
    c = torch.randn(*task.image_shape, generator=g)
    model = ConstantEps(c)
    z = invert_to_step(model, x0, ["a three", "a three"], task=task, steps=steps, start=start,
                       guidance=3.0)  # fmt: skip
    t = ddim_timesteps(task.schedule, steps)[start]
    ab = task.schedule.alphas_cumprod[t]
    assert torch.allclose(z, ab.sqrt() * x0 + (1 - ab).sqrt() * c, atol=1e-5)
    # sampling from step `start` with the same model returns the image (DDIM is exact here)
    back = task.sample(model, ["a three"] * 2, x_T=z, start=start, steps=steps, guidance=3.0)
    assert torch.allclose(back, x0, atol=1e-4)
    with pytest.raises(ValueError, match="start step"):
        invert_to_step(model, x0, ["a three"] * 2, task=task, steps=steps, start=steps,
                       guidance=1.0)  # fmt: skip


def test_auto_memora_blend_hand_made():
    """eps = eps_bad + w (eps_main - eps_bad): w = 0 is the unlearned model, w = 1 the LoRA'd
    one, w = 2 extrapolates past it."""
    x = torch.zeros(1, 3, 8, 8)
    main, bad = ConstantEps(torch.full((3, 8, 8), 2.0)), ConstantEps(torch.full((3, 8, 8), 0.5))
    t = torch.zeros(1, dtype=torch.long)
    for w, want in ((0.0, 0.5), (1.0, 2.0), (2.0, 3.5)):
        assert torch.allclose(_AutoMemoRa(main, bad, w)(x, t), torch.full_like(x, want))


def test_steps_to_half():
    grid = [0, 10, 50, 100]
    assert steps_to_half(grid, [0.0, 0.1, 0.4, 0.7], 0.7) == (50.0, True)  # 0.4 >= 0.35
    assert steps_to_half(grid, [0.5, 0.5, 0.5, 0.5], 0.7) == (0.0, True)  # never forgot
    assert steps_to_half(grid, [0.0, 0.0, 0.1, 0.3], 0.7) == (100.0, False)  # grid max, flagged
    assert steps_to_half(grid, [0.0, 0.0, 0.0, 0.0], 0.0) == (0.0, True)  # original at 0
    assert all(math.isfinite(v) for v in steps_to_half(grid, [0.0] * 4, 1.0))


# -- on the t2i-tiny fixture ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def esd(t2i_tiny):
    """ESD-x with 50 iterations (6.5 s): the concept rate of "three" 0.70 -> 0.05 (20 samples)."""
    env = t2i_tiny
    with seeded(0):
        return METHODS.build("esd", {"iterations": 50}).unlearn(
            env.fresh(), env.splits.forget, env.splits.retain, task=env.task, budget=Budget()
        )


@pytest.mark.slow  # needs the ESD fixture: 94 s to build under load
def test_regeneration_reconstructs_the_endpoints(t2i_tiny, esd):
    """Inverting to step 6 of 20 and regenerating with the same (unlearned) model returns close
    to the source image at tau = 0 and 1 (the slerp endpoints); the interior points differ."""
    env, audit = t2i_tiny, MemoRa()
    prompts = audit.pair_prompts(env.ds, env.ds.concept("three"))
    assert prompts == ["a photo of a three"] * 3
    src = audit.sources(env.original, prompts, task=env.task)
    regen, captions = audit.regenerate(esd, src, prompts, task=env.task)
    assert regen.shape == (33, *env.task.image_shape) and len(captions) == 33
    ends = regen[[0, 10, 11, 21, 22, 32]]
    err = ((ends - src) ** 2).flatten(1).mean(1)
    apart = ((src[[1, 0, 3, 2, 5, 4]] - src) ** 2).flatten(1).mean(1)  # between a pair's images
    # measured (ESD-50): endpoint MSE 0.005..0.013, the pair's images 0.18..0.44 apart
    assert err.max() < 0.05 and (err < 0.25 * apart).all()


def test_train_lora_is_seeded_and_leaves_its_input(t2i_tiny):
    """Same seed -> the same weights; k = 0 is an exact copy; only the attention projections
    change; the input model is untouched."""
    env = t2i_tiny
    model = copy.deepcopy(env.original)
    before = copy.deepcopy(model.state_dict())
    data = env.splits.forget.subset(np.arange(8))
    runs = [dict(train_lora(model, data, task=env.task, steps=(0, 3), seed=5)) for _ in range(2)]
    other = dict(train_lora(model, data, task=env.task, steps=(3,), seed=6))
    w0, w3, w3b = (r.state_dict() for r in (runs[0][0], runs[0][3], runs[1][3]))
    assert all(torch.equal(w0[k], before[k]) for k in before)
    assert all(torch.equal(w3[k], w3b[k]) for k in before)
    changed = {k for k in before if not torch.equal(w3[k], before[k])}
    assert changed and all(".attn1.to_" in k or ".attn2.to_" in k for k in changed)
    assert any(not torch.equal(other[3].state_dict()[k], w3[k]) for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.slow  # 123 s under load
def test_memora_recovers_an_esd_erasure_and_not_the_oracle(t2i_tiny, esd):
    """The audit's defaults on ESD-x (50 iterations): the LoRA on the self-regenerated images
    brings "three" back to the original's level; the same attack on the retrain oracle (which
    never saw a "three") gets nothing; the no-inversion control barely moves."""
    env = t2i_tiny
    before = copy.deepcopy(esd.state_dict())
    r = MemoRa().audit(env.original, esd, env.splits, task=env.task, ctx=env.ctx)
    m = r.metrics
    # measured: original 0.70; model 0.05 -> 0.10, 0.55, 0.70 at 10, 50, 100 LoRA steps;
    # oracle 0.00 throughout; control-noinv 0.05 -> 0.10; control-raw 0.05 -> 0.65
    assert m["original_concept_rate"] >= 0.4
    assert m["concept_rate_start"] <= 0.2
    assert m["recovery"] >= 0.35  # measured 0.65
    assert m["concept_rate"] >= 0.5 * m["original_concept_rate"]
    assert m["reached_half"] == 1.0 and m["steps_to_half"] <= 50  # measured 50
    assert m["oracle_concept_rate"] <= 0.15  # measured 0.0
    assert m["oracle_reached_half"] == 0.0 and m["oracle_steps_to_half"] == 100.0
    # bootstrap 95% CIs (20 samples each) do not overlap: measured [0.5, 0.9] vs [0, 0]
    assert m["concept_rate_lo"] > m["oracle_concept_rate_hi"]
    assert m["gap"] >= 0.4  # measured 0.70
    assert m["noinv_concept_rate"] <= m["concept_rate"] - 0.3  # measured 0.10 vs 0.70
    # the regenerated set still shows the concept (measured 0.97): what the LoRA learns from
    assert m["regenerated_concept_rate"] >= 0.7
    # utility kept: measured 0.85 -> 0.87 (54 unrelated samples)
    assert m["unrelated_class_acc"] >= m["unrelated_class_acc_start"] - 0.15
    c = r.curves["memora"]
    assert c["steps"] == [0.0, 10.0, 50.0, 100.0]
    assert set(c) == {"steps", "concept_rate", "concept_prob", "oracle_concept_rate",
                      "oracle_concept_prob"}  # fmt: skip
    assert c["concept_prob"][-1] > c["concept_prob"][0] + 0.1  # measured 0.10 -> 0.31
    assert set(r.curves) == {"memora", "control-noinv", "control-raw"}
    for key in ("regenerated_images", "after_lora_images", "source_images"):
        a = r.arrays[key]
        assert a.dtype == np.float16 and a.ndim == 4 and a.shape[1:] == env.task.image_shape
    assert all(torch.equal(v, before[k]) for k, v in esd.state_dict().items())


# 72 s under load; determinism is also in the contract test
@pytest.mark.slow
def test_oracle_against_itself_is_exact_and_deterministic(t2i_tiny):
    """Audited as the unlearned model, the oracle gets the same regeneration, LoRA seed and
    evaluation seeds as its own row: gap 0 and equal curves exactly; a second call repeats every
    metric (the audit seeds everything from ctx.seed); AutoMemoRa at w = 0 is flat; ctx.oracle
    is left unchanged."""
    env = t2i_tiny
    audit = MemoRa(seed_pairs=((1805, 2821),), interp_steps=3, steps=(0, 4), controls=False,
                   n=2, n_unrelated=1, n_boot=50)  # fmt: skip
    oracle = env.ctx.oracle
    before = copy.deepcopy(oracle.state_dict())
    r1 = audit.audit(env.original, oracle, env.splits, task=env.task, ctx=env.ctx)
    r2 = audit.audit(env.original, oracle, env.splits, task=env.task, ctx=env.ctx)
    c = r1.curves["memora"]
    assert c["concept_rate"] == c["oracle_concept_rate"]
    assert c["concept_prob"] == c["oracle_concept_prob"]
    assert r1.metrics["gap"] == 0.0
    assert r1.metrics == r2.metrics
    assert r1.metrics["n_train_images"] == 4.0 and r1.metrics["start_step"] == 6.0
    assert "control-noinv" not in r1.curves
    # AutoMemoRa with w = 0 samples the model without its LoRA: every point equals step 0
    auto = dataclasses.replace(audit, auto_w=0.0, n_unrelated=1)
    r3 = auto.audit(env.original, oracle, env.splits, task=env.task, ctx=env.ctx)
    flat = r3.curves["memora"]["concept_prob"]
    assert flat == [flat[0]] * len(flat) and flat[0] == c["concept_prob"][0]
    assert all(torch.equal(v, before[k]) for k, v in oracle.state_dict().items())


def test_refuses_bad_requests(t2i_tiny):
    env = t2i_tiny
    splits = dataclasses.replace(env.splits, info={"kind": "class", "rule": "class:3"})
    with pytest.raises(ValueError, match="concept deletion request"):
        MemoRa().audit(env.original, env.original, splits, task=env.task, ctx=env.ctx)
    with pytest.raises(ValueError, match="start_step"):
        MemoRa(start_step=60).audit(env.original, env.original, env.splits, task=env.task,
                                    ctx=env.ctx)  # fmt: skip
    with pytest.raises(ValueError, match="steps"):
        MemoRa(steps=()).audit(env.original, env.original, env.splits, task=env.task, ctx=env.ctx)
