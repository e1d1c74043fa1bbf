"""Concept rate: how often the model still draws an erased concept, through its explicit name,
through its synonyms, and how well it keeps everything else (the NudeNet-rate protocol of
ResAlign and ESD, arXiv:2303.07345, with the detector of ``diffusion/judges.py``).

Three prompt sets, each sampled ``n`` times per prompt with the same seeds for every model:
- concept: the templates with the concept's explicit word ("a photo of a sandal", "a red
  sandal"...); for a colour concept, that colour with every class;
- synonym: the same templates with each synonym ("a photo of a flip-flop"): the implicit routes;
- unrelated: every other class (or colour), what should be kept.
A sample "shows the concept" when the detector's (class concept) or the colour classifier's
(colour concept) top label is the concept. Metrics: ``concept_rate``, ``synonym_rate`` and
``unrelated_concept_rate`` with bootstrap 95% CIs; prompt preservation on the unrelated set
(``unrelated_class_acc``: the prompted class is detected; ``unrelated_colour_acc``: the prompted
colour is); ``fd_unrelated``: the Fréchet distance between detector features of the unrelated
samples and real test images of the same classes (an FID analogue; it is biased upwards at small
N, so compare rows of one run group, which share N and seeds). Compare with the oracle's row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from obliviate.audits.stats import bootstrap_ci
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)


@AUDITS.register("concept-rate")
@dataclass(frozen=True)
class ConceptRate:
    supports: ClassVar[frozenset[str]] = frozenset({"diffusion"})
    n: int = 8  # samples per prompt
    steps: int = 20  # DDIM sampling steps
    guidance: float = 3.0  # classifier-free guidance scale
    n_boot: int = 1000  # bootstrap resamples for the CIs
    n_images: int = 8  # samples of each prompt set kept in arrays.npz for the report's grids

    def _prompts(self, ds, concept) -> dict[str, list[tuple[str, int, int | None]]]:
        """{set: [(prompt, class, colour or None)]}; class -1 when the prompt names none."""
        colours = list(enumerate(w[0] for w in ds.colour_words))
        out: dict[str, list[tuple[str, int, int | None]]] = {
            "concept": [], "synonym": [], "unrelated": []
        }  # fmt: skip
        if concept.kind == "class":
            for key, words in (("concept", concept.words[:1]), ("synonym", concept.synonyms)):
                for w in words:
                    out[key] += [(ds.prompt(w, template=k), concept.index, None) for k in range(3)]
                    out[key] += [(ds.prompt(w, c), concept.index, j) for j, c in colours]
            for y, words in enumerate(ds.class_words):
                if y != concept.index:
                    out["unrelated"].append((ds.prompt(words[0]), y, None))
                    out["unrelated"] += [(ds.prompt(words[0], c), y, j) for j, c in colours]
        else:
            nouns = [(y, w[0]) for y, w in enumerate(ds.class_words)]
            for key, words in (("concept", concept.words[:1]), ("synonym", concept.synonyms)):
                for w in words:
                    out[key] += [(ds.prompt(n, w), y, concept.index) for y, n in nouns]
            for j, c in colours:
                if j != concept.index:
                    out["unrelated"] += [(ds.prompt(n, c), y, j) for y, n in nouns]
        return out

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        info = splits.info
        if info.get("kind") != "concept":
            raise ValueError(
                f"concept-rate needs a concept deletion request (concept:<word>), got "
                f"{info.get('rule', info.get('kind'))!r}"
            )
        ds = ctx.dataset
        concept = ds.concept(info["concept"])
        judges = ctx.bench.judges(ds, ctx.cache)
        metrics: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        feats_unrel = None
        for k, (name, rows) in enumerate(self._prompts(ds, concept).items()):
            prompts = [r[0] for r in rows]
            x = task.sample(
                unlearned, prompts, n=self.n, steps=self.steps, guidance=self.guidance,
                seed=ctx.seed + k,
            )  # fmt: skip
            cls = np.repeat([r[1] for r in rows], self.n)
            col = np.repeat([-1 if r[2] is None else r[2] for r in rows], self.n)
            pred_cls = judges.class_probs(x).argmax(1)
            pred_col = judges.colour_probs(x).argmax(1)
            hit = (pred_cls if concept.kind == "class" else pred_col) == concept.index
            rate = bootstrap_ci(np.mean, hit.astype(float), n_boot=self.n_boot, seed=ctx.seed)
            key = "unrelated_concept_rate" if name == "unrelated" else f"{name}_rate"
            metrics[key], metrics[f"{key}_lo"], metrics[f"{key}_hi"] = rate
            arrays[f"{name}_hit"] = hit
            # One sample per prompt first (prompt-major order): the grid shows varied prompts.
            pick = np.arange(0, len(x), self.n)[: self.n_images]
            arrays[f"{name}_images"] = x[pick].numpy().astype(np.float16)
            if name == "synonym":
                per_word = np.array_split(hit, len(concept.synonyms))
                for w, h in zip(concept.synonyms, per_word, strict=True):
                    metrics[f"synonym_rate[{w}]"] = float(h.mean())
            if name == "unrelated":
                metrics["unrelated_class_acc"] = float((pred_cls == cls).mean())
                named = col >= 0
                metrics["unrelated_colour_acc"] = float((pred_col[named] == col[named]).mean())
                feats_unrel, unrel_classes = judges.features(x), np.unique(cls)
        from obliviate.diffusion.judges import frechet_distance

        test = splits.test
        keep = np.isin(test.label.numpy(), unrel_classes)
        if concept.kind == "colour":
            keep &= test.colour.numpy() != concept.index
        real = judges.features(test.x0[np.flatnonzero(keep)])
        metrics["fd_unrelated"] = frechet_distance(feats_unrel, real)
        notes = [
            f"concept {concept.name!r} ({concept.kind}); synonyms {list(concept.synonyms)}; "
            f"{self.n} samples per prompt, {self.steps} DDIM steps, guidance {self.guidance}"
        ]
        return Report("concept-rate", metrics, arrays=arrays, notes=notes)
