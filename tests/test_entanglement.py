"""Entanglement metrics M1-M9 on hand-made graphs (exact values) and the OLS regression."""

from __future__ import annotations

import math

import numpy as np
import pytest

nx = pytest.importorskip("networkx")
pytest.importorskip("statsmodels")

from obliviate.audits.entanglement import (  # noqa: E402
    METRIC_NAMES,
    entanglement_metrics,
    fact_anchors,
    regress_rates,
    simple_graph,
    spreading_activation,
)

M = {name: j for j, name in enumerate(METRIC_NAMES)}


def _star() -> nx.Graph:
    return nx.star_graph(["c", "l1", "l2", "l3"])  # centre "c", three leaves


def test_star_exact_values():
    g = _star()
    x = entanglement_metrics(
        g, [("c",), ("l1",)], forgotten=["l2"], hops=1, activation_steps=2, activation_alpha=0.5
    )
    centre, leaf = x
    assert centre[M["degree"]] == 3 and leaf[M["degree"]] == 1
    assert centre[M["weighted_degree"]] == 3 and leaf[M["weighted_degree"]] == 1
    assert centre[M["eigenvector"]] == pytest.approx(1 / math.sqrt(2), abs=1e-9)
    assert leaf[M["eigenvector"]] == pytest.approx(1 / math.sqrt(6), abs=1e-9)
    # PageRank of a 4-node star, solved by hand: l = 0.0375 + 0.85 c / 3, c = 0.0375 + 2.55 l
    assert leaf[M["pagerank"]] == pytest.approx(0.048125 / 0.2775, abs=1e-8)
    assert centre[M["pagerank"]] == pytest.approx(1 - 3 * 0.048125 / 0.2775, abs=1e-8)
    assert centre[M["clustering"]] == 0 and leaf[M["clustering"]] == 0
    assert centre[M["khop_size"]] == 3 and leaf[M["khop_size"]] == 1  # hops=1
    # a1 = s + W s / 2: c 1, leaves 0.5; a2: c 1 + 0.75, leaves 0.5 -> 3.25
    assert centre[M["activation"]] == pytest.approx(3.25)
    # from l1: a1 = {l1: 1, c: .5}; a2 = {l1: 1.25, c: .5, l2: .25, l3: .25} -> 2.25
    assert leaf[M["activation"]] == pytest.approx(2.25)
    assert centre[M["forgotten_neighbours"]] == 1 and leaf[M["forgotten_neighbours"]] == 0
    assert centre[M["forgotten_distance"]] == 1 and leaf[M["forgotten_distance"]] == 2


def test_path_exact_values():
    g = nx.path_graph(["a", "b", "c"])
    x = entanglement_metrics(g, [("a",), ("b",)], forgotten=["c"], hops=2, activation_steps=2)
    end, mid = x
    assert end[M["eigenvector"]] == pytest.approx(0.5, abs=1e-9)
    assert mid[M["eigenvector"]] == pytest.approx(1 / math.sqrt(2), abs=1e-9)
    # e = 0.05 + 0.425 c, c = 0.05 + 1.7 e  ->  e = 0.07125 / 0.2775
    assert end[M["pagerank"]] == pytest.approx(0.07125 / 0.2775, abs=1e-8)
    assert mid[M["pagerank"]] == pytest.approx(1 - 2 * 0.07125 / 0.2775, abs=1e-8)
    assert end[M["khop_size"]] == 2 and mid[M["khop_size"]] == 2
    assert end[M["activation"]] == pytest.approx(2.0)  # {a: 1.25, b: .5, c: .25}
    assert end[M["forgotten_distance"]] == 2 and mid[M["forgotten_distance"]] == 1
    assert end[M["forgotten_neighbours"]] == 0 and mid[M["forgotten_neighbours"]] == 1


def test_triangle_edge_fact_and_no_forgotten():
    g = nx.complete_graph(["a", "b", "c"])
    (x,) = entanglement_metrics(g, [fact_anchors("a", "b")], hops=1, activation_steps=1)
    assert x[M["degree"]] == 2 and x[M["clustering"]] == 1
    assert x[M["eigenvector"]] == pytest.approx(1 / math.sqrt(3), abs=1e-9)
    assert x[M["pagerank"]] == pytest.approx(1 / 3, abs=1e-9)
    assert x[M["khop_size"]] == 1  # c: the anchors themselves are excluded
    assert x[M["activation"]] == pytest.approx(2.0)  # s = .5 on a, b; + (.25, .25, .5)
    assert x[M["forgotten_neighbours"]] == 0
    assert x[M["forgotten_distance"]] == 3  # no forgotten node: no_path = number of nodes
    # a forgotten anchor is not its own neighbour nor at distance 0
    (y,) = entanglement_metrics(g, [("a", "b")], forgotten=["a", "c"], hops=1)
    assert y[M["forgotten_neighbours"]] == 1 and y[M["forgotten_distance"]] == 1


def test_fact_anchors_and_multigraph_fold():
    assert fact_anchors("p", None) == ("p",)
    assert fact_anchors("p", "p") == ("p",)
    assert fact_anchors("p", "c") == ("p", "c")
    mg = nx.MultiDiGraph()
    mg.add_edge("a", "b", key="r1", relation="r1")
    mg.add_edge("b", "a", key="r1", relation="r1")  # the symmetric twin: one relation
    mg.add_edge("a", "b", key="r2", relation="r2")
    mg.add_edge("b", "c", key="r1", relation="r1")
    mg.add_edge("c", "c", key="self", relation="self")
    g = simple_graph(mg)
    assert g["a"]["b"]["weight"] == 2 and g["b"]["c"]["weight"] == 1
    assert not g.has_edge("c", "c")
    x = entanglement_metrics(mg, [("b",)], hops=1)[0]
    assert x[M["degree"]] == 2 and x[M["weighted_degree"]] == 3


def test_activation_weighted_and_errors():
    g = nx.Graph()
    g.add_edge("a", "b", weight=2.0)
    act = spreading_activation(g, ["a"], steps=1, alpha=0.5)
    assert act == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="not nodes of the graph"):
        entanglement_metrics(g, [("zzz",)])
    with pytest.raises(ValueError, match="steps"):
        spreading_activation(g, ["a"], steps=-1, alpha=0.5)


def test_regression_finds_the_explaining_metric():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 9))
    x[:, M["clustering"]] = 0.0  # constant: dropped, no coefficient
    y = 0.5 + 0.2 * x[:, M["pagerank"]] + 0.01 * rng.normal(size=60)
    r = regress_rates(y, x)
    assert "clustering" not in r.used and math.isnan(r.coef["clustering"])
    assert r.best is not None and r.best[0] == "pagerank"
    assert r.r2 > 0.99 and r.r2_single["pagerank"] > 0.99
    assert r.r2_single["degree"] < 0.1  # an unrelated metric explains little
    assert r.pvalue["pagerank"] < 1e-10
    # standardised units: the slope times the metric's standard deviation
    assert r.coef["pagerank"] == pytest.approx(0.2 * x[:, M["pagerank"]].std(), rel=0.02)
    # more metrics than facts: no joint fit, but the single-metric R^2 still exist
    small = regress_rates(y[:6], x[:6])
    assert math.isnan(small.r2) and math.isfinite(small.r2_single["pagerank"])
    # nothing to explain
    flat = regress_rates(np.ones(60), x)
    assert math.isnan(flat.r2) and flat.best is None
    with pytest.raises(ValueError, match="must be"):
        regress_rates(y, x[:, :3])
