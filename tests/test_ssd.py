"""SSD (Selective Synaptic Dampening) on the tiny fixture: the Fisher estimators, the selection
ceiling that motivates ``alpha_cap``, the dampening rule, and class forgetting.

Margins were measured with the fixed seeds below (digit 3 forgotten, seed 0): the default
takes forget accuracy from 1.00 to 0.42 with retain accuracy unchanged at 0.996.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from obliviate.loop import count_steps, seeded
from obliviate.methods.ssd import SSD
from obliviate.types import Budget


def _evaluate(env, model):
    task, s = env.task, env.splits
    return {
        "forget": task.evaluate(model, s.forget)["accuracy"],
        "retain": task.evaluate(model, s.retain)["accuracy"],
        "forget_test": task.evaluate(model, s.extra["forget_test"])["accuracy"],
        "retain_test": task.evaluate(model, s.extra["retain_test"])["accuracy"],
    }


def _naive_fisher(model, data):
    """Per-example squared gradients, one autograd call per example (the definition)."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(data)):
        loss = F.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1])
        for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
            t += g.pow(2)
    return [t / len(data) for t in total]


def test_example_fisher_matches_the_definition(tiny):
    model = tiny.fresh().eval()
    forget = tiny.splits.forget.subset(np.arange(12))
    retain = tiny.splits.retain.subset(np.arange(30))
    with seeded(0):
        imp_d, imp_f = SSD(chunk_size=7).importances(
            model, forget, retain, task=tiny.task, budget=Budget()
        )
    f_ref = _naive_fisher(model, forget)
    r_ref = _naive_fisher(model, retain)
    for (name, _), f, r in zip(model.named_parameters(), f_ref, r_ref, strict=True):
        torch.testing.assert_close(imp_f[name], f, rtol=1e-4, atol=1e-10)
        d = (12 * f + 30 * r) / 42  # I_D is the Fisher of D = D_f + D_r
        torch.testing.assert_close(imp_d[name], d, rtol=1e-4, atol=1e-10)


def test_forget_to_full_ratio_never_exceeds_the_ceiling(tiny):
    """I_f / I_D <= |D| / |D_f| for the per-example Fisher: the reason for alpha_cap."""
    s = tiny.splits
    with seeded(0):
        imp_d, imp_f = SSD().importances(
            tiny.fresh().eval(), s.forget, s.retain, task=tiny.task, budget=Budget()
        )
    ceiling = (len(s.forget) + len(s.retain)) / len(s.forget)
    ratio = torch.cat([(imp_f[k] / imp_d[k].clamp_min(1e-30)).flatten() for k in imp_f])
    assert ratio.max() <= ceiling * (1 + 1e-5)
    assert ratio.max() > 0.9 * ceiling  # some weights serve the forget class almost alone


def test_uncapped_paper_alpha_selects_nothing_at_ten_percent(tiny):
    """alpha = 10 is above the ceiling (~9.8 here): without the cap SSD is a no-op."""
    model = tiny.fresh()
    with seeded(0), count_steps() as c:
        SSD(alpha_cap=0.0).unlearn(
            model, tiny.splits.forget, tiny.splits.retain, task=tiny.task, budget=Budget()
        )
    assert c.steps == 0
    for a, b in zip(model.state_dict().values(), tiny.original.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dampening_rule(tiny):
    """theta_i *= min(lam * I_D / I_f, 1) exactly where I_f > alpha_eff * I_D, else unchanged."""
    s, method = tiny.splits, SSD(lam=0.5)
    with seeded(3):
        imp_d, imp_f = method.importances(
            tiny.fresh().eval(), s.forget, s.retain, task=tiny.task, budget=Budget()
        )
    model = tiny.fresh()
    with seeded(3):
        method.unlearn(model, s.forget, s.retain, task=tiny.task, budget=Budget())
    alpha = method.effective_alpha(len(s.forget), len(s.forget) + len(s.retain))
    assert alpha == pytest.approx(0.5 * (len(s.forget) + len(s.retain)) / len(s.forget))
    n_sel = 0
    for (name, p), p0 in zip(
        model.named_parameters(), tiny.original.parameters(), strict=True
    ):  # fmt: skip
        sel = imp_f[name] > alpha * imp_d[name]
        expect = torch.where(sel, p0 * (0.5 * imp_d[name] / imp_f[name]).clamp(max=1), p0)
        torch.testing.assert_close(p.detach(), expect.detach())
        n_sel += int(sel.sum())
    assert n_sel > 0


def test_forgets_the_class_and_keeps_the_rest(tiny):
    model = tiny.fresh()
    with seeded(0), count_steps() as c:
        SSD().unlearn(
            model, tiny.splits.forget, tiny.splits.retain, task=tiny.task, budget=Budget()
        )
    assert c.steps == 0  # retraining-free
    before, after = _evaluate(tiny, tiny.original), _evaluate(tiny, model)
    # measured: forget 1.00 -> 0.42, forget_test 0.93 -> 0.41, retain 0.996 -> 0.996
    assert before["forget"] > 0.99 and after["forget"] < 0.6
    assert after["forget_test"] < 0.6
    assert after["retain"] >= before["retain"] - 0.01
    assert after["retain_test"] >= before["retain_test"] - 0.01


def test_batch_fisher_is_the_papers_code_estimator(tiny):
    """fisher="batch": mean over batches of the squared gradient of the batch-mean loss."""
    model = tiny.fresh().eval()
    forget = tiny.splits.forget.subset(np.arange(10))
    retain = tiny.splits.retain.subset(np.arange(10))
    with seeded(0):
        _, imp_f = SSD(fisher="batch", batch_size=4).importances(
            model, forget, retain, task=tiny.task, budget=Budget()
        )
    params = list(model.parameters())
    ref = [torch.zeros_like(p) for p in params]
    for s in range(0, 10, 4):  # batches of 4, 4, 2 in the given order
        loss = F.cross_entropy(model(forget.x[s : s + 4]), forget.y[s : s + 4])
        for t, g in zip(ref, torch.autograd.grad(loss, params), strict=True):
            t += g.pow(2) / 3
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(imp_f[name], r)


def test_budget_caps_the_retain_pass(tiny, caplog):
    """max_steps bounds the D_r gradient batches (SSD has no optimizer steps to count)."""
    s = tiny.splits
    with seeded(0):
        full_d, full_f = SSD().importances(
            tiny.fresh().eval(), s.forget, s.retain, task=tiny.task, budget=Budget()
        )
    with seeded(0), caplog.at_level("INFO", logger="obliviate.methods.ssd"):
        cap_d, cap_f = SSD(chunk_size=16).importances(
            tiny.fresh().eval(), s.forget, s.retain, task=tiny.task, budget=Budget(max_steps=2)
        )
    assert "subset of D_r (32 examples)" in caplog.text  # 2 batches of 16 retain examples
    for k in full_f:
        torch.testing.assert_close(cap_f[k], full_f[k], rtol=1e-4, atol=1e-12)  # D_f: complete
    assert any(not torch.allclose(cap_d[k], full_d[k]) for k in full_d)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="alpha > 0"):
        SSD(alpha=0.0)
    with pytest.raises(ValueError, match="alpha_cap"):
        SSD(alpha_cap=-1.0)
    with pytest.raises(ValueError, match="max_retain"):
        SSD(max_retain=0)
