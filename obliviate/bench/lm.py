"""Language-model benchmarks: lm-world (fictitious people), lm-capitals (real facts), lm-wiki.

This module is imported by ``obliviate list``; it imports ``obliviate.lm`` (transformers,
tokenizers, faker...) only inside functions, so the core never pays for them.

- ``lm-world``: a TOFU-style world of fictitious people drawn with faker from ``world_seed``
  (``obliviate.lm.data.make_world``). The original is the base model fine-tuned on every
  trained-on person's QA pairs (and biographies, ``bios=True``); the retrain oracle is the same
  fine-tune without the forget people. Deletion requests forget whole people: ``random:10%``
  (also ``random:0.05``, or ``random:3`` for a count of people). ``splits.test`` holds the QA
  pairs of held-out people never trained on (non-members for membership attacks);
  ``splits.extra``: ``forget_qa``/``retain_qa`` (QA rows only, no biographies), ``holdout_qa``;
  the world graph is ``ds.world`` (``ds.world.graph()`` for networkx). ``base="tiny-llama"``
  (default; trained from scratch on the world) or ``"smollm2"`` or a Hugging Face name/path.
- ``lm-capitals``: countryinfo capitals that SmolLM2-135M-Instruct answers right (asked once,
  greedy, cached): forget ``random:20`` of them. Targets are statements ("The capital of France
  is Paris."), the short answer is ``meta["answer"]`` (aliases in ``meta["aliases"]``).
  **There is no retrain oracle**: the facts come from pretraining, which cannot be redone here
  (``has_oracle = False``). The original is the unchanged pretrained model; the "oracle" row
  the runner computes is that same model and must not be read as an oracle. Compare with the
  control facts (``splits.test``, also ``splits.extra["control"]``): known facts the method
  never sees. ``splits.retain`` is the other half of the known facts not forgotten
  (``retain_fraction``); ``splits.extra["unknown"]``: the facts the model got wrong.
- ``lm-wiki``: a tiny Llama trained from scratch on real Wikipedia articles (gensim's sample),
  cut into passages of about ``chunk_words`` words; forget whole articles (``articles:1`` draws
  one at random, ``article:Anarchism`` names one; MUSE-style). The oracle is trained without
  them. ``splits.test`` holds passages of held-out articles never trained on.

Tiny versions (``lm-world-tiny``, ``lm-wiki-tiny``) train their original and oracle in seconds:
the test fixtures. Scale-down against TOFU (200 authors x 20 QA, Llama-2-7B fine-tuned 5 epochs
at lr 1e-5): ``lm-world`` has 200 people x 5 QA + a biography each; with the tiny Llama from
scratch the fine-tune needs a larger lr (3e-3) and more epochs (30) to memorise the facts.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from obliviate.loop import TrainRecipe
from obliviate.registry import BENCHMARKS
from obliviate.types import Budget, Splits

log = logging.getLogger(__name__)

__all__ = ["CapitalsBenchmark", "LMDataset", "WikiBenchmark", "WorldBenchmark", "parse_count"]

_TINY_RECIPE = TrainRecipe(
    optimizer="adamw", lr=3e-3, weight_decay=0.0, epochs=30, batch_size=16, schedule="cosine"
)
# Measured on 20 people of the world (2026-12-07): lr 1e-4 x 5 epochs leaves SmolLM2-135M
# answering 0.11 of their questions (final loss 1.38); 5e-4 x 8 epochs (final loss 0.13)
# memorises them (0.98 plain and under the persuasion framings; 208 s for 110 rows, 2 cores).
_SMOL_RECIPE = TrainRecipe(
    optimizer="adamw", lr=5e-4, weight_decay=0.01, epochs=8, batch_size=16, schedule="cosine"
)


@dataclass(frozen=True, eq=False)
class LMDataset:
    """What ``load`` returns: the training rows, the held-out rows, the tokenizer, the source."""

    name: str
    train: Any  # TokenData: every row the original is trained on
    test: Any  # TokenData: held-out rows (non-members)
    tokenizer: Any
    source: str
    world: Any = None  # lm-world: the World (graph, QA records)
    info: Any = None  # free-form: facts asked, articles, ...


def parse_count(rule: str, total: int, *, unit: str) -> tuple[int, str]:
    """("random:10%" | "random:0.1" | "random:3", total) -> (count, canonical rule).

    Raises a ValueError for an empty or whole selection.
    """
    m = re.fullmatch(r"random:\s*([0-9.]+)\s*(%?)", rule.strip())
    if not m:
        raise ValueError(
            f"unknown forget rule {rule!r}; use random:10% (a fraction of the {unit}), "
            f"random:0.1, or random:3 (a count of {unit})"
        )
    value, pct = float(m.group(1)), m.group(2)
    if pct or (value < 1 and "." in m.group(1)):
        frac = value / 100 if pct else value
        count = int(round(frac * total))
        canonical = f"random:{frac * 100:g}%"
    else:
        count, canonical = int(value), f"random:{int(value)}"
    if count <= 0:
        raise ValueError(
            f"forget rule {rule!r} selects no {unit} out of {total}: the forget set would be "
            f"empty. Ask for a larger fraction or a count (random:1)."
        )
    if count >= total:
        raise ValueError(
            f"forget rule {rule!r} selects all {total} {unit}: nothing would be retained. Ask "
            f"for fewer."
        )
    return count, canonical


def _fingerprint(ds: LMDataset) -> str:
    """A hash of the tokenised training rows. The world (faker), the BPE (tokenizers) and the
    known-fact filter (the model's answers) may change with package versions while every
    benchmark field stays the same; the cache key must change with them."""
    import hashlib

    h = hashlib.sha256()
    for t in (ds.train.input_ids, ds.train.labels, ds.test.input_ids):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _bench_task(tokenizer: Any, chat: bool) -> Any:
    from obliviate.lm.task import LMTask

    return LMTask(tokenizer, chat=chat)


def _tokenizer(base: str, vocab_size: int) -> Any:
    if base == "tiny-llama":
        from obliviate.lm.tokenizer import train_bpe

        return train_bpe(vocab_size=vocab_size)
    return _pretrained(base)[1]


@functools.lru_cache(maxsize=2)
def _pretrained(base: str) -> tuple[nn.Module, Any]:
    """One load per process of a pretrained base; callers deep-copy the model."""
    from obliviate.lm.models import load_pretrained

    return load_pretrained(base)


def _make_lm(base: str, tokenizer: Any, arch: dict[str, int]) -> nn.Module:
    import copy

    if base == "tiny-llama":
        from obliviate.lm.models import tiny_llama

        return tiny_llama(vocab_size=len(tokenizer), **arch)
    return copy.deepcopy(_pretrained(base)[0])


def _train(model: nn.Module, data: Any, *, task: Any, recipe: TrainRecipe, seed: int,
           progress: bool | str) -> dict[str, float]:  # fmt: skip
    from obliviate.lm.task import train_lm

    return train_lm(model, data, task=task, recipe=recipe, seed=seed, progress=progress)


# -- lm-world ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldBenchmark:
    """A TOFU-style world of fictitious people; forget whole people."""

    name: str  # registry key
    n_people: int = 200  # people trained into the original
    n_holdout: int = 20  # people never trained on (membership non-members)
    world_seed: int = 0  # seeds faker: the world is a function of it
    bios: bool = True  # also train on one short biography per person
    base: str = "tiny-llama"  # "tiny-llama", "smollm2", or a Hugging Face name/path
    chat: bool = False  # wrap questions in the tokenizer's chat template (instruct bases)
    vocab_size: int = 2048  # BPE size of the tiny Llama's tokenizer
    n_layers: int = 4  # tiny Llama depth
    d_model: int = 128  # tiny Llama width
    recipe: TrainRecipe = _TINY_RECIPE  # the fine-tune that makes the original and the oracle
    forget: str = "random:10%"  # default deletion request (a fraction of the people)
    # audits run by default; the attacks (relearn, persuasion, trigger-scan) on request
    audits: tuple[str, ...] = (
        "lm-qa", "forget-quality", "muse", "mia-loss", "mia-zlib", "mia-min-k",
        "mia-min-k-plus-plus",
    )  # fmt: skip
    max_steps: int | None = None  # unlearning budget in optimizer steps (None: method's plan)
    description: str = ""  # one line for `obliviate list`
    kind: str = "lm"  # the Task kind
    has_oracle: bool = True  # the retrain oracle is the fine-tune without the forget people

    def _arch(self) -> dict[str, int]:
        return {"n_layers": self.n_layers, "d_model": self.d_model, "n_heads": 4}

    def load(self, data_dir: str | None = None) -> LMDataset:
        return _load_world(self)

    def task(self, ds: LMDataset) -> Any:
        return _bench_task(ds.tokenizer, self.chat)

    def make_model(self, ds: LMDataset) -> nn.Module:
        return _make_lm(self.base, ds.tokenizer, self._arch())

    def _people(self, ds: LMDataset) -> list[str]:
        return [p["id"] for p in ds.world.people if not p["holdout"]]

    def resolve_forget(self, ds: LMDataset, forget: str | None) -> str:
        return parse_count(forget or self.forget, len(self._people(ds)), unit="people")[1]

    def splits(self, ds: LMDataset, forget: str, seed: int) -> Splits:
        people = self._people(ds)
        count, canonical = parse_count(forget, len(people), unit="people")
        rng = np.random.default_rng(seed)
        chosen = sorted(people[i] for i in rng.choice(len(people), count, replace=False))
        person = np.array([m["person"] for m in ds.train.meta])
        is_f = np.isin(person, chosen)
        forget_idx, retain_idx = np.flatnonzero(is_f), np.flatnonzero(~is_f)
        qa = np.array([m["kind"] == "qa" for m in ds.train.meta])
        names = {p["id"]: p["name"] for p in ds.world.people}
        return Splits(
            forget=ds.train.subset(forget_idx),
            retain=ds.train.subset(retain_idx),
            test=ds.test,
            forget_idx=forget_idx,
            retain_idx=retain_idx,
            extra={
                "forget_qa": ds.train.subset(np.flatnonzero(is_f & qa)),
                "retain_qa": ds.train.subset(np.flatnonzero(~is_f & qa)),
                "holdout_qa": ds.test,
            },
            info={
                "kind": "random",
                "rule": canonical,
                "unit": "people",
                "people": chosen,
                "names": [names[p] for p in chosen],
                "n_people": len(people),
            },
        )

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        return {
            "family": "lm-world",
            "world": [self.n_people, self.n_holdout, self.world_seed, self.bios],
            "base": self.base,
            "arch": self._arch() if self.base == "tiny-llama" else None,
            "vocab_size": self.vocab_size if self.base == "tiny-llama" else None,
            "chat": self.chat,
            "recipe": asdict(self.recipe),
            "data": _fingerprint(self.load()),
        }

    def all_train_indices(self, ds: LMDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: LMDataset, idx: np.ndarray) -> Any:
        return ds.train.subset(idx)

    def train(
        self, model: nn.Module, data: Any, *, task: Any, seed: int, progress: bool | str
    ) -> dict[str, float]:
        return _train(model, data, task=task, recipe=self.recipe, seed=seed, progress=progress)


@functools.lru_cache(maxsize=4)
def _load_world(bench: WorldBenchmark) -> LMDataset:
    from obliviate.lm.data import make_world

    world = make_world(seed=bench.world_seed, n_people=bench.n_people, n_holdout=bench.n_holdout)
    tok = _tokenizer(bench.base, bench.vocab_size)
    task = _bench_task(tok, bench.chat)
    holdout = {p["id"] for p in world.people if p["holdout"]}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    test_rows: list[tuple[str, str, dict[str, Any]]] = []
    bios = {b["person"]: b["text"] for b in world.bios}
    people_order = [p["id"] for p in world.people]
    for pid in people_order:
        items = [
            (q["question"], q["answer"], {"kind": "qa", **q})
            for q in world.qa
            if q["person"] == pid
        ]
        if bench.bios:
            items.append(("", bios[pid], {"kind": "bio", "person": pid}))
        (test_rows if pid in holdout else rows).extend(
            it for it in items if pid not in holdout or it[2]["kind"] == "qa"
        )
    train = task.encode([r[0] for r in rows], [r[1] for r in rows], meta=[r[2] for r in rows])
    test = task.encode(
        [r[0] for r in test_rows], [r[1] for r in test_rows], meta=[r[2] for r in test_rows]
    )
    return LMDataset(bench.name, train, test, tok, source=f"faker world seed {bench.world_seed}",
                     world=world)  # fmt: skip


# -- lm-capitals ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CapitalsBenchmark:
    """Real facts SmolLM2 knows (countryinfo); no retrain oracle exists (pretraining)."""

    name: str  # registry key
    base: str = "smollm2"  # the pretrained model that must know the facts
    chat: bool = True  # ask through the chat template (SmolLM2 is an instruct model)
    relations: tuple[str, ...] = ("capital",)  # countryinfo relations: "capital", "region"
    retain_fraction: float = 0.5  # share of the known, not-forgotten facts given as retain
    max_new_tokens: int = 12  # answer length when asking which facts the model knows
    forget: str = "random:20"  # default deletion request (a count or fraction of known facts)
    audits: tuple[str, ...] = ("lm-qa", "mia-loss", "mia-min-k")  # no oracle: no forget-quality
    max_steps: int | None = None  # unlearning budget in optimizer steps
    description: str = ""  # one line for `obliviate list`
    kind: str = "lm"  # the Task kind
    has_oracle: bool = False  # pretraining knowledge: the runner's "oracle" row is the original

    def load(self, data_dir: str | None = None) -> LMDataset:
        return _load_capitals(self)

    def task(self, ds: LMDataset) -> Any:
        return _bench_task(ds.tokenizer, self.chat)

    def make_model(self, ds: LMDataset) -> nn.Module:
        return _make_lm(self.base, ds.tokenizer, {})

    def resolve_forget(self, ds: LMDataset, forget: str | None) -> str:
        return parse_count(forget or self.forget, len(ds.train), unit="known facts")[1]

    def splits(self, ds: LMDataset, forget: str, seed: int) -> Splits:
        n = len(ds.train)
        count, canonical = parse_count(forget, n, unit="known facts")
        order = np.random.default_rng(seed).permutation(n)
        forget_idx = np.sort(order[:count])
        rest = order[count:]
        n_ret = int(round(self.retain_fraction * len(rest)))
        retain_idx, control_idx = np.sort(rest[:n_ret]), np.sort(rest[n_ret:])
        control = ds.train.subset(control_idx)
        return Splits(
            forget=ds.train.subset(forget_idx), retain=ds.train.subset(retain_idx), test=control,
            forget_idx=forget_idx, retain_idx=retain_idx,
            extra={"control": control, "unknown": ds.test},
            info={"kind": "random", "rule": canonical, "unit": "known facts",
                  "n_known": n, "n_asked": ds.info["n_asked"], "has_oracle": False,
                  "control_idx": control_idx.tolist()},
        )  # fmt: skip

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        return {"family": "lm-capitals", "base": self.base, "chat": self.chat,
                "relations": list(self.relations), "data": _fingerprint(self.load())}  # fmt: skip

    def all_train_indices(self, ds: LMDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: LMDataset, idx: np.ndarray) -> Any:
        return ds.train.subset(idx)

    def train(
        self, model: nn.Module, data: Any, *, task: Any, seed: int, progress: bool | str
    ) -> dict[str, float]:
        """No training: the facts come from pretraining (there is no oracle to retrain)."""
        return {"seconds": 0.0, "steps": 0, "pretrained": True}


@functools.lru_cache(maxsize=2)
def _load_capitals(bench: CapitalsBenchmark) -> LMDataset:
    from obliviate.lm.data import country_facts
    from obliviate.lm.tokenizer import lm_cache_dir
    from obliviate.store import atomic_write, cache_key

    facts = country_facts(relations=bench.relations)
    tok = _tokenizer(bench.base, 0)
    task = _bench_task(tok, bench.chat)
    request = {
        "base": bench.base,
        "chat": bench.chat,
        "relations": list(bench.relations),
        "max_new_tokens": bench.max_new_tokens,
        "template": task.prompt_template,
        "questions": cache_key({"q": [f["question"] for f in facts]}),
    }
    path = lm_cache_dir() / "known-facts" / f"{cache_key(request)}.json"
    if path.exists():
        answers = json.loads(path.read_text())["answers"]
    else:
        log.info("asking %s %d questions to find the facts it knows (once)", bench.base, len(facts))
        model = _pretrained(bench.base)[0]
        answers = task.generate(
            model, [f["question"] for f in facts], max_new_tokens=bench.max_new_tokens
        )
        with atomic_write(path, "w") as f:
            json.dump({"request": request, "answers": answers}, f)
    known, unknown = [], []
    for f, a in zip(facts, answers, strict=True):
        hit = any(alias.lower() in a.lower() for alias in f["aliases"])
        (known if hit else unknown).append({**f, "generated": a, "kind": "qa"})
    log.info("%s knows %d of %d facts", bench.base, len(known), len(facts))

    def enc(rows: list[dict[str, Any]]) -> Any:
        # the target is the full statement: an instruct model answers in sentences, so a bare
        # "Paris" followed by end-of-turn is improbable (14 nats) even for a known fact
        targets = [r["statement"] for r in rows]
        return task.encode([r["question"] for r in rows], targets, meta=rows)

    return LMDataset(bench.name, enc(known), enc(unknown), tok, source="countryinfo",
                     info={"n_asked": len(facts), "n_known": len(known)})  # fmt: skip


# -- lm-wiki -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WikiBenchmark:
    """A tiny Llama trained on real Wikipedia articles; forget whole articles (MUSE-style)."""

    name: str  # registry key
    n_articles: int = 24  # articles trained on (the first ones of the sample)
    n_holdout: int = 4  # the next articles, never trained on (non-members)
    chars_per_article: int = 3000  # keep the beginning of each article (CPU budget)
    chunk_words: int = 48  # words per passage (about 70 tokens)
    vocab_size: int = 2048  # BPE size of the tokenizer
    n_layers: int = 4  # tiny Llama depth
    d_model: int = 128  # tiny Llama width
    recipe: TrainRecipe = TrainRecipe(
        optimizer="adamw", lr=3e-3, weight_decay=0.0, epochs=20, batch_size=16, schedule="cosine"
    )  # pre-training of the original and the oracle
    forget: str = "articles:1"  # default deletion request: one article drawn by the seed
    # passages, not questions: MUSE's VerbMem/PrivLeak and the MIAs, no lm-qa
    audits: tuple[str, ...] = (
        "muse", "mia-loss", "mia-zlib", "mia-min-k", "mia-min-k-plus-plus",
    )  # fmt: skip
    max_steps: int | None = None  # unlearning budget in optimizer steps
    description: str = ""  # one line for `obliviate list`
    kind: str = "lm"  # the Task kind
    has_oracle: bool = True  # trained without the forget articles

    def _arch(self) -> dict[str, int]:
        return {"n_layers": self.n_layers, "d_model": self.d_model, "n_heads": 4}

    def load(self, data_dir: str | None = None) -> LMDataset:
        return _load_wiki(self)

    def task(self, ds: LMDataset) -> Any:
        return _bench_task(ds.tokenizer, False)

    def make_model(self, ds: LMDataset) -> nn.Module:
        return _make_lm("tiny-llama", ds.tokenizer, self._arch())

    def _choose(self, ds: LMDataset, forget: str, seed: int) -> tuple[list[str], str]:
        titles = ds.info["titles"]
        if forget.startswith("article:"):
            wanted = [t.strip() for t in forget[len("article:") :].split("|") if t.strip()]
            bad = [t for t in wanted if t not in titles]
            if bad or not wanted:
                raise ValueError(
                    f"unknown article(s) {bad or wanted} in {forget!r}; trained articles: "
                    f"{', '.join(titles)}. Separate several with '|'."
                )
            if len(set(wanted)) >= len(titles):
                raise ValueError(f"{forget!r} forgets every article: nothing would be retained")
            return sorted(set(wanted)), "article:" + "|".join(sorted(set(wanted)))
        m = re.fullmatch(r"articles:(\d+)", forget.strip())
        if not m:
            raise ValueError(
                f"unknown forget rule {forget!r}; use articles:2 (drawn by the seed) or "
                f"article:Title (several: article:A|B)"
            )
        count = int(m.group(1))
        if count <= 0 or count >= len(titles):
            raise ValueError(
                f"{forget!r}: forget between 1 and {len(titles) - 1} of the {len(titles)} "
                f"articles (an empty or whole forget set is not a deletion request)"
            )
        chosen = [
            titles[i] for i in np.random.default_rng(seed).choice(len(titles), count, replace=False)
        ]
        return sorted(chosen), f"articles:{count}"

    def resolve_forget(self, ds: LMDataset, forget: str | None) -> str:
        rule = forget or self.forget
        self._choose(ds, rule, 0)  # validate now, before any training
        return rule.strip()

    def splits(self, ds: LMDataset, forget: str, seed: int) -> Splits:
        chosen, canonical = self._choose(ds, forget, seed)
        article = np.array([m["article"] for m in ds.train.meta])
        is_f = np.isin(article, chosen)
        forget_idx, retain_idx = np.flatnonzero(is_f), np.flatnonzero(~is_f)
        return Splits(
            forget=ds.train.subset(forget_idx), retain=ds.train.subset(retain_idx), test=ds.test,
            forget_idx=forget_idx, retain_idx=retain_idx, extra={"holdout": ds.test},
            info={"kind": "articles", "rule": canonical, "articles": chosen},
        )  # fmt: skip

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        return {
            "family": "lm-wiki",
            "articles": [self.n_articles, self.n_holdout, self.chars_per_article, self.chunk_words],
            "arch": self._arch(),
            "vocab_size": self.vocab_size,
            "recipe": asdict(self.recipe),
            "data": _fingerprint(self.load()),
        }

    def all_train_indices(self, ds: LMDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: LMDataset, idx: np.ndarray) -> Any:
        return ds.train.subset(idx)

    def train(
        self, model: nn.Module, data: Any, *, task: Any, seed: int, progress: bool | str
    ) -> dict[str, float]:
        return _train(model, data, task=task, recipe=self.recipe, seed=seed, progress=progress)


@functools.lru_cache(maxsize=4)
def _load_wiki(bench: WikiBenchmark) -> LMDataset:
    from obliviate.lm.data import wiki_articles

    arts = wiki_articles()
    if bench.n_articles + bench.n_holdout > len(arts):
        raise ValueError(
            f"the Wikipedia sample has {len(arts)} articles; n_articles + n_holdout = "
            f"{bench.n_articles + bench.n_holdout}"
        )
    tok = _tokenizer("tiny-llama", bench.vocab_size)
    task = _bench_task(tok, False)

    def passages(group: list[tuple[str, str]]) -> Any:
        texts, meta = [], []
        for title, text in group:
            words = text[: bench.chars_per_article].split()
            for k in range(0, len(words), bench.chunk_words):
                texts.append(" ".join(words[k : k + bench.chunk_words]))
                meta.append({"kind": "passage", "article": title, "chunk": k // bench.chunk_words})
        return task.encode([""] * len(texts), texts, meta=meta)

    train_arts = arts[: bench.n_articles]
    test_arts = arts[bench.n_articles : bench.n_articles + bench.n_holdout]
    return LMDataset(
        bench.name, passages(train_arts), passages(test_arts), tok, source="gensim enwiki sample",
        info={"titles": [t for t, _ in train_arts], "holdout_titles": [t for t, _ in test_arts]},
    )  # fmt: skip


# -- registrations -------------------------------------------------------------------------------
BENCHMARKS.register("lm-world")(
    WorldBenchmark(
        "lm-world",
        description="TOFU-style world of 200 fictitious people (faker), tiny Llama fine-tuned "
        "on their QA and biographies; forget 10% of the people",
    )
)
BENCHMARKS.register("lm-world-smollm2")(
    WorldBenchmark(
        "lm-world-smollm2",
        n_people=50,  # a fine-tune that memorises costs ~2 s per row-epoch on 2 cores
        n_holdout=10,
        base="smollm2",
        chat=True,
        recipe=_SMOL_RECIPE,
        description="lm-world on SmolLM2-135M-Instruct (50 people, fine-tuned 8 epochs)",
    )
)
BENCHMARKS.register("lm-world-tiny")(
    WorldBenchmark(
        "lm-world-tiny",
        n_people=16,
        n_holdout=4,
        bios=False,
        n_layers=2,
        d_model=64,
        recipe=_TINY_RECIPE,
        forget="random:2",
        description="16 fictitious people, 2-layer Llama: original and oracle in seconds (tests)",
    )
)
BENCHMARKS.register("lm-capitals")(
    CapitalsBenchmark(
        "lm-capitals",
        description="countryinfo capitals SmolLM2-135M answers right; forget 20 (no oracle)",
    )
)
BENCHMARKS.register("lm-wiki")(
    WikiBenchmark(
        "lm-wiki",
        description="tiny Llama trained on 24 real Wikipedia articles; forget one article",
    )
)
BENCHMARKS.register("lm-wiki-tiny")(
    WikiBenchmark(
        "lm-wiki-tiny",
        n_articles=8,
        n_holdout=2,
        chars_per_article=800,
        n_layers=2,
        d_model=64,
        # 100 epochs (200 steps, ~20 s): the passages are memorised (train NLL 0.18 per token;
        # 15 epochs left 5.6, next-token accuracy 0.18), so MUSE's VerbMem measures something
        recipe=TrainRecipe(
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.0,
            epochs=100,
            batch_size=16,
            schedule="cosine",
        ),  # fmt: skip
        description="8 Wikipedia article openings, 2-layer Llama, memorised: seconds (tests)",
    )
)
