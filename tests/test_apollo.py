"""Apollo (label-only membership audit): shell projection and the first-crossing ROC by hand,
end to end on the tiny fixture with a small bank, the target queried for labels only, and
sanity with a measured margin.

Sanity setup (``tiny_random``: 10% random forgetting on sklearn digits; 8 shadows, 40 + 40
targets, 400 background examples, 15 steps, eps 0.6): the retrain oracle against ``Leaky``, the
oracle plus a memory of the forget set (inside L2 radius 8 of a forget image, in normalised
units, it answers that image's label). Measured: Under AUC 0.708 on Leaky, 0.558 on the oracle;
best balanced accuracy 0.700 against 0.575 (30 steps, eps 0.3: 0.727/0.569, 0.725/0.613).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from obliviate.audits.apollo import (
    Apollo,
    LabelOracle,
    hull_auc,
    operating_points,
    project_shell,
)
from obliviate.loop import seeded
from obliviate.registry import AUDITS, METHODS

SMALL = {"n_shadows": 8, "n_targets": 40, "n_background": 400}


def test_hull_auc_hand_computed_cases():
    none = np.array([])
    assert hull_auc(none, none) == 0.5  # no rule: chance
    assert hull_auc(np.array([0.2, 0.5]), np.array([0.1, 0.5])) == 0.5  # at or under chance
    assert hull_auc(np.array([0.0]), np.array([0.5])) == pytest.approx(0.75)
    # (0.5, 0.7) lies under the chord from (0.1, 0.6) to (1, 1): 0.1*0.6/2 + 0.9*1.6/2
    assert hull_auc(np.array([0.1, 0.5]), np.array([0.6, 0.7])) == pytest.approx(0.75)
    assert hull_auc(np.array([0.0, 0.0]), np.array([1.0, 0.3])) == 1.0


def test_project_shell_puts_every_delta_in_its_shell():
    x0 = torch.zeros(5, 1, 2, 2)
    d = torch.zeros(5, 1, 2, 2)
    for i, r in enumerate([0.0, 0.5, 2.0, 10.0, 1.0]):
        d[i, 0, 0, 0] = r  # a delta of norm r along one pixel
    out = project_shell(x0, x0 + d, 1.0, 3.0)
    norms = (out - x0).flatten(1).norm(dim=1)
    # zero stays zero (the reference cannot push a null delta), the rest lands in [1, 3]
    assert torch.allclose(norms, torch.tensor([0.0, 1.0, 2.0, 3.0, 1.0]))
    assert torch.equal(out[:, 0, 0, 1:], torch.zeros(5, 1))  # directions are kept


def test_operating_points_follow_the_first_crossing_rule():
    # two steps; member 0 keeps y until the end, non-member 1 loses y at step 1
    conf = np.array([[5.0, 1.0], [4.0, 0.0]])
    pred = np.array([[7, 7], [7, 3]])
    y = np.array([7, 7])
    pts = operating_points(conf, pred, y, np.array([1, 0]), "under")
    # thresholds: -inf (never crossed: read step T-1), 0, 4 (conf 0 < 4 at step 1), +inf
    assert pts["threshold"].tolist() == [-np.inf, 0.0, 4.0, np.inf]
    assert pts["tpr"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert pts["fpr"].tolist() == [0.0, 0.0, 0.0, 1.0]  # at +inf both are read at step 0
    over = operating_points(conf, pred, y, np.array([1, 0]), "over")
    # Over flags "label != y": only the non-member at its last step
    assert over["tpr"].max() == 0.0 and over["fpr"].max() == 1.0
    assert over["precision"][over["fpr"] == 0].tolist() == [0.5] * int((over["fpr"] == 0).sum())


class ScrambledLogits(nn.Module):
    """The same top-1 label as ``base``, every other logit replaced by noise below it."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.calls: list[tuple[int, bool]] = []  # (examples, grad enabled) per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), torch.is_grad_enabled()))
        top = self.base(x).argmax(1)
        noise = torch.rand(len(x), 10, generator=torch.Generator().manual_seed(len(self.calls)))
        return noise.scatter(1, top[:, None], 5.0)


class Leaky(nn.Module):
    """``base``, except within L2 ``radius`` of a remembered image: that image's label."""

    def __init__(self, base: nn.Module, data, radius: float) -> None:  # noqa: ANN001
        super().__init__()
        self.base, self.radius = base, radius
        self.mem_x, self.mem_y = data.x.flatten(1), data.y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        dist, j = torch.cdist(x.flatten(1), self.mem_x).min(1)
        hit = 20.0 * nn.functional.one_hot(self.mem_y[j], out.shape[1]).float()
        return torch.where((dist <= self.radius)[:, None], hit, out)


def _audit(env, model, ctx=None, **kw):  # noqa: ANN001, ANN202
    audit = AUDITS.build("apollo", SMALL | kw)
    with seeded(2):
        return audit.audit(env.original, model, env.splits, task=env.task, ctx=ctx or env.ctx)


def test_end_to_end_label_only_and_counted(tiny_random):
    oracle = tiny_random.oracle
    before = {k: v.clone() for k, v in oracle.state_dict().items()}
    r = _audit(tiny_random, oracle, steps=10, eps=0.9)
    n = 80  # 40 forget + 40 held-out targets
    assert r.metrics["queries"] == n * (2 * 10 + 1)
    assert r.metrics["n_targets"] == 40
    for k, v in r.metrics.items():
        assert math.isfinite(v), k
    for v in ("under", "over"):
        assert r.arrays[f"{v}_conf"].shape == (n, 10) and r.arrays[f"{v}_pred"].shape == (n, 10)
    assert "two halves of the OUT shadows" in r.notes[0]
    for k, v in oracle.state_dict().items():
        assert torch.equal(v, before[k])
    # the target is only asked for labels: scrambling all but the top-1 logit changes nothing
    wrapped = ScrambledLogits(oracle)
    s = _audit(tiny_random, wrapped, steps=10, eps=0.9)
    assert s.metrics == r.metrics
    for k in r.arrays:
        assert np.array_equal(s.arrays[k], r.arrays[k]), k
    assert wrapped.calls == [], "the audit queried the audited model instead of a copy"


def test_label_oracle_counts_and_never_builds_a_graph():
    model = ScrambledLogits(nn.Flatten())
    oracle = LabelOracle(model)
    x = torch.randn(7, 10, requires_grad=True)
    labels = oracle.labels(x)
    assert labels.dtype == torch.long and not labels.requires_grad
    assert oracle.queries == 7 and model.calls == [(7, False)]


def test_leaky_target_is_caught_and_the_oracle_is_not(tiny_random):
    kw = {"steps": 15, "eps": 0.6}
    oracle = _audit(tiny_random, tiny_random.oracle, **kw).metrics
    leaky = Leaky(tiny_random.oracle, tiny_random.splits.forget, 8.0)
    caught = _audit(tiny_random, leaky, **kw).metrics
    # measured: Under hull AUC 0.750 vs 0.604, best balanced accuracy 0.700 vs 0.575
    assert caught["under_auc"] > oracle["under_auc"] + 0.1
    assert caught["under_best_bacc"] > 0.66
    assert oracle["under_best_bacc"] < 0.64


def test_method_row_unlearns_the_shadows_once(tiny_random):
    method = METHODS.build("finetune", {})
    ctx = dataclasses.replace(tiny_random.ctx, method=method)
    r1 = _audit(tiny_random, tiny_random.oracle, ctx=ctx, steps=5, eps=1.8)
    assert "unlearned by FineTune" in r1.notes[0]
    cached = list((tiny_random.cache.root / "apollo-unlearned").glob("*.json"))
    assert len(cached) == SMALL["n_shadows"]
    r2 = _audit(tiny_random, tiny_random.oracle, ctx=ctx, steps=5, eps=1.8)  # from the cache
    assert r2.metrics == r1.metrics


def test_exact_retrain_uses_shadows_retrained_without_the_targets(tiny_random):
    kw = {"n_shadows": 2, "n_targets": 10, "n_background": 200, "steps": 3, "eps": 3.0}
    r = _audit(tiny_random, tiny_random.oracle, exact="retrain", **kw)
    assert "retrained without the targets" in r.notes[0]
    assert r.metrics["queries"] == 20 * 7
    split = _audit(tiny_random, tiny_random.oracle, **kw)  # the default: halves of the OUT
    assert not np.array_equal(split.arrays["under_conf"], r.arrays["under_conf"])


def test_bad_hyperparameters_say_what_to_fix():
    with pytest.raises(ValueError, match="even"):
        Apollo(n_shadows=3)
    with pytest.raises(ValueError, match="eps > 0"):
        Apollo(eps=0.0)
    with pytest.raises(ValueError, match="split-out"):
        Apollo(exact="nope")  # type: ignore[arg-type]
