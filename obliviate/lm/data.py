"""LM data: ``TokenData`` (what the LM Task batches) and the three sources of text and facts.

``TokenData`` keeps the *raw* texts (``prompts``: questions, "" for plain text; ``targets``:
answers or passages) beside their token ids, so audits can re-encode alternatives (paraphrased
and perturbed answers) with ``LMTask.encode`` and generate from the same questions.

Sources, all offline:
- :func:`make_world`: a TOFU-style world of fictitious people drawn with faker from a seed.
  It is a graph by construction: people, cities, countries, companies and jobs are nodes, and
  every question is one edge (or one node attribute), so the persuasion and entanglement audits
  can ask how connected a forgotten fact is. Each question has an answer, a paraphrased answer
  (a full sentence) and perturbed wrong answers of the same type (for the truth ratio).
- :func:`country_facts`: countryinfo's capitals and regions (real facts a pretrained LM knows).
- :func:`wiki_articles`: the 100 real Wikipedia articles with >= 2,000 characters in gensim's
  test sample (markup stripped with gensim's ``filter_wiki``), cached as JSON.
"""

from __future__ import annotations

import bz2
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obliviate.store import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "TokenData",
    "World",
    "country_facts",
    "make_world",
    "wiki_articles",
]


# -- TokenData ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenData:
    """Tokenised (prompt, target) examples; satisfies ``types.Data``.

    ``input_ids`` (N, T) right-padded; ``labels`` (N, T) equal to ``input_ids`` at target tokens
    and -100 elsewhere (BOS, prompt, padding); ``lengths`` (N,) real tokens per row; ``idx``
    (N,) each example's position in its source set, kept through ``subset``. ``prompts`` and
    ``targets`` are the raw texts (before the Task's prompt template), ``meta`` one mapping per
    example (person, relation, paraphrased/perturbed answers...).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    idx: torch.Tensor
    prompts: tuple[str, ...]
    targets: tuple[str, ...]
    meta: tuple[Mapping[str, Any], ...] = ()
    pad_id: int = 0

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        sizes = {len(self.labels), len(self.lengths), len(self.idx), len(self.prompts)}
        if sizes != {n} or len(self.targets) != n or (self.meta and len(self.meta) != n):
            raise ValueError("TokenData: every field must have one entry per example")
        if self.input_ids.shape != self.labels.shape:
            raise ValueError("TokenData: input_ids and labels must have the same (N, T) shape")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_tokens(self) -> torch.Tensor:
        """Target tokens per example, (N,)."""
        return (self.labels != -100).sum(1)

    def subset(self, idx: np.ndarray | Sequence[int]) -> TokenData:
        rows = np.asarray(idx, dtype=np.int64).reshape(-1)
        t = torch.as_tensor(rows)
        width = int(self.lengths[t].max()) if len(rows) else 1  # trim padding to the longest row
        return TokenData(
            self.input_ids[t, :width],
            self.labels[t, :width],
            self.lengths[t],
            self.idx[t],
            tuple(self.prompts[i] for i in rows),
            tuple(self.targets[i] for i in rows),
            tuple(self.meta[i] for i in rows) if self.meta else (),
            self.pad_id,
        )

    def where(self, **conditions: Any) -> np.ndarray:
        """Row positions whose ``meta`` matches every condition, e.g. ``where(kind="qa")``."""
        return np.array(
            [
                i
                for i, m in enumerate(self.meta)
                if all(m.get(k) == v for k, v in conditions.items())
            ],
            dtype=np.int64,
        )


# -- the world of fictitious people --------------------------------------------------------------
# relation -> (question, paraphrased answer); {s}: the person's name, {o}: the answer.
_TEMPLATES: dict[str, tuple[str, str]] = {
    "born_in": ("Where was {s} born?", "{s} was born in {o}."),
    "birth_year": ("In what year was {s} born?", "{s} was born in the year {o}."),
    "has_job": ("What is the profession of {s}?", "The profession of {s} is {o}."),
    "works_for": ("Which company does {s} work for?", "{s} is employed by {o}."),
    "sibling_of": ("Who is the sibling of {s}?", "The sibling of {s} is {o}."),
}


@dataclass(frozen=True)
class World:
    """A world of fictitious people: graph nodes and edges, questions, and biographies.

    ``nodes``: {"id", "type" (person/city/country/company/job), "name", ...attributes};
    ``edges``: (source id, target id, relation); ``qa``: one record per question with
    "person", "relation", "object" (the answer's node id, None for attributes), "question",
    "answer", "paraphrased_answer", "perturbed_answers"; ``bios``: {"person", "text"}.
    People flagged ``holdout`` are never trained on (the membership audits' non-members).
    """

    seed: int
    nodes: tuple[Mapping[str, Any], ...]
    edges: tuple[tuple[str, str, str], ...]
    qa: tuple[Mapping[str, Any], ...]
    bios: tuple[Mapping[str, Any], ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def people(self) -> list[Mapping[str, Any]]:
        return [n for n in self.nodes if n["type"] == "person"]

    def node(self, node_id: str) -> Mapping[str, Any]:
        for n in self.nodes:
            if n["id"] == node_id:
                return n
        raise KeyError(node_id)

    def graph(self) -> Any:
        """The world as a networkx MultiDiGraph (node attributes, edge attribute "relation")."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for n in self.nodes:
            g.add_node(n["id"], **{k: v for k, v in n.items() if k != "id"})
        for s, o, rel in self.edges:
            g.add_edge(s, o, key=rel, relation=rel)
        return g

    def to_json(self) -> str:
        return json.dumps(
            {
                "seed": self.seed,
                "nodes": list(self.nodes),
                "edges": [list(e) for e in self.edges],
                "qa": list(self.qa),
                "bios": list(self.bios),
                "meta": dict(self.meta),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> World:
        d = json.loads(text)
        return cls(
            d["seed"], tuple(d["nodes"]), tuple(tuple(e) for e in d["edges"]), tuple(d["qa"]),
            tuple(d["bios"]), d["meta"],
        )  # fmt: skip


def _unique(draw: Any, n: int, *, what: str) -> list[str]:
    out: list[str] = []
    for _ in range(n * 50):
        v = str(draw())
        if v not in out:
            out.append(v)
        if len(out) == n:
            return out
    raise ValueError(f"faker could not draw {n} distinct {what}; ask for a smaller world")


def _bio(name: str, facts: Mapping[str, str]) -> str:
    """A short biography worded unlike the paraphrased answers (those are held out for the
    truth ratio, so training must not see them verbatim)."""
    text = (
        f"{name} came into the world in {facts['birth_year']}, in the town of "
        f"{facts['born_in']}. By trade a {facts['has_job'].lower()}, {name} has a position at "
        f"{facts['works_for']}."
    )
    if "sibling_of" in facts:
        text += f" {facts['sibling_of']} and {name} are siblings."
    return text


def make_world(
    *, seed: int, n_people: int, n_holdout: int = 0, n_perturbed: int = 3, locale: str = "en_US"
) -> World:
    """A seeded world of ``n_people`` trained-on people and ``n_holdout`` held-out people.

    Cities, companies and jobs are shared between people (pools of about a quarter of the
    people), so the graph has hubs; siblings are paired within the trained and the held-out
    groups (never across them, so held-out names are never seen in training).
    """
    from faker import Faker

    if n_people < 2:
        raise ValueError(f"make_world: n_people={n_people}; a world needs at least 2 people")
    fake = Faker(locale)
    fake.seed_instance(seed)
    rng = np.random.default_rng(seed)
    total = n_people + n_holdout
    pool = max(n_perturbed + 1, total // 4)  # enough distinct wrong answers of every type
    names = _unique(fake.name, total, what="names")
    countries = _unique(fake.country, max(2, pool // 2), what="countries")
    cities = _unique(fake.city, pool, what="cities")
    companies = _unique(fake.company, pool, what="companies")
    jobs = _unique(fake.job, pool, what="jobs")

    nodes: list[dict[str, Any]] = []
    edges: list[tuple[str, str, str]] = []
    for i, c in enumerate(countries):
        nodes.append({"id": f"country:{i}", "type": "country", "name": c})
    for i, c in enumerate(cities):
        nodes.append({"id": f"city:{i}", "type": "city", "name": c})
        edges.append((f"city:{i}", f"country:{i % len(countries)}", "located_in"))
    for i, c in enumerate(companies):
        nodes.append({"id": f"company:{i}", "type": "company", "name": c})
        edges.append((f"company:{i}", f"city:{int(rng.integers(pool))}", "based_in"))
    for i, j in enumerate(jobs):
        nodes.append({"id": f"job:{i}", "type": "job", "name": j})

    people = []
    for i, name in enumerate(names):
        pid = f"person:{i}"
        year = int(rng.integers(1930, 2000))
        people.append(pid)
        nodes.append(
            {
                "id": pid,
                "type": "person",
                "name": name,
                "birth_year": year,
                "holdout": i >= n_people,
            }
        )
        edges.append((pid, f"city:{int(rng.integers(pool))}", "born_in"))
        edges.append((pid, f"job:{int(rng.integers(pool))}", "has_job"))
        edges.append((pid, f"company:{int(rng.integers(pool))}", "works_for"))
    # Siblings: pair a shuffled half of each group.
    for group in (people[:n_people], people[n_people:]):
        order = [group[k] for k in rng.permutation(len(group))]
        k = len(order) // 4 * 2  # half of the group, an even count
        for a, b in zip(order[0:k:2], order[1:k:2], strict=True):
            edges += [(a, b, "sibling_of"), (b, a, "sibling_of")]

    by_id = {n["id"]: n for n in nodes}
    qa: list[dict[str, Any]] = []
    bios: list[dict[str, Any]] = []
    for pid in people:
        me = by_id[pid]
        facts: list[tuple[str, str | None, str]] = [("birth_year", None, str(me["birth_year"]))]
        facts += [(rel, o, by_id[o]["name"]) for s, o, rel in edges if s == pid]
        facts.sort(key=lambda f: list(_TEMPLATES).index(f[0]))
        for rel, obj, answer in facts:
            if rel == "birth_year":
                wrong_pool = [str(y) for y in range(1930, 2000) if str(y) != answer]
            else:
                kind = by_id[obj]["type"]
                wrong_pool = [n["name"] for n in nodes if n["type"] == kind and n["id"] != obj]
                wrong_pool = [w for w in wrong_pool if w != me["name"]]
            k = min(n_perturbed, len(wrong_pool))
            wrong = [wrong_pool[j] for j in sorted(rng.choice(len(wrong_pool), k, replace=False))]
            q, para = _TEMPLATES[rel]
            qa.append(
                {
                    "person": pid,
                    "relation": rel,
                    "object": obj,
                    "question": q.format(s=me["name"]),
                    "answer": answer,
                    "paraphrased_answer": para.format(s=me["name"], o=answer),
                    "perturbed_answers": [para.format(s=me["name"], o=w) for w in wrong],
                    "perturbed_short": wrong,
                }
            )
        bios.append({"person": pid, "text": _bio(me["name"], {r: a for r, _, a in facts})})
    return World(
        seed, tuple(nodes), tuple(edges), tuple(qa), tuple(bios),
        {"n_people": n_people, "n_holdout": n_holdout, "generator": f"faker {locale}"},
    )  # fmt: skip


# -- countryinfo facts ---------------------------------------------------------------------------
def country_facts(*, relations: Sequence[str] = ("capital",)) -> list[dict[str, Any]]:
    """Real facts from countryinfo: {"country", "relation", "question", "answer", "aliases",
    "statement"} (the statement is the answer as a chat model words it: "The capital of France
    is Paris.").

    ``relations``: "capital" ("What is the capital of France?" -> "Paris") and "region"
    ("Which continent is France in?" -> "Europe"). Sorted by country name: deterministic.
    """
    import countryinfo

    questions = {
        "capital": "What is the capital of {c}?",
        "region": "On which continent is {c}?",
    }
    statements = {"capital": "The capital of {c} is {a}.", "region": "{c} is in {a}."}
    bad = set(relations) - set(questions)
    if bad:
        raise ValueError(f"unknown country relation(s) {sorted(bad)}; use {sorted(questions)}")
    out = []
    for c in sorted(countryinfo.all_countries(), key=lambda c: c.name()):
        name = c.name()
        for rel in relations:
            try:
                answer = c.capital() if rel == "capital" else c.region()
            except (KeyError, AttributeError):
                continue
            aliases = answer if isinstance(answer, list) else [answer]
            aliases = [str(a) for a in aliases if a]
            if not aliases or not name:
                continue
            out.append(
                {
                    "country": name,
                    "relation": rel,
                    "question": questions[rel].format(c=name),
                    "answer": aliases[0],  # countryinfo lists several for a few countries
                    "aliases": aliases,
                    "statement": statements[rel].format(c=name, a=aliases[0]),
                }
            )
    return out


# -- Wikipedia -----------------------------------------------------------------------------------
def _wiki_source() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Wikipedia sample ships with gensim: pip install 'obliviate[lm]'")
    root = Path(next(iter(spec.submodule_search_locations)))
    return (
        root
        / "test"
        / "test_data"
        / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )


def _clean(text: str) -> str:
    text = re.sub(r"'{2,}", "", text)  # bold/italic quotes left by filter_wiki
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip()


def wiki_articles(*, min_chars: int = 2000) -> list[tuple[str, str]]:
    """(title, text) of the real Wikipedia articles in gensim's sample, in file order, cached."""
    from obliviate.lm.tokenizer import lm_cache_dir

    path = lm_cache_dir() / "data" / f"enwiki-sample-min{min_chars}.json"
    if path.exists():
        return [tuple(a) for a in json.loads(path.read_text())]  # type: ignore[misc]
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    with bz2.open(_wiki_source()) as f:
        arts = [
            (t, _clean(filter_wiki(x))) for t, x, _ in extract_pages(f, filter_namespaces=("0",))
        ]
    arts = [
        (t, x) for t, x in arts if len(x) >= min_chars and not x.lower().startswith("#redirect")
    ]
    with atomic_write(path, "w") as f:
        json.dump(arts, f)
    return arts
