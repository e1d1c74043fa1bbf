"""influence-prune: the three influence estimators on hand-made cases, the selection rules, and
the wrapper (pruned set size, budget pass-through, equivalence to its parts, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.loop import count_steps, seeded
from obliviate.methods.influence_prune import (
    InfluencePrune,
    _self_influence_last_layer,
    influence_scores,
    parse_inner_params,
    per_example_grads,
    select_influential,
)
from obliviate.registry import METHODS
from obliviate.types import Budget
from obliviate.vision.data import TensorData
from obliviate.vision.task import ClassifierTask


class LinearModel(nn.Module):
    """Multinomial logistic regression with the vision models' .embed/.head interface: every
    parameter is in the head, so all-parameter and last-layer estimators must agree."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.head = nn.Linear(d, c)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def linear_case(n: int = 24, d: int = 4, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = LinearModel(d, c)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(c, d, generator=g))
        model.head.bias.copy_(0.1 * torch.randn(c, generator=g))
    x = torch.randn(n, 1, 1, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    data = TensorData.of(x, y)
    return model.eval(), data, ClassifierTask(num_classes=c)


def brute_force_self_influence(model, forget, train, damping):
    """g_zᵀ (H + λI)⁻¹ g_z with H the explicit Hessian of the mean CE over ``train``."""
    w0, b0 = model.head.weight.detach(), model.head.bias.detach()
    c, d = w0.shape
    x, y = train.x.flatten(1).double(), train.y

    def loss(theta: torch.Tensor) -> torch.Tensor:
        w, b = theta[: c * d].view(c, d), theta[c * d :]
        return F.cross_entropy(x @ w.T + b, y)

    theta = torch.cat([w0.flatten(), b0]).double()
    h = torch.func.hessian(loss)(theta) + damping * torch.eye(len(theta), dtype=torch.float64)
    g = torch.cat([gg for _, gg in per_example_grads(model, forget, task=ClassifierTask(c))])
    g = g.double()
    return (g * torch.linalg.solve(h, g.T).T).sum(1).numpy()


# -- estimators -----------------------------------------------------------------------------
def test_grad_norm_on_a_linear_model_matches_the_closed_form():
    model, data, task = linear_case()
    with torch.no_grad():
        p = F.softmax(model(data.x), 1)
    a = p - F.one_hot(data.y, 3)
    closed = (a.norm(dim=1) * (data.x.flatten(1).pow(2).sum(1) + 1).sqrt()).numpy()
    for layers in ("all", "head"):
        s = influence_scores(model, data, data, task=task, grad_layers=layers)
        np.testing.assert_allclose(s, closed, rtol=1e-5, err_msg=layers)


def test_a_point_with_a_larger_gradient_ranks_higher():
    model, _, task = linear_case()
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    with torch.no_grad():
        pred = int(model(x).argmax())
    # the same input twice: once with the predicted label (small loss, small gradient), once with
    # another label (the gradient points the other way and is larger), then a 3x larger input
    xs = torch.cat([x, x, 3 * x])
    ys = torch.tensor([pred, (pred + 1) % 3, (pred + 1) % 3])
    data = TensorData.of(xs, ys)
    s = influence_scores(model, data, data, task=task)
    assert s[1] > s[0] and s[2] > s[1]
    assert select_influential(s, q=0.3).tolist() == [2]
    assert select_influential(s, q=0.5).tolist() == [1, 2]


def test_per_example_grads_match_a_backward_loop(tiny):
    model = tiny.fresh().eval()
    data = tiny.splits.forget.subset(np.arange(6))
    (_, g), *_ = list(per_example_grads(model, data, task=tiny.task, batch_size=6))
    for i in range(6):
        one = data.subset(np.array([i]))
        batch = next(tiny.task.batches(one, 1))
        grads = torch.autograd.grad(tiny.task.loss(model, batch).sum(), list(model.parameters()))
        ref = torch.cat([gg.flatten() for gg in grads])
        torch.testing.assert_close(g[i], ref, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_last_layer_self_influence_matches_the_explicit_hessian(form):
    model, data, task = linear_case(n=40)
    forget, train = data.subset(np.arange(8)), data
    exact = brute_force_self_influence(model, forget, train, damping=0.05)
    s = _self_influence_last_layer(
        model, forget, [train], task=task, damping=0.05, batch_size=16, form=form
    )
    # dropped near-zero Hessian rows are bounded by 1% of the damping (measured: < 1e-6 here)
    np.testing.assert_allclose(s, exact, rtol=1e-3)


@pytest.mark.parametrize("hessian", ["cg", "lissa"])
def test_iterative_self_influence_on_all_parameters_matches_exact(hessian):
    model, data, task = linear_case(n=40)
    forget = data.subset(np.arange(8))
    exact = brute_force_self_influence(model, forget, data, damping=0.05)
    # curvature_samples >= |D_f ∪ D_r| takes every point, and hvp_batch covers them all, so both
    # solvers see the exact Hessian of the sample; LiSSA is then a convergent Richardson iteration
    s = influence_scores(
        model, forget, data.subset(np.arange(8, 40)), task=task, estimator="self-influence",
        hessian=hessian, damping=0.05, curvature_samples=10_000, hvp_batch=64, cg_iters=40,
        lissa_depth=3000, lissa_scale=2.0,
    )  # fmt: skip
    np.testing.assert_allclose(s, exact, rtol=1e-3)


def test_self_influence_on_the_cnn_head_agrees_between_primal_and_dual(tiny_random):
    env = tiny_random
    model = env.fresh().eval()
    sample = [env.splits.retain.subset(np.arange(64))]
    forget = env.splits.forget
    kw = dict(task=env.task, damping=0.01, batch_size=128)
    primal = _self_influence_last_layer(model, forget, sample, form="primal", **kw)
    dual = _self_influence_last_layer(model, forget, sample, form="dual", **kw)
    np.testing.assert_allclose(dual, primal, rtol=1e-6, atol=1e-8)
    assert (primal >= 0).all()


def test_less_scores_are_cosines_and_rank_an_outlier_last():
    model, _, task = linear_case()
    g = torch.Generator().manual_seed(1)
    # five forget points of class 0 along one input direction, one along an orthogonal one
    xs = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.05 * torch.randn(5, 4, generator=g)
    xs = torch.cat([xs, torch.tensor([[0.0, 0.0, 0.0, 2.0]])]).view(6, 1, 1, 4)
    data = TensorData.of(xs, torch.zeros(6, dtype=torch.long))
    kw = dict(task=task, estimator="less", proj_dim=4096, less_precondition=False)
    with seeded(0):
        s = influence_scores(model, data, data, **kw)
    with seeded(0):
        again = influence_scores(model, data, data, **kw)
    np.testing.assert_array_equal(s, again)
    assert np.all(np.abs(s) <= 1 + 1e-9)
    assert int(np.argmin(s)) == 5
    # with d' >> P the sketch is (nearly) collision-free: the score is the mean cosine itself
    gr = torch.cat([gg for _, gg in per_example_grads(model, data, task=task)]).double()
    u = F.normalize(gr, dim=1)
    np.testing.assert_allclose(s, (u @ u.mean(0)).numpy(), atol=0.05)


def test_less_takes_the_max_over_class_subtasks():
    model, data, task = linear_case(n=30)
    with seeded(0):
        s = influence_scores(
            model, data, data, task=task, estimator="less", proj_dim=4096,
            less_precondition=False,
        )  # fmt: skip
    gr = torch.cat([gg for _, gg in per_example_grads(model, data, task=task)]).double()
    u = F.normalize(gr, dim=1)
    per_class = torch.stack([u @ u[data.y == c].mean(0) for c in range(3)], 1)
    np.testing.assert_allclose(s, per_class.max(1).values.numpy(), atol=0.05)


def test_scoring_leaves_the_model_untouched(tiny):
    model = tiny.fresh().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for est in ("grad-norm", "self-influence", "less"):
        with seeded(0):
            s = influence_scores(
                model, tiny.splits.forget, tiny.splits.retain, task=tiny.task, estimator=est
            )
        assert s.shape == (len(tiny.splits.forget),) and np.isfinite(s).all(), est
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


# -- selection ------------------------------------------------------------------------------
def test_selection_rules():
    s = np.array([0.5, 3.0, 0.0, 1.0, 2.0, 1.0])
    assert select_influential(s, q=0.5).tolist() == [1, 3, 4]  # top 3, positions sorted
    assert select_influential(s, q=0.25).tolist() == [1, 4]  # ceil(0.25 * 6) = 2
    assert len(select_influential(s, q=1.0)) == 6
    assert select_influential(s, rule="threshold", tau=1.0).tolist() == [1, 4]
    assert select_influential(s, rule="threshold", tau=10.0).tolist() == [1]  # min_keep 1
    assert select_influential(s, rule="threshold", tau=10.0, min_keep=2).tolist() == [1, 4]
    # mass: total 7.5; 3 + 2 = 5 < 0.7 * 7.5 = 5.25 <= 3 + 2 + 1
    assert select_influential(s, rule="mass", q=0.7).tolist() == [1, 3, 4]
    assert select_influential(s, rule="mass", q=0.4).tolist() == [1]
    # ties go to the earlier point; a NaN score counts as influential
    assert select_influential(np.ones(4), q=0.5).tolist() == [0, 1]
    assert select_influential(np.array([1.0, np.nan, 2.0]), q=0.3).tolist() == [1]
    with pytest.raises(ValueError, match="unknown rule"):
        select_influential(s, rule="median")


@pytest.mark.parametrize("q", [0.25, 0.5, 0.75])
def test_the_inner_method_gets_the_top_q_of_the_forget_set(tiny, q, caplog):
    # grad-ascent with batch 1 for one epoch takes one optimizer step per forget point it gets
    method = InfluencePrune(inner="grad-ascent", inner_params="batch_size=1;epochs=1", q=q)
    n = len(tiny.splits.forget)
    with seeded(0), count_steps() as c, caplog.at_level("INFO"):
        method.unlearn(
            tiny.fresh(), tiny.splits.forget, tiny.splits.retain, task=tiny.task, budget=Budget()
        )
    assert c.steps == math.ceil(q * n)
    rec = [r for r in caplog.records if hasattr(r, "n_kept")][-1]
    assert (rec.n_forget, rec.n_kept) == (n, math.ceil(q * n)) and rec.score_s > 0


def test_the_budget_passes_through(tiny):
    method = InfluencePrune(inner="grad-ascent", inner_params="epochs=50", q=0.5)
    with seeded(0), count_steps() as c:
        method.unlearn(
            tiny.fresh(), tiny.splits.forget, tiny.splits.retain, task=tiny.task,
            budget=Budget(max_steps=3),
        )  # fmt: skip
    assert c.steps == 3
    # the scoring spends the wall-clock budget first: nothing is left for the inner method
    with seeded(0), count_steps() as c:
        method.unlearn(
            tiny.fresh(), tiny.splits.forget, tiny.splits.retain, task=tiny.task,
            budget=Budget(max_seconds=1e-4),
        )  # fmt: skip
    assert c.steps == 0


def test_keeping_everything_is_the_inner_method_alone(tiny):
    inner = METHODS.build("salun", {"epochs": 0.2})
    wrapped = InfluencePrune(inner="salun", inner_params="epochs=0.2", q=1.0)
    outs = []
    for m in (inner, wrapped):
        with seeded(3):
            outs.append(
                m.unlearn(
                    tiny.fresh(),
                    tiny.splits.forget,
                    tiny.splits.retain,
                    task=tiny.task,
                    budget=Budget(),
                )  # fmt: skip
            )
    for a, b in zip(outs[0].state_dict().values(), outs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_wrapper_is_score_then_select_then_inner(tiny):
    """What benchmarks/free_unlearning.py relies on to score once for several q."""
    wrapped = InfluencePrune(inner="grad-ascent", estimator="less", q=0.5)
    f, r, task = tiny.splits.forget, tiny.splits.retain, tiny.task
    with seeded(5):
        a = wrapped.unlearn(tiny.fresh(), f, r, task=task, budget=Budget())
    with seeded(5):
        model = tiny.fresh()
        s = influence_scores(model, f, r, task=task, estimator="less")
        keep = select_influential(s, q=0.5)
        b = METHODS.build("grad-ascent", {}).unlearn(
            model, f.subset(keep), r, task=task, budget=Budget()
        )
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_dropped_points_already_look_unseen(tiny_random):
    """The paper's premise, on 10% random forgetting: the low grad-norm half of D_f is where the
    original and the retrained oracle already agree (measured: mean |loss gap| 0.003 on the
    dropped half vs 0.10 on the kept half; oracle loss 0.004 vs 0.16)."""
    env = tiny_random
    f = env.splits.forget
    s = influence_scores(env.original, f, env.splits.retain, task=env.task)
    keep = select_influential(s, q=0.5)
    drop = np.setdiff1d(np.arange(len(f)), keep)
    lo = F.cross_entropy(torch.from_numpy(env.task.predict(env.original, f)), f.y, reduction="none")
    lr = F.cross_entropy(torch.from_numpy(env.task.predict(env.oracle, f)), f.y, reduction="none")
    gap = (lo - lr).abs().numpy()
    assert gap[drop].mean() < 0.2 * gap[keep].mean()
    assert lr.numpy()[drop].mean() < 0.2 * lr.numpy()[keep].mean()


# -- configuration errors -------------------------------------------------------------------
def test_inner_params_are_parsed_and_checked():
    assert parse_inner_params(" lr=0.01; epochs=2 ;", "grad-ascent") == {"lr": 0.01, "epochs": 2.0}
    assert parse_inner_params("", "salun") == {}
    with pytest.raises(ValueError, match="Did you mean 'lr'"):
        InfluencePrune(inner="grad-ascent", inner_params="lrr=0.1")
    with pytest.raises(ValueError, match="not key=value"):
        InfluencePrune(inner="grad-ascent", inner_params="lr0.1")
    with pytest.raises(TypeError, match="epochs"):
        InfluencePrune(inner="grad-ascent", inner_params="epochs=many")


def test_a_bad_inner_name_gives_a_did_you_mean_error():
    with pytest.raises(ValueError, match="Did you mean 'finetune'"):
        METHODS.build("influence-prune", {"inner": "finetun"})
    with pytest.raises(ValueError, match="cannot wrap itself"):
        InfluencePrune(inner="influence-prune")


def test_cli_style_params_build():
    m = METHODS.build(
        "influence-prune",
        {"inner": "grad-ascent", "inner_params": "lr=1e-3;epochs=2", "q": "0.25",
         "estimator": "less"},
    )  # fmt: skip
    assert m.q == 0.25 and m.estimator == "less"
    for bad in ({"q": 0.0}, {"q": 1.5}, {"damping": 0.0}, {"proj_dim": 0}):
        with pytest.raises(ValueError):
            METHODS.build("influence-prune", {"inner": "grad-ascent", **bad})
    with pytest.raises(ValueError, match="not one of"):
        METHODS.build("influence-prune", {"estimator": "tracin"})
