"""Forget, retain and control QA of a causal LM: TOFU's evaluation suite.

From TOFU, "TOFU: A Task of Fictitious Unlearning for LLMs" (Maini et al. 2024,
arXiv:2401.06121), as OpenUnlearning computes it (locuslab/open-unlearning,
``src/evals/metrics/memorization.py``, ``utility.py``; methods.md section B). Every question of
the forget set, the retain set and a control set is answered greedily; each answer is scored by
exact/alias match, ROUGE-L recall (with the stemmer) against the gold answer, the probability of
the gold answer and, where the data carry paraphrased and perturbed answers, the truth ratio
(how much likelier a wrong answer is than a right one). An unlearned model should answer the
forget questions like the retrain oracle and the rest like the original.

Definitions (what the numbers are):

- **match**: the normalised gold answer (``meta["answer"]`` or any of ``meta["aliases"]``,
  else the target) occurs as whole words in the normalised generation (lower case, accents and
  punctuation removed, whitespace collapsed; ``match="exact"``: equal after normalising).
  Containment is the known-fact rule of ``lm-capitals`` and the SKeB labeller: a chat model
  answers "The capital of France is Paris."
- **rouge**: ROUGE-L *recall* of the generation against the target text (TOFU's ``rougeL_recall``;
  ``rouge-score`` with the Porter stemmer).
- **prob**: exp(-mean token NLL) of the target given the question, per example (TOFU's
  "probability", a per-token geometric mean; ``task.evaluate(...)["answer_prob"]`` is its mean).
- **truth ratio** (OpenUnlearning's code form, not the paper's text): with
  P(a) = exp(-mean token NLL of a), tr = (prod_k P(perturbed_k))^(1/K) / P(paraphrased), the
  *geometric* mean over the K perturbed answers (the paper writes an arithmetic mean). Computed
  in log space, log tr = mean NLL(paraphrased) - mean_k mean NLL(perturbed_k), so no 1e-10 guard
  is needed. Aggregates: forget mean(min(tr, 1/tr)) (1 = cannot tell right from wrong, as the
  oracle); retain and control mean(max(0, 1 - tr)) (higher = prefers the truth).
- **model_utility**: the harmonic mean of (prob, rouge, truth-ratio aggregate) of the retain
  set and of the control set (a component is left out where the data have no perturbed
  answers). TOFU's control sets (real authors, world facts) are facts the model *knows*;
  ``lm-world``'s control set is the held-out people, whom no model was trained on, and would
  pull the harmonic mean to about 0 for every model. So with ``utility_control="auto"`` the
  control set enters only when the original answers at least ``known_fraction`` of it (the
  report's notes say which sets entered). TOFU normalises the control probability over the
  answer options; here it is the plain probability.
- **fluency.ppl**: perplexity on held-out plain text (``extra["holdout"]``, or ``splits.test``
  rows without a question), else on the control answers read as plain text (the paraphrased
  answer, a full sentence, where the data have one).

Facts the original never knew. A forget question the *original* neither answers (no match) nor
finds likely (prob < ``unknown_prob``) cannot be forgotten; it is logged as a warning, noted,
and counted (``forget.unknown_to_original``), and ``forget.recall_of_known`` gives the match
rate over the facts the original did answer. The 0.25 threshold is a design choice: on
lm-world-tiny the original's forget facts have probabilities 0.41-0.90, while the held-out facts
it never saw range from 0.0 to 0.88 (a short wrong-but-typed answer can be likely), so the
probability alone cannot tell "never knew"; together with "no match" it flags 8 of 18.

Sets. forget = ``extra["forget_qa"]`` else ``splits.forget``; retain = ``extra["retain_qa"]``
else ``splits.retain``; control = ``extra["holdout_qa"]``, ``extra["control"]`` or
``splits.test``, whichever comes first; rows without a question are dropped; each set is a
seeded subsample of at most ``max_examples`` rows (the same rows in ``forget-quality``).

Scale-down: answers are at most ``max_new_tokens`` = 16 tokens (TOFU generates up to 200; the
fictitious facts and capitals are a few tokens); TOFU's 400 forget/retain questions become at
most ``max_examples`` = 400 per set.

Metrics (unlearned model; the same with ``original.`` and ``oracle.`` prefixes for the
references, the oracle only where the benchmark has one): ``<set>.match``, ``<set>.rouge``,
``<set>.prob``, ``<set>.truth_ratio`` for set in forget/retain/control, ``model_utility``,
``fluency.ppl``, ``forget.unknown_to_original``, ``forget.recall_of_known``, ``n.<set>``.
Arrays: ``<who>.<set>.{match,rouge,prob,log_tr,answers}`` and ``<set>.idx``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn

from obliviate.audits.persuasion import normalize
from obliviate.loop import derive_seed
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = [
    "LMQA",
    "answer_probs",
    "forget_tr_score",
    "gold_answers",
    "harmonic_mean",
    "has_truth_ratio_data",
    "log_truth_ratio",
    "log_truth_ratios",
    "match_answer",
    "qa_rows",
    "retain_tr_score",
    "retrain_oracle",
    "rouge_l",
    "subsample",
]

MatchMode = Literal["contains", "exact"]
SETS = ("forget", "retain", "control")


# -- scoring functions (numpy / strings) ---------------------------------------------------------
def gold_answers(meta: Mapping[str, Any], target: str) -> tuple[str, ...]:
    """The accepted answers of one question: ``meta["answer"]`` (else the target) and aliases."""
    first = meta.get("answer") or target
    return tuple(dict.fromkeys([str(first), *(str(a) for a in (meta.get("aliases") or []) if a)]))


def match_answer(
    generated: str, gold: str | Sequence[str], *, mode: MatchMode = "contains"
) -> bool:
    """True when a gold answer matches the generation after normalising both (lower case,
    accents and punctuation removed, one space): as whole words (``contains``) or entirely."""
    if mode not in ("contains", "exact"):
        raise ValueError(f"match mode {mode!r}; use 'contains' or 'exact'")
    golds = [gold] if isinstance(gold, str) else list(gold)
    text = normalize(generated)
    for g in map(normalize, golds):
        if not g:
            continue
        if mode == "exact" and text == g:
            return True
        if mode == "contains" and f" {g} " in f" {text} ":
            return True
    return False


@functools.lru_cache(maxsize=1)
def _scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError("ROUGE needs rouge-score: pip install 'obliviate[lm]'") from None
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    kind: Literal["recall", "precision", "fmeasure"] = "recall",
) -> np.ndarray:
    """Per-example ROUGE-L of each prediction against its reference, with the Porter stemmer:
    ``recall`` for TOFU, ``fmeasure`` (F1) for MUSE. (N,) float64."""
    if len(predictions) != len(references):
        raise ValueError(f"rouge_l: {len(predictions)} predictions, {len(references)} references")
    sc = _scorer()
    return np.array(
        [
            getattr(sc.score(r, p)["rougeL"], kind)
            for p, r in zip(predictions, references, strict=True)
        ],
        dtype=np.float64,
    )


def log_truth_ratio(correct_nll: np.ndarray, wrong_nll: Sequence[np.ndarray]) -> np.ndarray:
    """log tr per question from mean token NLLs: ``correct_nll`` (N,) of the paraphrased
    answers, ``wrong_nll[i]`` (K_i,) of question i's perturbed answers.

    tr = geometric-mean P(wrong) / P(correct) with P = exp(-mean NLL), so
    log tr = correct_nll - mean(wrong_nll) (OpenUnlearning's form)."""
    c = np.asarray(correct_nll, dtype=np.float64)
    if len(c) != len(wrong_nll):
        raise ValueError(f"log_truth_ratio: {len(c)} correct answers, {len(wrong_nll)} wrong sets")
    if any(len(w) == 0 for w in wrong_nll):
        raise ValueError("log_truth_ratio: every question needs at least one perturbed answer")
    return c - np.array([np.mean(w) for w in wrong_nll], dtype=np.float64)


def forget_tr_score(log_tr: np.ndarray) -> float:
    """TOFU's forget aggregate mean(min(tr, 1/tr)) = mean(exp(-|log tr|)); 1 is best."""
    return float(np.mean(np.exp(-np.abs(np.asarray(log_tr, dtype=np.float64)))))


def retain_tr_score(log_tr: np.ndarray) -> float:
    """TOFU's retain aggregate mean(max(0, 1 - tr)); higher means the truth is preferred."""
    tr = np.exp(np.minimum(np.asarray(log_tr, dtype=np.float64), 50.0))  # tr > 1 clips to 0
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is <= 0 (TOFU's model utility)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("harmonic_mean of no values")
    return 0.0 if (v <= 0).any() else float(v.size / np.sum(1.0 / v))


# -- model signals (torch stops here) ------------------------------------------------------------
def answer_probs(model: nn.Module, data: Any, *, task: Task) -> np.ndarray:
    """exp(-mean token NLL) of each target, (N,): per example what ``evaluate`` averages."""
    s, n = task.sequence_nll(model, data)
    return np.exp(-s / np.maximum(n, 1.0))


def has_truth_ratio_data(data: Any) -> bool:
    """Every row's meta carries a paraphrased answer and at least one perturbed answer."""
    meta = getattr(data, "meta", ())
    return bool(meta) and all(
        m.get("paraphrased_answer") and len(m.get("perturbed_answers") or ()) > 0 for m in meta
    )


def log_truth_ratios(model: nn.Module, data: Any, *, task: Task) -> np.ndarray:
    """log truth ratio of each question of ``data`` (TokenData with paraphrased and perturbed
    answers in ``meta``), re-encoded with ``task.encode`` after the same question. (N,)."""
    if not has_truth_ratio_data(data):
        raise ValueError(
            "the truth ratio needs meta['paraphrased_answer'] and meta['perturbed_answers'] on "
            "every question (lm-world has them; lm-capitals and lm-wiki do not)"
        )
    prompts = list(data.prompts)
    para = [str(m["paraphrased_answer"]) for m in data.meta]
    wrong = [[str(w) for w in m["perturbed_answers"]] for m in data.meta]
    s, n = task.sequence_nll(model, task.encode(prompts, para))
    correct = s / np.maximum(n, 1.0)
    flat_p = [p for p, ws in zip(prompts, wrong, strict=True) for _ in ws]
    s2, n2 = task.sequence_nll(model, task.encode(flat_p, [w for ws in wrong for w in ws]))
    per = s2 / np.maximum(n2, 1.0)
    cuts = np.cumsum([len(ws) for ws in wrong])[:-1]
    return log_truth_ratio(correct, np.split(per, cuts))


# -- sets and references -------------------------------------------------------------------------
def qa_rows(splits: Splits, keys: Sequence[str], fallback: Any) -> tuple[Any, str]:
    """(the first ``splits.extra[key]`` present, else ``fallback``, keeping the rows that have a
    question; its source name). (None, source) when it holds no question."""
    key = next((k for k in keys if k in splits.extra), None)
    data = splits.extra[key] if key is not None else fallback
    source = f"extra[{key!r}]" if key is not None else "fallback"
    if data is None or not hasattr(data, "prompts"):
        return None, source
    rows = np.array([i for i, p in enumerate(data.prompts) if p], dtype=np.int64)
    if len(rows) == 0:
        return None, source
    return (data if len(rows) == len(data) else data.subset(rows)), source


def subsample(data: Any, max_examples: int, seed: int, name: str) -> Any:
    """A seeded subsample of at most ``max_examples`` rows (0 = all), in row order. The same
    (seed, name) selects the same rows in every audit."""
    if not max_examples or len(data) <= max_examples:
        return data
    rng = np.random.default_rng(derive_seed(seed, "qa-subsample", name))
    return data.subset(np.sort(rng.choice(len(data), max_examples, replace=False)))


def retrain_oracle(splits: Splits, ctx: AuditContext) -> tuple[nn.Module | None, str]:
    """(the retrain oracle, "") where the benchmark has one, else (None, why not)."""
    bench = getattr(ctx, "bench", None)
    if not splits.info.get("has_oracle", True) or getattr(bench, "has_oracle", True) is False:
        return None, (
            "the benchmark has no retrain oracle (e.g. lm-capitals: the facts come from "
            "pretraining, which cannot be redone); compare with the control facts instead"
        )
    oracle = getattr(ctx, "oracle", None)
    if oracle is None:
        return None, "the run context lends no retrain oracle"
    return oracle, ""


def _plain_text(splits: Splits, control: Any) -> tuple[list[str], str]:
    """Held-out plain text for the fluency perplexity (module docstring) and its source."""
    for key in ("holdout", "test"):
        data = splits.extra.get(key) if key == "holdout" else splits.test
        if data is not None and hasattr(data, "prompts"):
            texts = [t for p, t in zip(data.prompts, data.targets, strict=True) if not p]
            if texts:
                return texts, f"plain text of {key}"
    if control is not None:
        meta = control.meta or [{}] * len(control)
        texts = [
            str(m.get("paraphrased_answer") or t)
            for m, t in zip(meta, control.targets, strict=True)
        ]
        return texts, "control answers as plain text"
    return [], ""


# -- the audit -----------------------------------------------------------------------------------
@AUDITS.register("lm-qa")
@dataclass(frozen=True)
class LMQA:
    """TOFU-style QA evaluation: match, ROUGE-L recall, probability, truth ratio, utility."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    max_examples: int = 400  # questions per set (seeded subsample beyond; 0 = all); TOFU: 400
    max_new_tokens: int = 16  # greedy answer length in tokens (TOFU: 200; facts are short)
    batch_size: int = 32  # prompts per generation batch
    match: MatchMode = "contains"  # gold as whole words in the answer, or the whole answer
    unknown_prob: float = 0.25  # [design choice] below this (and no match) the original never knew
    utility_control: Literal["auto", "yes", "no"] = "auto"  # control set in model utility
    known_fraction: float = 0.5  # auto: control enters when the original answers this share
    references: bool = True  # also score the original and the oracle (original./oracle.)

    def __post_init__(self) -> None:
        if self.match not in ("contains", "exact"):
            raise ValueError(f"match={self.match!r}; use 'contains' or 'exact'")
        if self.utility_control not in ("auto", "yes", "no"):
            raise ValueError(f"utility_control={self.utility_control!r}; use auto, yes or no")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.max_examples < 0:
            raise ValueError("max_new_tokens and batch_size must be >= 1, max_examples >= 0")

    def _score(self, model: nn.Module, data: Any, task: Task) -> dict[str, np.ndarray]:
        """Per-example answers, match, rouge, prob (and log_tr) of one model on one set."""
        gen = getattr(task, "generate", None)
        if gen is None:
            raise TypeError(f"lm-qa needs the LM Task's generate(); {type(task).__name__} has none")
        answers = gen(
            model,
            list(data.prompts),
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )
        meta = data.meta or [{}] * len(data)
        golds = [gold_answers(m, t) for m, t in zip(meta, data.targets, strict=True)]
        out = {
            "answers": np.asarray(answers, dtype=str),
            "match": np.array(
                [match_answer(a, g, mode=self.match) for a, g in zip(answers, golds, strict=True)],
                dtype=np.float64,
            ),
            "rouge": rouge_l(answers, list(data.targets), kind="recall"),
            "prob": answer_probs(model, data, task=task),
        }
        if has_truth_ratio_data(data):
            out["log_tr"] = log_truth_ratios(model, data, task=task)
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
        # 1. The three question sets, subsampled with the audit seed.
        forget, _ = qa_rows(splits, ("forget_qa",), splits.forget)
        if forget is None:
            raise ValueError(
                "lm-qa needs forget questions: TokenData rows with a non-empty prompt "
                "(splits.extra['forget_qa'] or splits.forget). This benchmark's forget set is "
                "plain text (lm-wiki): use the 'muse' audit (VerbMem, PrivLeak) instead."
            )
        retain, _ = qa_rows(splits, ("retain_qa",), splits.retain)
        control, c_src = qa_rows(splits, ("holdout_qa", "control"), splits.test)
        sets = {
            name: subsample(d, self.max_examples, ctx.seed, name)
            for name, d in zip(SETS, (forget, retain, control), strict=True)
            if d is not None
        }
        notes = [
            "sets: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items())
            + (f" (control = {'splits.test' if c_src == 'fallback' else c_src})"
               if "control" in sets else "; no control questions")
        ]  # fmt: skip

        # 2. The models: the audited one, and the references beside it.
        models: dict[str, nn.Module] = {"unlearned": unlearned}
        oracle, why = retrain_oracle(splits, ctx)
        if self.references:
            models["original"] = original
            if oracle is not None:
                models["oracle"] = oracle
            else:
                notes.append(f"no oracle.* metrics: {why}")

        # 3. Per-example signals; a model that is another row's model is not scored twice.
        done: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        results: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for who, model in models.items():
            if id(model) not in done:
                done[id(model)] = {s: self._score(model, d, task) for s, d in sets.items()}
            results[who] = done[id(model)]
        if "original" not in results:
            results["original"] = done.get(id(original)) or {
                s: self._score(original, d, task) for s, d in sets.items()
            }

        # 4. Which sets enter model utility (module docstring), and the fluency text.
        use_control = "control" in sets and (
            self.utility_control == "yes"
            or (
                self.utility_control == "auto"
                and results["original"]["control"]["match"].mean() >= self.known_fraction
            )
        )
        util_sets = [
            s for s in ("retain", "control") if s in sets and (s != "control" or use_control)
        ]
        if not util_sets:
            notes.append("model_utility: no retain or known control questions; not computed")
        else:
            notes.append(f"model_utility over {' + '.join(util_sets)}")
        if "control" in sets and not use_control:
            notes.append(
                "control set left out of model_utility: the original answers "
                f"{results['original']['control']['match'].mean():.0%} of it (held-out facts no "
                "model was trained on)"
            )
        texts, t_src = _plain_text(splits, sets.get("control"))
        fluency = None
        if texts:
            rng = np.random.default_rng(derive_seed(ctx.seed, "qa-subsample", "fluency"))
            if self.max_examples and len(texts) > self.max_examples:
                texts = [
                    texts[i] for i in np.sort(rng.choice(len(texts), self.max_examples, False))
                ]
            fluency = task.encode([""] * len(texts), texts)
            notes.append(f"fluency.ppl on {len(texts)} rows: {t_src}")

        # 5. Scoring in numpy.
        metrics: dict[str, float] = {f"n.{s}": float(len(d)) for s, d in sets.items()}
        arrays: dict[str, np.ndarray] = {
            f"{s}.idx": np.asarray(d.idx, dtype=np.int64) for s, d in sets.items()
        }
        ppl: dict[int, float] = {}
        for who in models:
            pre = "" if who == "unlearned" else f"{who}."
            res = results[who]
            for s, r in res.items():
                metrics |= {
                    f"{pre}{s}.match": float(r["match"].mean()),
                    f"{pre}{s}.rouge": float(r["rouge"].mean()),
                    f"{pre}{s}.prob": float(r["prob"].mean()),
                }
                if "log_tr" in r:
                    agg = forget_tr_score if s == "forget" else retain_tr_score
                    metrics[f"{pre}{s}.truth_ratio"] = agg(r["log_tr"])
                arrays |= {f"{who}.{s}.{k}": v for k, v in r.items()}
            if util_sets:
                parts = []
                for s in util_sets:
                    parts += [metrics[f"{pre}{s}.prob"], metrics[f"{pre}{s}.rouge"]]
                    if f"{pre}{s}.truth_ratio" in metrics:
                        parts.append(metrics[f"{pre}{s}.truth_ratio"])
                metrics[f"{pre}model_utility"] = harmonic_mean(parts)
            if fluency is not None:
                m = models[who]
                if id(m) not in ppl:
                    ppl[id(m)] = float(task.evaluate(m, fluency)["ppl"])
                metrics[f"{pre}fluency.ppl"] = ppl[id(m)]

        # 6. Forget facts the original never knew cannot be forgotten: say so.
        orig_f = results["original"]["forget"]
        unknown = (orig_f["match"] == 0) & (orig_f["prob"] < self.unknown_prob)
        metrics["forget.unknown_to_original"] = float(unknown.sum())
        arrays["forget.unknown_to_original"] = unknown
        if unknown.any():
            msg = (
                f"{int(unknown.sum())} of {len(unknown)} forget questions were never known to the "
                f"original (no match, probability < {self.unknown_prob}): they cannot be "
                "forgotten, yet forget.match counts them as forgotten (forget.recall_of_known "
                "counts only the facts the original answered)"
            )
            log.warning("lm-qa: %s", msg)
            notes.append(msg)
        known = orig_f["match"] == 1
        if known.any():
            metrics["forget.recall_of_known"] = float(
                results["unlearned"]["forget"]["match"][known].mean()
            )
        for k, v in metrics.items():
            if not math.isfinite(v):
                log.warning("lm-qa: metric %s is %s", k, v)
        return Report("lm-qa", metrics, arrays=arrays, notes=notes)
