"""MUSE: verbatim memorisation, knowledge memorisation and privacy leakage of an unlearned LM.

From MUSE, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models" (Shi et al. 2024,
arXiv:2407.06460), as its code (and OpenUnlearning's ``privleak``) computes the three
data-owner criteria. **VerbMem**: the model continues the first tokens of each forget passage
greedily; the ROUGE-L F1 against the true continuation says how much of the text it can still
recite. **KnowMem**: ROUGE-L F1 of its answers to questions about the forget set (should drop
to the oracle's) and the retain set (should stay). **PrivLeak**: a Min-K% membership attack
separates forget rows from held-out rows; its AUC is compared with the retrain oracle's,
PrivLeak = (AUC(model) - AUC(oracle)) / AUC(oracle): about 0 for an exact unlearner, > 0 when the
forget set still looks like training data (under-unlearning), < 0 when it looks *less* seen than
never-seen text (over-unlearning).

Choices:
- ROUGE-L F1 with the Porter stemmer (``rouge-score``), as MUSE reports it (TOFU uses recall).
- VerbMem passages: forget rows without a question, or with ``meta["kind"]`` "bio"/"passage"
  (lm-wiki's passages, lm-world's biographies). The prefix is the first ``prefix_tokens`` target
  tokens of the row as trained (MUSE: 32), at most half the passage so that a continuation
  remains; the true continuation is the next ``verbmem_new_tokens`` tokens (MUSE: 128; lm-wiki's
  passages have about 70 tokens, so it is the rest of the passage). The prefix is decoded and
  continued as plain text (``LMTask.generate(raw=True)``: BOS + text, no QA template), and the
  generation is cut to the continuation's token count, so both sides have equal length as in
  MUSE's fixed-length prompts and references.
- The MIA is Min-K% Prob over the target tokens with k = 0.4 and the last labelled token (EOS)
  dropped, as OpenUnlearning's ``MinKProbAttack`` (count ``max(1, int(k * n))``; a row with no
  token left scores 0). AUC by ``stats.roc``/``auc`` with forget = member; OpenUnlearning labels
  forget 0 and negates the score, which is the same AUC. Non-members: ``extra["holdout"]``,
  ``extra["holdout_qa"]`` or ``splits.test``; members: the forget rows of the same kind
  (questions or plain text) when the held-out rows are all of one kind, else every forget
  row. Without a retrain oracle (lm-capitals) the reference AUC is 0.5, as OpenUnlearning's
  fallback, with a note.
- PrivLeak is the ratio the issue asks for; MUSE and OpenUnlearning print it times 100
  (``privleak_pct``).

Scale-down: KnowMem answers are ``max_new_tokens`` = 16 tokens (MUSE: 32) after the benchmark's
QA template (MUSE uses few-shot prompts); at most ``max_examples`` rows per set and
``max_passages`` passages (MUSE: 100 VerbMem passages). Sets a benchmark lacks are skipped with a
note: lm-world-tiny has no passages (no VerbMem), lm-wiki no questions (no KnowMem).

Metrics: ``knowmem.forget``, ``knowmem.retain``, ``verbmem.forget``, ``mia.auc``,
``mia.auc_oracle`` (the reference: 0.5 without oracle), ``mia.auc_original``, ``privleak``,
``privleak_pct``, ``n.*``. Arrays: per-example ROUGE and MIA scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn

from obliviate.audits.lm_qa import qa_rows, retrain_oracle, rouge_l, subsample
from obliviate.audits.stats import auc, roc
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = ["MUSE", "min_k_score", "passage_rows", "privleak", "verbmem_pairs"]


def min_k_score(token_logprobs: np.ndarray, k: float) -> float:
    """Min-K% Prob of one text: the mean of its max(1, int(k * n)) lowest token log-probs after
    dropping the last token (OpenUnlearning); 0.0 when no token is left. Higher = member."""
    v = np.asarray(token_logprobs, dtype=np.float64)[:-1]
    if v.size == 0:
        return 0.0
    return float(np.sort(v)[: max(1, int(v.size * k))].mean())


def privleak(auc_model: float, auc_reference: float) -> float:
    """(AUC(model) - AUC(reference)) / AUC(reference): MUSE's PrivLeak as a fraction."""
    if auc_reference <= 0:
        raise ValueError(f"privleak: the reference AUC must be > 0, got {auc_reference}")
    return (auc_model - auc_reference) / auc_reference


def passage_rows(data: Any) -> np.ndarray:
    """Rows of ``data`` that are plain text: no question, or meta kind "bio"/"passage"."""
    meta = data.meta or [{}] * len(data)
    return np.array(
        [
            i
            for i, (p, m) in enumerate(zip(data.prompts, meta, strict=True))
            if not p or m.get("kind") in ("bio", "passage")
        ],
        dtype=np.int64,
    )


def verbmem_pairs(
    data: Any, tokenizer: Any, *, prefix_tokens: int, continuation_tokens: int
) -> tuple[list[str], list[str], list[int]]:
    """(prefix texts, true continuation texts, continuation token counts) of each row's target
    tokens as trained (EOS excluded). The prefix is at most half the target."""
    prefixes, conts, counts = [], [], []
    eos = tokenizer.eos_token_id
    for i in range(len(data)):
        ids = data.input_ids[i][data.labels[i] != -100].tolist()
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        if len(ids) < 2:
            continue  # nothing to continue
        p = min(prefix_tokens, len(ids) // 2)
        cont = ids[p : p + continuation_tokens]
        prefixes.append(tokenizer.decode(ids[:p], skip_special_tokens=True))
        conts.append(tokenizer.decode(cont, skip_special_tokens=True).strip())
        counts.append(len(cont))
    return prefixes, conts, counts


def _truncate(texts: Sequence[str], counts: Sequence[int], tokenizer: Any) -> list[str]:
    """Each text cut to its first ``count`` tokens (equal lengths, as MUSE compares them)."""
    out = []
    for t, n in zip(texts, counts, strict=True):
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][:n]
        out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return out


@AUDITS.register("muse")
@dataclass(frozen=True)
class MUSE:
    """MUSE's VerbMem, KnowMem (ROUGE-L F1) and PrivLeak (Min-K% AUC relative to the oracle)."""

    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    max_examples: int = 400  # QA rows per set and MIA rows per side (seeded subsample; 0 = all)
    max_new_tokens: int = 16  # KnowMem answer length in tokens (MUSE: 32)
    max_passages: int = 100  # VerbMem forget passages (MUSE: 100)
    prefix_tokens: int = 32  # VerbMem prompt: the first tokens of a passage (MUSE: 32)
    verbmem_new_tokens: int = 128  # VerbMem continuation length in tokens (MUSE: 128)
    k: float = 0.4  # Min-K% fraction of the least likely tokens (OpenUnlearning's configs)
    batch_size: int = 32  # prompts per generation batch

    def __post_init__(self) -> None:
        if not 0.0 < self.k <= 1.0:
            raise ValueError(f"muse: k={self.k} must be a fraction in (0, 1] (0.4 by default)")
        if min(self.max_new_tokens, self.prefix_tokens, self.verbmem_new_tokens) < 1:
            raise ValueError("muse: max_new_tokens, prefix_tokens, verbmem_new_tokens must be >= 1")

    def _mia(self, model: nn.Module, members: Any, held: Any, task: Task) -> tuple[float, Any]:
        """(AUC of Min-K% forget vs held-out, scores (N,)) of one model."""
        scores = np.array(
            [
                min_k_score(-nll, self.k)
                for d in (members, held)
                for nll in task.token_nlls(model, d)
            ]
        )
        is_member = np.r_[np.ones(len(members)), np.zeros(len(held))]
        return auc(*roc(scores, is_member)), scores

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        gen = getattr(task, "generate", None)
        tok = getattr(task, "tokenizer", None)
        if gen is None or tok is None or not hasattr(task, "token_nlls"):
            raise TypeError(f"muse needs the LM Task (generate, tokenizer, token_nlls); got {task}")
        metrics: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        notes: list[str] = []

        # 1. KnowMem: ROUGE-L F1 of greedy answers on forget and retain questions.
        for name, keys, fallback in (
            ("forget", ("forget_qa",), splits.forget),
            ("retain", ("retain_qa",), splits.retain),
        ):
            qa, _ = qa_rows(splits, keys, fallback)
            if qa is None:
                notes.append(f"knowmem.{name}: no {name} questions in this benchmark; skipped")
                continue
            qa = subsample(qa, self.max_examples, ctx.seed, name)
            answers = gen(
                unlearned, list(qa.prompts), max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
            )  # fmt: skip
            r = rouge_l(answers, list(qa.targets), kind="fmeasure")
            metrics |= {f"knowmem.{name}": float(r.mean()), f"n.knowmem.{name}": float(len(r))}
            arrays |= {f"knowmem.{name}.rouge": r, f"knowmem.{name}.idx": np.asarray(qa.idx)}

        # 2. VerbMem: continue forget passages from their first tokens, as plain text.
        rows = passage_rows(splits.forget)
        if len(rows):
            passages = subsample(
                splits.forget.subset(rows), self.max_passages, ctx.seed, "passages"
            )
            prefixes, truth, counts = verbmem_pairs(
                passages, tok, prefix_tokens=self.prefix_tokens,
                continuation_tokens=self.verbmem_new_tokens,
            )  # fmt: skip
        else:
            prefixes = []
        if prefixes:
            out = gen(
                unlearned, prefixes, max_new_tokens=max(counts), batch_size=self.batch_size,
                raw=True,
            )  # fmt: skip
            r = rouge_l(_truncate(out, counts, tok), truth, kind="fmeasure")
            metrics |= {"verbmem.forget": float(r.mean()), "n.verbmem": float(len(r))}
            arrays["verbmem.forget.rouge"] = r
        else:
            notes.append("verbmem: the forget set has no plain-text passages; skipped")

        # 3. PrivLeak: Min-K% AUC, forget vs held-out, relative to the retrain oracle's AUC.
        held = next(
            (splits.extra[k] for k in ("holdout", "holdout_qa") if k in splits.extra), splits.test
        )
        if len(splits.forget) == 0 or held is None or len(held) == 0:
            raise ValueError(
                "muse's PrivLeak needs forget rows and held-out rows (splits.extra['holdout'], "
                "['holdout_qa'] or splits.test); this benchmark gives an empty set"
            )
        # Members of the same kind as the held-out rows (questions, or plain text): lm-world
        # forgets QA and biographies but holds out QA only, and a bio-vs-QA AUC would measure
        # the kind of text, not membership.
        kinds = {bool(p) for p in held.prompts}  # held-out rows: questions, plain text, or both
        members = splits.forget
        if len(kinds) == 1:
            same = np.flatnonzero([bool(p) in kinds for p in members.prompts])
            if 0 < len(same) < len(members):
                members = members.subset(same)
        members = subsample(members, self.max_examples, ctx.seed, "mia-forget")
        held = subsample(held, self.max_examples, ctx.seed, "mia-holdout")
        auc_u, scores = self._mia(unlearned, members, held, task)
        oracle, why = retrain_oracle(splits, ctx)
        if oracle is None:
            auc_ref = 0.5
            notes.append(f"privleak relative to AUC 0.5 (OpenUnlearning's fallback): {why}")
        else:
            auc_ref = auc_u if oracle is unlearned else self._mia(oracle, members, held, task)[0]
        auc_o = auc_u if original is unlearned else self._mia(original, members, held, task)[0]
        leak = privleak(auc_u, auc_ref)
        metrics |= {
            "mia.auc": auc_u,
            "mia.auc_oracle": auc_ref,
            "mia.auc_original": auc_o,
            "privleak": leak,
            "privleak_pct": 100.0 * leak,
            "n.mia.forget": float(len(members)),
            "n.mia.holdout": float(len(held)),
        }
        arrays |= {
            "mia.scores": scores,
            "mia.is_member": np.r_[np.ones(len(members)), np.zeros(len(held))].astype(np.int8),
        }
        notes.append(
            f"Min-K% (k = {self.k:g}, last token dropped): {len(members)} forget vs {len(held)} "
            "held-out rows"
        )
        return Report("muse", metrics, arrays=arrays, notes=notes)
