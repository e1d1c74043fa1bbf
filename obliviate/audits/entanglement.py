"""Knowledge entanglement: graph metrics M1-M9 of a fact, and their regression on behaviour rates.

From SKeB, "The Limits of Obliviate: Evaluating Unlearning in LLMs via Stimulus-Knowledge
Entanglement-Behavior Framework" (Shah and Le, arXiv:2510.25732). The paper models how
entangled a queried fact is with the rest of its domain (spreading activation in the spirit of
ACT-R and Hebbian association) with nine graph metrics, then regresses the rates at which an
unlearned model answers factually / non-factually / with a hallucination on them. No code is
public and only the abstract and summaries could be read, so the exact nine metrics are
**[reconstructed]** from the metric families they name (methods.md section 6):

====  =====================================  ==================================================
key   metric                                 definition here (anchors A = the fact's node(s))
====  =====================================  ==================================================
M1    degree                                 distinct neighbours, mean over A
M2    weighted degree                        sum of edge weights, mean over A
M3    eigenvector centrality                 weighted, unit L2 norm over the graph, mean over A
M4    PageRank                               weighted, damping ``pagerank_alpha``, mean over A
M5    clustering coefficient                 unweighted local clustering, mean over A
M6    k-hop neighbourhood size               nodes within ``hops`` of A, A excluded
M7    spreading-activation mass              sum of a after ``activation_steps`` steps of
                                             a <- alpha W a + s, s = 1/|A| on A, W = weighted
                                             adjacency (a truncated Katz walk from A)
M8    forgotten neighbours                   forgotten nodes adjacent to A, A excluded
M9    mean distance to forgotten nodes       mean shortest-path hops from A to the reachable
                                             forgotten nodes outside A (``no_path`` if none)
====  =====================================  ==================================================

A fact is an edge (subject, relation, object) or an attribute of its subject; its anchors are
the subject and, for an edge, the object (``fact_anchors``). Graphs are undirected simple
``networkx.Graph`` objects with a ``weight`` per edge (``simple_graph`` folds a MultiDiGraph:
the weight of a pair is the number of distinct relations between them).

Everything here is a pure function of numpy arrays and graphs; networkx and statsmodels are
imported inside the functions, so ``import obliviate`` never needs them.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "Regression",
    "entanglement_metrics",
    "fact_anchors",
    "regress_rates",
    "simple_graph",
    "spreading_activation",
]

# The order of the columns of ``entanglement_metrics``: M1 ... M9.
METRIC_NAMES: tuple[str, ...] = (
    "degree",
    "weighted_degree",
    "eigenvector",
    "pagerank",
    "clustering",
    "khop_size",
    "activation",
    "forgotten_neighbours",
    "forgotten_distance",
)


def simple_graph(graph: Any) -> Any:
    """An undirected ``networkx.Graph`` with ``weight`` = distinct relations between each pair.

    Accepts a (Multi)(Di)Graph; an edge's ``relation`` attribute (or its multigraph key) names
    the relation; a pre-set ``weight`` on a simple graph is kept. Self-loops are dropped (a
    relation of a node with itself says nothing about its entanglement with others).
    """
    import networkx as nx

    out = nx.Graph()
    out.add_nodes_from(graph.nodes(data=True))
    if not graph.is_multigraph():
        for u, v, d in graph.edges(data=True):
            if u != v:
                w = float(d.get("weight", 1.0))
                prev = out.get_edge_data(u, v, {}).get("weight", 0.0)
                out.add_edge(u, v, weight=max(w, prev))  # a DiGraph's u->v and v->u: one edge
        return out
    rels: dict[frozenset, set] = {}
    for u, v, k, d in graph.edges(keys=True, data=True):
        if u != v:
            rels.setdefault(frozenset((u, v)), set()).add(d.get("relation", k))
    for pair, r in rels.items():
        u, v = tuple(pair)
        out.add_edge(u, v, weight=float(len(r)))
    return out


def fact_anchors(subject: Hashable, obj: Hashable | None) -> tuple[Hashable, ...]:
    """The nodes a fact is anchored at: its subject, and its object when the fact is an edge."""
    return (subject,) if obj is None or obj == subject else (subject, obj)


def spreading_activation(
    graph: Any, anchors: Sequence[Hashable], *, steps: int, alpha: float
) -> dict[Hashable, float]:
    """Activation per node after ``steps`` updates of a <- alpha W a + s (a_0 = s).

    s puts 1/|anchors| on each anchor; W is the weighted adjacency, not normalised, so a node
    with many strong links spreads more (a truncated Katz walk: the mass counts weighted walks
    from the anchors, each hop discounted by ``alpha``).
    """
    if steps < 0:
        raise ValueError(f"spreading_activation: steps={steps} must be >= 0")
    seed = {a: 1.0 / len(anchors) for a in anchors}
    act = dict(seed)
    for _ in range(steps):
        new = dict.fromkeys(act, 0.0) | {k: v for k, v in seed.items()}
        for u, val in act.items():
            if val == 0.0:
                continue
            for v, d in graph[u].items():
                new[v] = new.get(v, 0.0) + alpha * float(d.get("weight", 1.0)) * val
        act = new
    return act


def entanglement_metrics(
    graph: Any,
    facts: Sequence[Sequence[Hashable]],
    *,
    forgotten: Iterable[Hashable] = (),
    hops: int = 2,
    activation_steps: int = 2,
    activation_alpha: float = 0.5,
    pagerank_alpha: float = 0.85,
    no_path: float | None = None,
) -> np.ndarray:
    """(n_facts, 9) float64 matrix of M1..M9 (``METRIC_NAMES``) for each fact's anchor tuple.

    ``graph``: any networkx graph (folded by ``simple_graph``). ``facts``: one tuple of anchor
    nodes per fact (``fact_anchors``). ``forgotten``: the nodes whose facts were unlearned.
    ``no_path``: M9 when no forgotten node outside the anchors is reachable; default the number
    of nodes (longer than any shortest path), so the column stays finite for a regression.
    """
    import networkx as nx

    if hops < 0:
        raise ValueError(f"entanglement_metrics: hops={hops} must be >= 0")
    g = simple_graph(graph)
    missing = sorted({str(a) for f in facts for a in f if a not in g})
    if missing:
        raise ValueError(
            f"entanglement_metrics: fact anchors {missing[:5]} are not nodes of the graph; "
            "pass anchors from the same graph (fact_anchors(subject, object))"
        )
    forgotten = {f for f in forgotten if f in g}
    no_path = float(g.number_of_nodes()) if no_path is None else float(no_path)
    # Graph-wide centralities, once. An edgeless graph has no eigenvector to speak of: zeros.
    if g.number_of_edges():
        try:
            eig = nx.eigenvector_centrality_numpy(g, weight="weight")
        except (nx.NetworkXException, ArithmeticError, ValueError):
            eig = nx.eigenvector_centrality(g, weight="weight", max_iter=10_000, tol=1e-10)
    else:
        eig = dict.fromkeys(g, 0.0)
    pr = nx.pagerank(g, alpha=pagerank_alpha, weight="weight", tol=1e-12, max_iter=10_000)
    clus = nx.clustering(g)
    wdeg = dict(g.degree(weight="weight"))
    out = np.empty((len(facts), len(METRIC_NAMES)), dtype=np.float64)
    for i, anchors in enumerate(facts):
        anchors = tuple(dict.fromkeys(anchors))  # unique, order kept
        if not anchors:
            raise ValueError(f"entanglement_metrics: fact {i} has no anchor node")
        aset = set(anchors)
        # Multi-source BFS up to the largest distance needed (hops for M6, all for M9).
        dist = nx.multi_source_dijkstra_path_length(g, aset, weight=lambda u, v, d: 1)
        khop = sum(1 for n, d in dist.items() if 0 < d <= hops)
        neigh = set().union(*(g[a] for a in anchors)) - aset
        far = [dist[f] for f in forgotten - aset if f in dist]
        act = spreading_activation(g, anchors, steps=activation_steps, alpha=activation_alpha)
        out[i] = (
            np.mean([g.degree(a) for a in anchors]),  # M1
            np.mean([wdeg[a] for a in anchors]),  # M2
            np.mean([eig[a] for a in anchors]),  # M3
            np.mean([pr[a] for a in anchors]),  # M4
            np.mean([clus[a] for a in anchors]),  # M5
            khop,  # M6
            sum(act.values()),  # M7
            len(neigh & forgotten),  # M8
            float(np.mean(far)) if far else no_path,  # M9
        )
    return out


# -- regression ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Regression:
    """OLS of one rate on the (standardised) metrics: the joint fit and one fit per metric.

    ``r2``/``r2_adj``: the joint fit (NaN when there are not more facts than parameters);
    ``coef``/``pvalue``: per metric in the joint fit (standardised units: the change of the
    rate per standard deviation of the metric); ``r2_single``: R^2 of the rate on each metric
    alone (the "which metric explains it best" table); ``used``: metrics that varied.
    """

    r2: float
    r2_adj: float
    coef: Mapping[str, float]
    pvalue: Mapping[str, float]
    r2_single: Mapping[str, float]
    used: tuple[str, ...]
    n: int

    @property
    def best(self) -> tuple[str, float] | None:
        """(metric, R^2) of the single metric that explains the rate best, or None."""
        best: tuple[str, float] | None = None
        for k, v in self.r2_single.items():  # in metric order: ties go to the lower Mi
            if math.isfinite(v) and (best is None or v > best[1]):
                best = (k, v)
        return best


def regress_rates(
    rates: np.ndarray, metrics: np.ndarray, *, names: Sequence[str] = METRIC_NAMES
) -> Regression:
    """Regress per-fact ``rates`` (n,) on ``metrics`` (n, m) with statsmodels OLS.

    Columns that do not vary are dropped (their coefficient is undefined); the others are
    z-scored so coefficients compare across metrics. A rate that does not vary gives R^2 = NaN
    (there is nothing to explain).
    """
    import statsmodels.api as sm

    y = np.asarray(rates, dtype=np.float64)
    x = np.asarray(metrics, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] != len(names):
        raise ValueError(
            f"regress_rates: rates {y.shape} and metrics {x.shape} must be (n,) and "
            f"(n, {len(names)}) with one name per column"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("regress_rates: rates and metrics must be finite")
    sd = x.std(0)
    keep = [j for j in range(x.shape[1]) if sd[j] > 1e-12 * max(1.0, abs(x[:, j]).max())]
    used = tuple(names[j] for j in keep)
    nan = float("nan")
    empty = dict.fromkeys(names, nan)
    if len(y) < 3 or y.std() == 0 or not keep:
        return Regression(nan, nan, empty, empty, empty, used, len(y))
    z = (x[:, keep] - x[:, keep].mean(0)) / sd[keep]
    single = dict(empty)
    for c, name in enumerate(used):
        fit = sm.OLS(y, sm.add_constant(z[:, [c]], has_constant="add")).fit()
        single[name] = float(fit.rsquared)
    coef, pval = dict(empty), dict(empty)
    r2 = r2_adj = nan
    if len(y) > len(keep) + 1:  # a joint fit needs more facts than parameters
        with warnings.catch_warnings():
            # Collinear metrics (degree and weighted degree on unweighted graphs) make the design
            # rank-deficient; OLS then uses the pseudo-inverse, which is what we want.
            warnings.simplefilter("ignore")
            fit = sm.OLS(y, sm.add_constant(z, has_constant="add")).fit()
        r2, r2_adj = float(fit.rsquared), float(fit.rsquared_adj)
        for c, name in enumerate(used):
            coef[name] = float(fit.params[c + 1])
            pval[name] = float(fit.pvalues[c + 1])
    else:
        log.info("regress_rates: %d facts for %d metrics: joint fit skipped", len(y), len(keep))
    return Regression(r2, r2_adj, coef, pval, single, used, len(y))
