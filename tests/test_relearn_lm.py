"""Relearning attack on a language model (lm-world-tiny): after gradient ascent, LoRA fine-tuning
on 4 forget facts brings the 6 others back, and benign retain fine-tuning brings some back; the
retrain oracle, which never knew them, gains nothing either way."""

from __future__ import annotations

import numpy as np
import pytest

from obliviate.audits.relearn import Relearn, exact_match
from obliviate.loop import seeded
from obliviate.registry import METHODS
from obliviate.types import Budget

SERIES = ("forget_prob", "forget_em", "mia_auc", "retain_prob")


@pytest.fixture(scope="module")
def ascended(lm_tiny):
    """Gradient ascent (grad-diff with alpha 0) at lr 3e-4 for 15 full-batch steps: forget-QA
    answer probability 0.72 -> 0.28, below the oracle's 0.34 (retain 0.73 -> 0.47)."""
    s = lm_tiny.splits
    method = METHODS.build(
        "grad-diff", {"lr": 3e-4, "alpha": 0.0, "batch_size": 10, "epochs": 15.0}
    )
    with seeded(0):
        model = method.unlearn(
            lm_tiny.fresh(), s.extra["forget_qa"], s.extra["retain_qa"], task=lm_tiny.task,
            budget=Budget(max_steps=15),
        )  # fmt: skip
    return model.eval()


def test_exact_match_normalises_case_and_punctuation(lm_tiny):
    forget = lm_tiny.splits.extra["forget_qa"].subset(np.arange(2))
    gold = list(forget.targets)
    got = exact_match([gold[0].upper() + ".", gold[1] + " and more"], forget)
    np.testing.assert_array_equal(got, [1.0, 0.0])


def test_samples_bring_back_the_other_forget_facts_after_ascent_not_on_the_oracle(
    lm_tiny, ascended
):
    before = {k: v.clone() for k, v in ascended.state_dict().items()}
    audit = Relearn(steps=(0, 10, 25, 50), settings=("samples",))  # 4 facts, LoRA r 8, lr 1e-3
    with seeded(0):
        rep = audit.audit(lm_tiny.original, ascended, lm_tiny.splits, task=lm_tiny.task,
                          ctx=lm_tiny.ctx)  # fmt: skip
    c, m = rep.curves["samples"], rep.metrics
    assert c["steps"] == [0.0, 10.0, 25.0, 50.0]
    assert set(c) == {"steps", *SERIES, *(f"oracle_{k}" for k in SERIES)}  # the report's layout
    # measured on the 6 held-back facts: grad-ascent 0.418 -> 0.489 -> 0.566 -> 0.647, the
    # oracle 0.472 -> 0.461 -> 0.422 -> 0.401: ascent starts below the oracle and ends far above
    assert c["forget_prob"][0] < c["oracle_forget_prob"][0]
    assert c["forget_prob"][-1] - c["forget_prob"][0] > 0.15  # measured +0.229
    assert c["oracle_forget_prob"][-1] - c["oracle_forget_prob"][0] < 0.05  # measured -0.071
    assert (np.diff(c["forget_prob"]) > 0).all()
    assert m["samples_gap"] > 0.15  # measured 0.246
    assert m["samples_area_gap"] > 0.05  # measured 0.120
    assert m["samples_gap"] == pytest.approx(c["forget_prob"][-1] - c["oracle_forget_prob"][-1])
    assert all(0.0 <= v <= 1.0 for k in SERIES for v in c[k] + c[f"oracle_{k}"])
    assert len(rep.arrays["relearn_forget_idx"]) == 4
    assert set(rep.arrays["relearn_forget_idx"]) <= set(lm_tiny.splits.forget_idx.tolist())
    # the audit fine-tuned copies: the audited model is untouched and carries no LoRA
    assert all(v.equal(before[k]) for k, v in ascended.state_dict().items())
    assert not any("lora" in k for k in ascended.state_dict())


def test_benign_retain_finetuning_brings_some_back_after_ascent_not_on_the_oracle(
    lm_tiny, ascended
):
    audit = Relearn(steps=(0, 25), settings=("benign",))
    with seeded(0):
        rep = audit.audit(lm_tiny.original, ascended, lm_tiny.splits, task=lm_tiny.task,
                          ctx=lm_tiny.ctx)  # fmt: skip
    c = rep.curves["benign"]
    # measured on all 10 forget facts: grad-ascent 0.281 -> 0.430, the oracle 0.335 -> 0.334
    assert c["forget_prob"][-1] - c["forget_prob"][0] > 0.08
    assert abs(c["oracle_forget_prob"][-1] - c["oracle_forget_prob"][0]) < 0.02
    assert rep.metrics["benign_gap"] > 0.05  # measured 0.096
    # the retain fine-tune also repairs ascent's collateral damage: 0.47 -> 0.70 measured
    assert c["retain_prob"][-1] > c["retain_prob"][0] + 0.1


def test_the_oracle_row_is_its_own_reference_and_full_finetuning_works(lm_tiny):
    audit = Relearn(steps=(0, 2), lora_r=0)  # every weight, both settings
    rep = audit.audit(lm_tiny.original, lm_tiny.oracle, lm_tiny.splits, task=lm_tiny.task,
                      ctx=lm_tiny.ctx)  # fmt: skip
    for setting in ("benign", "samples"):
        assert rep.metrics[f"{setting}_gap"] == 0.0
        c = rep.curves[setting]
        assert c["forget_prob"] == c["oracle_forget_prob"]
        assert c["forget_prob"][1] != c["forget_prob"][0]  # two steps moved the weights
    assert "LoRA" not in rep.notes[0]


def test_bad_parameters_are_refused(lm_tiny):
    n = len(lm_tiny.splits.extra["forget_qa"])
    for params in ({"n_samples": n}, {"lora_r": -1}, {"steps": ()}):
        with pytest.raises(ValueError):
            Relearn(**params).audit(lm_tiny.original, lm_tiny.oracle, lm_tiny.splits,
                                    task=lm_tiny.task, ctx=lm_tiny.ctx)  # fmt: skip
