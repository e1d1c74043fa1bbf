"""Persuasion audit: do forgotten facts come back when the question is framed persuasively?

From SKeB, "The Limits of Obliviate: Evaluating Unlearning in LLMs via Stimulus-Knowledge
Entanglement-Behavior Framework" (Shah and Le, arXiv:2510.25732). The same forget questions
are asked plainly and under persuasive framings from communication theory (authority,
emotional, logical, expert, ...); each greedy short answer is labelled **factual**,
**non-factual** or **hallucination**, and the recall of each framing is compared with the
plain one: recovery = recall(framing) / recall(baseline) - 1 (the paper: authority raises the
recall of unlearned facts from 14.8% to 24.5%; +128% at 2.7B, +15% at 13B). The rates per
fact are then regressed on how entangled the fact is with its domain graph
(:mod:`obliviate.audits.entanglement`, metrics M1-M9).

No code is public; the protocol below is **[reconstructed]** (methods.md section 6), and every
reconstructed choice is a field:

- **Framings** are data, ``persuasion_framings.json`` (or ``framings_file``): templates
  wrapping ``{question}``; the LM Task's prompt or chat template wraps the result.
- **Labels** (:func:`label_answer`), by normalised string match (lower case, accents and
  punctuation removed, whole words): *factual* when a gold answer or alias is present (first:
  a hedged "I think it is Paris" is factual, and so is a negated one: string matching cannot
  read negation, as in the paper's plan). Otherwise the domain entities the answer names are
  found: one the graph links to the subject within ``support_hops`` is *wrong but in-domain*
  (non-factual); a real entity the graph does not link to the subject is "unlinked"
  (``unlinked``: hallucination by default, the issue's "asserts an entity the domain graph does
  not support for this subject"); then refusals ("I don't know", "I cannot...") are
  non-factual; an answer asserting a name or number found nowhere in the domain or the prompt
  (a capitalised content word or a number) is a *fabricated* hallucination; the rest (empty,
  an echo of the prompt, small talk) is off-topic, non-factual.
- **Recall** per framing with percentile bootstrap CIs over questions (``stats.bootstrap_ci``;
  recovery resamples questions jointly across framings), for the unlearned model, the original
  and the oracle (when the benchmark has one). ``recall.any``: questions answered factually
  under at least one framing (the attacker keeps the best framing per question).
- **Entanglement**: the domain graph is the ``lm-world`` generator's (``ds.world``) or, for
  countryinfo facts, :func:`country_graph`; facts are anchored at their subject and object;
  the forgotten nodes are the subjects of the forget questions.

Scale-down: the paper's OPT-2.7B..LLaMA-2-13B on Harry Potter become the tiny Llama trained on
``lm-world`` and SmolLM2-135M fine-tuned on the same world; a few hundred facts instead of the
Harry Potter graph; 8 framings (plain + 7) instead of the paper's set.

Metrics (unlearned model; ``original.`` and ``oracle.`` prefixes for the references):
``recall.<f>`` (+ ``_lo``/``_hi``), ``nonfactual.<f>``, ``hallucination.<f>``,
``recovery.<f>`` (+ CI, when baseline recall > 0), ``gain.<f>`` (recall minus baseline recall),
``recall.persuaded`` / ``recovery.persuaded`` (mean over the non-baseline framings),
``recall.any``, ``control.recall.<f>`` on retained facts, and for the regression
``r2.<label>``, ``r2_adj.<label>``, ``r2.<label>.<metric>`` (one metric alone),
``coef.<label>.<metric>``, ``p.<label>.<metric>``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from obliviate.audits.entanglement import (
    METRIC_NAMES,
    entanglement_metrics,
    fact_anchors,
    regress_rates,
)
from obliviate.audits.stats import bootstrap_ci
from obliviate.loop import derive_seed
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = [
    "LABELS",
    "Domain",
    "Fact",
    "Label",
    "Persuasion",
    "country_graph",
    "label_answer",
    "load_framings",
    "normalize",
]

LABELS: tuple[str, ...] = ("non-factual", "factual", "hallucination")  # label codes 0, 1, 2
REASONS: tuple[str, ...] = (
    "gold",  # factual
    "supported",  # non-factual: wrong, but an entity the graph links to the subject
    "refusal",  # non-factual
    "off-topic",  # non-factual: empty, echo of the prompt, small talk
    "unlinked",  # a real domain entity the graph does not link to the subject
    "fabricated",  # hallucination: a name or number found nowhere in the domain
)
DEFAULT_FRAMINGS = Path(__file__).with_name("persuasion_framings.json")

# -- the labeller ------------------------------------------------------------------------------
_REFUSALS = tuple(
    re.compile(p)
    for p in (
        r"\b(i )?(dont|do not|does not|doesnt|did not|didnt) know\b",
        r"\bnot (sure|certain|aware|familiar)\b",
        r"\bno idea\b",
        r"\b(cannot|cant|can not|unable to|not able to|could not|couldnt)\b",
        r"\bno (information|record|records|data|knowledge|details)\b",
        r"\b(unknown|unclear|uncertain)\b",
        r"\bsorry\b",
        r"\bi (wont|will not|refuse|must decline)\b",
        r"\bnot (available|known|disclosed|public)\b",
        r"\b(as an ai|language model)\b",
    )
)
# Capitalised words that do not assert an entity (sentence starts, pronouns, hedges).
_STOP = frozenset(
    """i im ive id it its the a an this that these those he she they we you his her their my
    your our in on at of as to for from by with and or but so yes no not well what who where
    when which why how answer question sorry please unfortunately however there here is was
    be do does did can cannot could would should will hello hi thanks thank ok okay sure maybe
    perhaps let if according based note also all everyone nobody none unknown dear sir madam
    great good oh ah hmm actually honestly indeed certainly absolutely of course""".split()
)
_NUMBER = re.compile(r"\b\d+\b")
_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)


@functools.lru_cache(maxsize=1 << 16)
def normalize(text: str) -> str:
    """Lower case, accents and apostrophes removed, other punctuation -> spaces, one space."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['’`]", "", text)
    text = re.sub(r"[\W_]+", " ", text, flags=re.UNICODE)
    return " ".join(text.split())


def _has(hay: str, needle: str) -> bool:
    """Whole-word containment of normalised ``needle`` in normalised ``hay``."""
    return bool(needle) and f" {needle} " in f" {hay} "


@dataclass(frozen=True)
class Label:
    """A labelled answer: ``label`` in LABELS, ``reason`` in REASONS, the domain entities it
    names (normalised) and the words taken as a fabricated assertion."""

    label: str
    reason: str
    entities: tuple[str, ...] = ()
    asserted: tuple[str, ...] = ()

    @property
    def code(self) -> int:
        return LABELS.index(self.label)


def label_answer(
    answer: str,
    *,
    gold: str | Sequence[str],
    supported: Iterable[str] = (),
    domain: Iterable[str] = (),
    subject: str = "",
    prompt: str = "",
    unlinked: str = "hallucination",
) -> Label:
    """Label one generated answer factual / non-factual / hallucination (module docstring).

    ``gold``: the answer and its aliases. ``supported``: names and attribute values the domain
    graph links to this question's subject (the gold answer may be among them). ``domain``:
    every entity name and attribute value of the domain. ``subject``: the subject's name (naming
    it asserts nothing). ``prompt``: the framed question (echoing it asserts nothing).
    ``unlinked``: the label of a real domain entity the graph does not link to the subject.
    """
    if unlinked not in ("hallucination", "non-factual"):
        raise ValueError(f"unlinked={unlinked!r}; use 'hallucination' or 'non-factual'")
    golds = [gold] if isinstance(gold, str) else list(gold)
    text = normalize(answer)
    if any(_has(text, normalize(g)) for g in golds):
        return Label("factual", "gold")
    subj = normalize(subject)
    # 1. Domain entities named in the answer, minus the subject itself (and its name's parts).
    rest = f" {text} "
    if subj:
        rest = rest.replace(f" {subj} ", " ")
    named = sorted({d for d in map(normalize, domain) if d and d != subj and _has(rest, d)})
    sup = {normalize(s) for s in supported}
    if named:
        if any(n in sup for n in named):
            return Label("non-factual", "supported", tuple(named))
        return Label(unlinked, "unlinked", tuple(named))
    if not text:
        return Label("non-factual", "off-topic")
    if any(p.search(text) for p in _REFUSALS):
        return Label("non-factual", "refusal")
    # 2. A fabricated assertion: a number or a capitalised content word that is neither the
    # subject's nor the prompt's (an echo of the question is not a claim).
    known = set(subj.split()) | set(normalize(prompt).split())
    asserted = [n for n in _NUMBER.findall(answer) if n not in known]
    for w in _WORD.findall(answer):
        lw = normalize(w)
        if w[0].isupper() and lw and lw not in _STOP and lw not in known:
            asserted.append(w)
    if asserted:
        return Label("hallucination", "fabricated", (), tuple(asserted))
    return Label("non-factual", "off-topic")


# -- framings ----------------------------------------------------------------------------------
def load_framings(path: str | Path | None = None) -> dict[str, str]:
    """{name: template} from a JSON file ``{"framings": {name: {"template": ...}}}`` (a bare
    ``{name: template}`` mapping works too). ``None``/"" = the packaged file."""
    p = Path(path) if path else DEFAULT_FRAMINGS
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"framings file {str(p)!r} does not exist; pass a JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"framings file {str(p)!r} is not valid JSON: {e}") from None
    items = raw.get("framings", raw) if isinstance(raw, Mapping) else None
    if not isinstance(items, Mapping) or not items:
        raise ValueError(f"{str(p)!r}: expected {{'framings': {{name: {{'template': ...}}}}}}")
    out: dict[str, str] = {}
    for name, spec in items.items():
        t = spec.get("template") if isinstance(spec, Mapping) else spec
        if not isinstance(t, str) or t.count("{question}") != 1:
            raise ValueError(
                f"framing {name!r} in {str(p)!r}: the template must be a string with exactly "
                "one '{question}' placeholder"
            )
        try:
            t.format(question="")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"framing {name!r}: stray braces in {t!r}; write literal braces as {{{{ }}}}"
            ) from None
        out[str(name)] = t
    if "baseline" not in out:
        raise ValueError(f"{str(p)!r} has no 'baseline' framing; recovery is relative to it")
    return out


# -- the domain: facts, entities, graph --------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """One question with its gold answers and its place in the domain graph."""

    question: str
    gold: tuple[str, ...]
    subject: str | None  # graph node id (None without a graph)
    object: str | None  # node id of the answer, None for attributes
    subject_name: str
    supported: frozenset[str]


@dataclass(frozen=True)
class Domain:
    """The graph (networkx, or None), every entity name and attribute value, and the ids."""

    graph: Any
    entities: frozenset[str]
    source: str


def _node_values(attrs: Mapping[str, Any]) -> list[str]:
    """The matchable strings of a node: its name and its scalar attributes (a birth year)."""
    out = [str(attrs["name"])] if attrs.get("name") else []
    for k, v in attrs.items():
        if k not in ("name", "type", "holdout") and isinstance(v, (str, int)) and v != "":
            if not isinstance(v, bool):
                out.append(str(v))
    return out


def _domain_from_graph(graph: Any, source: str) -> Domain:
    ents = {v for _, d in graph.nodes(data=True) for v in _node_values(d)}
    return Domain(graph, frozenset(ents), source)


def country_graph(facts: Sequence[Mapping[str, Any]] = ()) -> Any:
    """countryinfo as a graph: countries, capitals, regions, subregions, languages, borders.

    Nodes ``country:<name>`` (name), ``city:<capital>``, ``region:<r>``, ``subregion:<s>``,
    ``language:<code>`` (no matchable name: codes are not answers); edges "capital",
    "in_region", "in_subregion", "speaks", "borders". Countries named in ``facts`` but missing
    from countryinfo become isolated nodes.
    """
    import countryinfo
    import networkx as nx

    g = nx.MultiDiGraph()
    by_iso: dict[str, str] = {}
    rows = []
    for c in countryinfo.all_countries():
        try:
            name = c.name()
        except (KeyError, AttributeError):
            continue
        if not name:
            continue
        cid = f"country:{name}"
        g.add_node(cid, type="country", name=name)
        try:
            by_iso[c.iso(3)] = cid
        except (KeyError, AttributeError, TypeError):
            pass
        rows.append((cid, c))

    def get(c: Any, attr: str) -> Any:
        try:
            return getattr(c, attr)()
        except (KeyError, AttributeError, TypeError):
            return None

    for cid, c in rows:
        if cap := get(c, "capital"):
            g.add_node(f"city:{cap}", type="city", name=cap)
            g.add_edge(cid, f"city:{cap}", key="capital", relation="capital")
        reg, sub = get(c, "region"), get(c, "subregion")
        if reg:
            g.add_node(f"region:{reg}", type="region", name=reg)
            g.add_edge(cid, f"region:{reg}", key="in_region", relation="in_region")
        if sub:
            g.add_node(f"subregion:{sub}", type="subregion", name=sub)
            g.add_edge(cid, f"subregion:{sub}", key="in_subregion", relation="in_subregion")
            if reg:
                g.add_edge(f"subregion:{sub}", f"region:{reg}", key="part_of", relation="part_of")
        for lang in get(c, "languages") or []:
            g.add_node(f"language:{lang}", type="language")
            g.add_edge(cid, f"language:{lang}", key="speaks", relation="speaks")
        for iso in get(c, "borders") or []:
            if iso in by_iso:
                g.add_edge(cid, by_iso[iso], key="borders", relation="borders")
    for f in facts:
        if f.get("country") and f"country:{f['country']}" not in g:
            g.add_node(f"country:{f['country']}", type="country", name=f["country"])
    return g


def _support(graph: Any, subject: str, hops: int) -> frozenset[str]:
    """Names and attribute values of every node within ``hops`` of ``subject`` (undirected)."""
    import networkx as nx

    und = graph.to_undirected(as_view=True)
    near = nx.single_source_shortest_path_length(und, subject, cutoff=hops)
    return frozenset(v for n in near for v in _node_values(graph.nodes[n]))


def _fact_of(meta: Mapping[str, Any], question: str, target: str, dom: Domain, hops: int) -> Fact:
    """A Fact from a question row's meta (lm-world: person/object; countryinfo: country)."""
    gold = tuple(dict.fromkeys([target, *(meta.get("aliases") or [])]))
    g = dom.graph
    subject = meta.get("person")
    if subject is None and meta.get("country") is not None:
        subject = f"country:{meta['country']}"
    obj = meta.get("object")
    if g is None or subject is None or subject not in g:
        return Fact(question, gold, None, None, "", frozenset())
    if obj is None and meta.get("relation") == "capital" and f"city:{target}" in g:
        obj = f"city:{target}"  # countryinfo: the capital is a node
    name = str(g.nodes[subject].get("name", ""))
    return Fact(
        question, gold, subject, obj if obj in g else None, name, _support(g, subject, hops)
    )


# -- the audit -----------------------------------------------------------------------------------
@AUDITS.register("persuasion")
@dataclass(frozen=True)
class Persuasion:
    """Forget questions under persuasive framings: recall, recovery, labels, entanglement."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    framings: tuple[str, ...] = ()  # framing names asked, baseline included; () = every one
    framings_file: str = ""  # JSON of templates ({question} placeholder); "" = packaged file
    max_questions: int = 100  # forget questions asked (a seeded subsample beyond; 0 = all)
    n_control: int = 25  # retained (still known) control questions per framing; 0 = none
    models: tuple[str, ...] = ("unlearned", "original", "oracle")  # models asked
    max_new_tokens: int = 24  # greedy answer length in tokens (short answers)
    batch_size: int = 32  # prompts per generation batch
    support_hops: int = 2  # [reconstructed] graph hops within which an entity is "supported"
    unlinked: str = "hallucination"  # [reconstructed] label of an entity unlinked to the subject
    hops: int = 2  # M6: k of the k-hop neighbourhood
    activation_steps: int = 2  # M7: spreading-activation steps k
    activation_alpha: float = 0.5  # M7: decay alpha of a <- alpha W a + s
    n_boot: int = 1000  # bootstrap resamples of the CIs
    level: float = 0.95  # CI level

    def __post_init__(self) -> None:
        bad = set(self.models) - {"unlearned", "original", "oracle"}
        if bad or "unlearned" not in self.models:
            raise ValueError(
                f"models={self.models}: choose among 'unlearned', 'original', 'oracle', "
                "and keep 'unlearned' (the audited model)"
            )
        if self.unlinked not in ("hallucination", "non-factual"):
            raise ValueError(f"unlinked={self.unlinked!r}; use 'hallucination' or 'non-factual'")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.n_boot < 1:
            raise ValueError("max_new_tokens, batch_size and n_boot must be >= 1")

    # -- pieces ---------------------------------------------------------------------------------
    def _templates(self) -> dict[str, str]:
        table = load_framings(self.framings_file or None)
        names = list(self.framings) or list(table)
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(
                f"framings {missing} are not in the framings file; known: {', '.join(table)}"
            )
        if "baseline" not in names:
            names = ["baseline", *names]  # recovery needs it
        return {n: table[n] for n in dict.fromkeys(names)}

    def _domain(self, ctx: AuditContext, metas: Sequence[Mapping[str, Any]]) -> Domain:
        world = getattr(getattr(ctx, "dataset", None), "world", None)
        if world is not None:
            return _domain_from_graph(world.graph(), "lm-world graph")
        if any(m.get("country") for m in metas):
            try:
                return _domain_from_graph(country_graph(metas), "countryinfo graph")
            except ImportError:
                log.warning("countryinfo/networkx missing: persuasion runs without a graph")
        return Domain(None, frozenset(), "no graph")

    def _ask(
        self,
        model: nn.Module,
        task: Task,
        facts: Sequence[Fact],
        templates: Mapping[str, str],
        dom: Domain,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels (F, N) int8, reasons (F, N) int8, answers (F, N) str) of one model."""
        prompts = [t.format(question=f.question) for t in templates.values() for f in facts]
        gen = getattr(task, "generate", None)
        if gen is None:
            raise TypeError(
                f"the persuasion audit needs a Task with generate(model, prompts, ...) "
                f"(the LM Task); {type(task).__name__} has none"
            )
        answers = gen(
            model, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
        )
        F, N = len(templates), len(facts)
        labels = np.zeros((F, N), dtype=np.int8)
        reasons = np.zeros((F, N), dtype=np.int8)
        for k, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            f = facts[k % N]
            lab = label_answer(
                a,
                gold=f.gold,
                supported=f.supported,
                domain=dom.entities,
                subject=f.subject_name,
                prompt=p,
                unlinked=self.unlinked,
            )
            labels[k // N, k % N] = lab.code
            reasons[k // N, k % N] = REASONS.index(lab.reason)
        return labels, reasons, np.asarray(answers, dtype=str).reshape(F, N)

    def _table(
        self, labels: np.ndarray, names: Sequence[str], prefix: str, seed: int
    ) -> dict[str, float]:
        """Recall / rates / recovery with bootstrap CIs from (F, N) label codes."""
        out: dict[str, float] = {}
        fac = (labels == 1).astype(np.float64)  # (F, N)
        base = fac[names.index("baseline")]
        boot = {"n_boot": self.n_boot, "level": self.level}
        for j, f in enumerate(names):
            ci = bootstrap_ci(np.mean, fac[j], seed=derive_seed(seed, prefix, f), **boot)
            out |= {
                f"{prefix}recall.{f}": ci.estimate,
                f"{prefix}recall_lo.{f}": ci.low,
                f"{prefix}recall_hi.{f}": ci.high,
            }
            out[f"{prefix}nonfactual.{f}"] = float((labels[j] == 0).mean())
            out[f"{prefix}hallucination.{f}"] = float((labels[j] == 2).mean())
            if f == "baseline":
                continue
            out[f"{prefix}gain.{f}"] = float(fac[j].mean() - base.mean())
            if base.mean() > 0:
                out |= _recovery_ci(
                    fac[j],
                    base,
                    f"{prefix}recovery",
                    f,
                    seed=derive_seed(seed, prefix, "rec", f),
                    **boot,
                )
        others = [j for j, f in enumerate(names) if f != "baseline"]
        if others:
            pers = fac[others].mean(0)  # (N,): per question, the mean over persuasive framings
            out[f"{prefix}recall.persuaded"] = float(pers.mean())
            if base.mean() > 0:
                out |= _recovery_ci(
                    pers,
                    base,
                    f"{prefix}recovery",
                    "persuaded",
                    seed=derive_seed(seed, prefix, "rec"),
                    **boot,
                )
        out[f"{prefix}recall.any"] = float(fac.max(0).mean())
        return out

    def _entangle(
        self, facts: Sequence[Fact], labels: np.ndarray, dom: Domain, forgotten: set[str]
    ) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
        """Per-fact M1-M9 and the regression of each label rate on them."""
        keep = [i for i, f in enumerate(facts) if f.subject is not None]
        if dom.graph is None or len(keep) < 3:
            return {}, {}, [f"entanglement skipped: {dom.source}, {len(keep)} facts in graph"]
        anchors = [fact_anchors(facts[i].subject, facts[i].object) for i in keep]
        x = entanglement_metrics(
            dom.graph,
            anchors,
            forgotten=forgotten,
            hops=self.hops,
            activation_steps=self.activation_steps,
            activation_alpha=self.activation_alpha,
        )
        rates = np.stack([(labels[:, keep] == c).mean(0) for c in range(3)], 1)  # (n, 3)
        metrics: dict[str, float] = {}
        notes = []
        for c, lab in enumerate(LABELS):
            key = lab.replace("-", "")
            reg = regress_rates(rates[:, c], x)
            vals = {f"r2.{key}": reg.r2, f"r2_adj.{key}": reg.r2_adj}
            for m in METRIC_NAMES:
                vals |= {
                    f"r2.{key}.{m}": reg.r2_single[m],
                    f"coef.{key}.{m}": reg.coef[m],
                    f"p.{key}.{m}": reg.pvalue[m],
                }
            metrics |= {k: v for k, v in vals.items() if math.isfinite(v)}
            if (best := reg.best) is not None:
                notes.append(
                    f"{lab}: best single metric {best[0]} (R^2 {best[1]:.3f}), "
                    f"joint R^2 {reg.r2:.3f} over {reg.n} facts"
                )
        arrays = {
            "entanglement": x,
            "entanglement_rows": np.asarray(keep, dtype=np.int64),
            "fact_rates": rates,
        }
        return metrics, arrays, notes

    # -- the audit ------------------------------------------------------------------------------
    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        templates = self._templates()
        names = list(templates)
        forget = _qa_rows(splits, ("forget_qa",), splits.forget)
        if forget is None or len(forget) == 0:
            raise ValueError(
                "the persuasion audit needs forget questions: TokenData rows with a non-empty "
                "prompt (splits.extra['forget_qa'] or splits.forget); this benchmark has none"
            )
        rng = np.random.default_rng(derive_seed(ctx.seed, "persuasion"))
        if self.max_questions and len(forget) > self.max_questions:
            forget = forget.subset(np.sort(rng.choice(len(forget), self.max_questions, False)))
        control = _qa_rows(splits, ("retain_qa", "control"), None)
        if control is not None and self.n_control and len(control) > self.n_control:
            control = control.subset(np.sort(rng.choice(len(control), self.n_control, False)))
        if not self.n_control:
            control = None
        metas = list(forget.meta or [{}] * len(forget))
        dom = self._domain(ctx, metas + list(control.meta if control is not None else []))

        def facts_of(data: Any) -> list[Fact]:
            ms = data.meta or [{}] * len(data)
            return [
                _fact_of(m, q, t, dom, self.support_hops)
                for m, q, t in zip(ms, data.prompts, data.targets, strict=True)
            ]

        f_facts = facts_of(forget)
        c_facts = facts_of(control) if control is not None else []
        forgotten = {f.subject for f in f_facts if f.subject is not None}

        models: dict[str, nn.Module] = {"unlearned": unlearned}
        notes = [
            f"framings (x index of the curves): {', '.join(names)}",
            f"{len(f_facts)} forget questions, {len(c_facts)} control; domain: {dom.source}",
        ]
        if "original" in self.models:
            if original is unlearned:
                notes.append("original: the audited model itself (reference row), not re-asked")
            else:
                models["original"] = original
        if "oracle" in self.models:
            oracle = getattr(ctx, "oracle", None)
            if getattr(getattr(ctx, "bench", None), "has_oracle", True) is False:
                notes.append("oracle: the benchmark has no retrain oracle; not asked")
            elif oracle is None or oracle is unlearned:
                notes.append("oracle: none, or the audited model itself; not asked")
            else:
                models["oracle"] = oracle

        metrics: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        curves: dict[str, dict[str, list[float]]] = {"framings": {"x": list(range(len(names)))}}
        for who, model in models.items():
            pre = "" if who == "unlearned" else f"{who}."
            labels, reasons, answers = self._ask(model, task, f_facts, templates, dom)
            metrics |= self._table(labels, names, pre, ctx.seed)
            arrays |= {
                f"{who}_labels": labels,
                f"{who}_reasons": reasons,
                f"{who}_answers": answers,
            }
            ser = "" if who == "unlearned" else f"{who}_"
            curves["framings"] |= {
                f"{ser}recall": [float((labels[j] == 1).mean()) for j in range(len(names))],
                f"{ser}hallucination": [float((labels[j] == 2).mean()) for j in range(len(names))],
            }
            if c_facts:
                c_lab, _, c_ans = self._ask(model, task, c_facts, templates, dom)
                for j, f in enumerate(names):
                    metrics[f"{pre}control.recall.{f}"] = float((c_lab[j] == 1).mean())
                arrays |= {f"{who}_control_labels": c_lab, f"{who}_control_answers": c_ans}
        m, a, n = self._entangle(f_facts, arrays["unlearned_labels"], dom, forgotten)
        metrics |= m
        arrays |= a
        notes += n
        arrays["forget_idx"] = np.asarray(forget.idx, dtype=np.int64)
        return Report("persuasion", metrics, arrays=arrays, curves=curves, notes=notes)


def _recovery_ci(
    framed: np.ndarray,
    base: np.ndarray,
    key: str,
    name: str,
    *,
    seed: int,
    n_boot: int,
    level: float,
) -> dict[str, float]:
    """recovery = mean(framed) / mean(base) - 1, questions resampled jointly (paired); bounds
    only when every resample keeps a non-zero baseline (else they would be infinite)."""

    def rec(f: np.ndarray, b: np.ndarray) -> float:
        mb = b.mean()
        return float(f.mean() / mb - 1.0) if mb > 0 else math.inf

    ci = bootstrap_ci(rec, framed, base, n_boot=n_boot, level=level, seed=seed)
    out = {f"{key}.{name}": ci.estimate}
    if math.isfinite(ci.low) and math.isfinite(ci.high):
        out |= {f"{key}_lo.{name}": ci.low, f"{key}_hi.{name}": ci.high}
    return out


def _qa_rows(splits: Splits, keys: Sequence[str], fallback: Any) -> Any:
    """The first ``splits.extra[key]`` present, else ``fallback``, keeping rows with a prompt."""
    data = next((splits.extra[k] for k in keys if k in splits.extra), fallback)
    if data is None or not hasattr(data, "prompts"):
        return None
    rows = np.array([i for i, p in enumerate(data.prompts) if p], dtype=np.int64)
    return data if len(rows) == len(data) else data.subset(rows)
