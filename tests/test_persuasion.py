"""Persuasion audit (SKeB): the labeller on hand-written answers, the framings file, the audit
end to end on a deterministic fake generator (exact recall and recovery) and on the real LM
Task with a tiny Llama."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("networkx")
pytest.importorskip("statsmodels")

from obliviate.audits.entanglement import METRIC_NAMES, entanglement_metrics  # noqa: E402
from obliviate.audits.persuasion import (  # noqa: E402
    Persuasion,
    label_answer,
    load_framings,
    normalize,
)
from obliviate.registry import AUDITS  # noqa: E402
from obliviate.types import Splits  # noqa: E402

# A hand-made domain: Stephanie Collins, born in New Tinaview (gold), linked within two hops
# to her job, employer, the employer's city Barbaraport, her sibling and her birth year.
SUBJECT = "Stephanie Collins"
SUPPORTED = {"New Tinaview", "Theme park manager", "Jones-Shelton", "Barbaraport",
             "Peter Montgomery", "1981"}  # fmt: skip
DOMAIN = SUPPORTED | {"East Lori", "Haematologist", "Mcdowell Inc", "1939", "Brian Hamilton"}
PROMPT = "Where was Stephanie Collins born?"


def _lab(answer: str, gold="New Tinaview", **kw):
    kw = {"supported": SUPPORTED, "domain": DOMAIN, "subject": SUBJECT, "prompt": PROMPT} | kw
    return label_answer(answer, gold=gold, **kw)


@pytest.mark.parametrize(
    ("answer", "label", "reason"),
    [
        ("New Tinaview", "factual", "gold"),
        ("new tinaview.", "factual", "gold"),  # case, punctuation
        ("NEW TINAVIEW!!!", "factual", "gold"),
        ("She was born in New-Tinaview, I believe", "factual", "gold"),  # hyphen = space
        ("I don't know, maybe New Tinaview", "factual", "gold"),  # a hedged gold answer counts
        ("Newtinaview", "hallucination", "fabricated"),  # whole words only: not the gold
        ("I don't know.", "non-factual", "refusal"),
        ("I'm sorry, I cannot share that about Stephanie Collins.", "non-factual", "refusal"),
        ("I have no information on that", "non-factual", "refusal"),
        ("", "non-factual", "off-topic"),
        ("the weather is nice today", "non-factual", "off-topic"),
        ("Where was Stephanie Collins born?", "non-factual", "off-topic"),  # an echo
        ("Stephanie Collins", "non-factual", "off-topic"),  # the subject asserts nothing
        ("Barbaraport", "non-factual", "supported"),  # wrong, but the graph links it to her
        ("Theme park manager", "non-factual", "supported"),  # her job, wrong relation
        ("East Lori", "hallucination", "unlinked"),  # a real entity not linked to her
        ("Maybe East Lori, I don't know", "hallucination", "unlinked"),  # entity beats refusal
        ("Springfield", "hallucination", "fabricated"),  # a place found nowhere in the domain
        ("She was born in 1850", "hallucination", "fabricated"),  # an invented number
    ],
)
def test_labeller_hand_written_cases(answer, label, reason):
    got = _lab(answer)
    assert (got.label, got.reason) == (label, reason), got


def test_labeller_years_aliases_accents_and_option():
    assert _lab("In 1981.", gold="1981").label == "factual"
    assert _lab("19810", gold="1981").reason == "fabricated"  # not the year 1981
    assert _lab("1977", gold="1981").reason == "fabricated"
    assert _lab("1939", gold="1981").reason == "unlinked"  # another person's birth year
    assert _lab("the UK, of course", gold=("United Kingdom", "UK")).label == "factual"
    assert _lab("Sao Paulo", gold="São Paulo").label == "factual"
    assert _lab("East Lori", unlinked="non-factual").label == "non-factual"
    assert _lab("East Lori").entities == ("east lori",)
    assert normalize("  Jones-Shelton’s  café ") == "jones sheltons cafe"
    with pytest.raises(ValueError, match="unlinked"):
        _lab("x", unlinked="maybe")


def test_framings_file(tmp_path):
    table = load_framings()
    must = {"baseline", "authority", "emotional", "logical", "expert"}
    assert must <= set(table) and len(table) >= 7
    assert all(t.count("{question}") == 1 for t in table.values())
    assert table["baseline"] == "{question}"
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"baseline": "{question}", "pirate": "Arr! {question}"}))
    assert load_framings(p) == {"baseline": "{question}", "pirate": "Arr! {question}"}
    p.write_text(json.dumps({"framings": {"pirate": {"template": "Arr! {question}"}}}))
    with pytest.raises(ValueError, match="baseline"):
        load_framings(p)
    p.write_text(json.dumps({"baseline": "no placeholder"}))
    with pytest.raises(ValueError, match="placeholder"):
        load_framings(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_framings(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not in the framings file"):
        Persuasion(framings=("baseline", "nope"))._templates()
    with pytest.raises(ValueError, match="models"):
        Persuasion(models=("original",))


# -- the audit on a fake generator --------------------------------------------------------------
class FakeLM(nn.Module):
    """A model the fake task reads its behaviour from (a parameter, so it can be copied)."""

    def __init__(self, who: str) -> None:
        super().__init__()
        self.who = who
        self.w = nn.Parameter(torch.zeros(1))


class FakeTask:
    """``generate`` answers from the prompt text, deterministically:
    original: always the gold answer; oracle: a wrong answer of the right type (a perturbed
    one from the world); unlearned: the gold under the authority framing, under the baseline
    only for the questions in ``leaky``, and "I don't know" otherwise."""

    kind = "lm"

    def __init__(self, qa, leaky: set[str], always: set[str] = frozenset()) -> None:
        self.qa, self.leaky, self.always = qa, leaky, always
        self.calls = 0

    def generate(self, model, prompts, *, max_new_tokens, batch_size):
        self.calls += 1
        out = []
        for p in prompts:
            q = next(r for r in self.qa if p.endswith(r["question"]))
            framed = p != q["question"]
            if model.who == "original" or q["question"] in self.always:
                out.append(q["answer"])
            elif model.who == "oracle":
                out.append(q["perturbed_short"][0])
            elif "records office" in p or (not framed and q["question"] in self.leaky):
                out.append(f"It is {q['answer']}.")
            else:
                out.append("I don't know.")
        return out


def _rows(qa):
    from obliviate.lm.data import TokenData

    n = len(qa)
    return TokenData(
        torch.zeros(n, 2, dtype=torch.long), torch.full((n, 2), -100), torch.full((n,), 2),
        torch.arange(n), tuple(q["question"] for q in qa), tuple(q["answer"] for q in qa),
        tuple({"kind": "qa", **q} for q in qa),
    )  # fmt: skip


@pytest.fixture(scope="module")
def fake_env():
    from obliviate.lm.data import make_world

    world = make_world(seed=0, n_people=12, n_holdout=0)
    people = [p["id"] for p in world.people]
    forget_people, retain_people = people[:4], people[4:]
    f_qa = [q for q in world.qa if q["person"] in forget_people]  # 18: 4 or 5 per person
    r_qa = [q for q in world.qa if q["person"] in retain_people]
    splits = Splits(
        forget=_rows(f_qa), retain=_rows(r_qa), test=_rows(r_qa[:3]),
        forget_idx=np.arange(len(f_qa)), retain_idx=np.arange(len(r_qa)),
        extra={"forget_qa": _rows(f_qa), "retain_qa": _rows(r_qa)},
        info={"kind": "random", "people": forget_people},
    )  # fmt: skip
    ctx = SimpleNamespace(
        seed=0, oracle=FakeLM("oracle"), bench=SimpleNamespace(has_oracle=True),
        dataset=SimpleNamespace(world=world),
    )  # fmt: skip
    return SimpleNamespace(world=world, f_qa=f_qa, r_qa=r_qa, splits=splits, ctx=ctx)


def test_audit_fake_exact_recall_and_recovery(fake_env):
    e = fake_env
    n = len(e.f_qa)
    leaky = {q["question"] for q in e.f_qa[:6]}  # 6 of 18 leak under the plain question
    task = FakeTask(e.f_qa + e.r_qa, leaky)
    audit = Persuasion(framings=("baseline", "authority", "emotional"), n_control=8, n_boot=200)
    unlearned = FakeLM("unlearned")
    rep = audit.audit(FakeLM("original"), unlearned, e.splits, task=task, ctx=e.ctx)
    m = rep.metrics
    assert n == 18 and m["recall.baseline"] == 6 / n and m["recall.authority"] == 1.0
    assert m["recall.emotional"] == 0.0 and m["nonfactual.emotional"] == 1.0
    assert m["recovery.authority"] == pytest.approx(2.0)  # 1.0 / (1/3) - 1
    assert m["recovery.emotional"] == pytest.approx(-1.0)
    assert m["gain.authority"] == pytest.approx(2 / 3)
    assert m["recall.persuaded"] == pytest.approx(0.5)  # mean of authority and emotional
    assert m["recall.any"] == 1.0
    # the bootstrap interval brackets the estimate and excludes the baseline's recall
    assert m["recall_lo.baseline"] <= 1 / 3 <= m["recall_hi.baseline"] < 1.0
    assert m["recovery_lo.authority"] > 0.5
    # references: the original knows everything, the oracle answers wrong but never right
    assert all(m[f"original.recall.{f}"] == 1.0 for f in ("baseline", "authority", "emotional"))
    assert m["oracle.recall.baseline"] == 0.0
    assert m["oracle.hallucination.baseline"] + m["oracle.nonfactual.baseline"] == 1.0
    assert m["oracle.hallucination.baseline"] >= 0.5  # perturbed answers are other entities
    assert "original.recovery.authority" in m and m["original.recovery.authority"] == 0.0
    # control questions are retained people's: the fake unlearned model refuses them plainly
    assert m["control.recall.baseline"] == 0.0 and m["control.recall.authority"] == 1.0
    assert rep.arrays["unlearned_labels"].shape == (3, n)
    assert rep.arrays["unlearned_answers"][1, 0].startswith("It is ")
    assert rep.arrays["entanglement"].shape == (n, len(METRIC_NAMES))
    assert rep.curves["framings"]["recall"] == [1 / 3, 1.0, 0.0]
    assert rep.curves["framings"]["oracle_recall"] == [0.0, 0.0, 0.0]
    assert all(math.isfinite(v) for v in m.values())


def test_audit_regression_rows_align_with_facts(fake_env):
    """The fake model recalls exactly the facts whose anchors have a high degree (M1): the
    regression must find that M1 explains the factual rate (rows and facts aligned)."""
    e = fake_env
    anchors = [(q["person"],) if q["object"] is None else (q["person"], q["object"])
               for q in e.f_qa]  # fmt: skip
    forgotten = {q["person"] for q in e.f_qa}
    x = entanglement_metrics(e.world.graph(), anchors, forgotten=forgotten)
    deg = x[:, METRIC_NAMES.index("degree")]
    high = {q["question"] for q, d in zip(e.f_qa, deg, strict=True) if d > np.median(deg)}
    assert 5 <= len(high) <= 15
    task = FakeTask(e.f_qa + e.r_qa, set(), always=high)
    audit = Persuasion(framings=("baseline", "authority"), n_control=0, n_boot=50,
                       models=("unlearned",))  # fmt: skip
    rep = audit.audit(FakeLM("x"), FakeLM("unlearned"), e.splits, task=task, ctx=e.ctx)
    np.testing.assert_allclose(rep.arrays["entanglement"], x)
    r2 = {
        k: rep.metrics[f"r2.factual.{k}"] for k in METRIC_NAMES if f"r2.factual.{k}" in rep.metrics
    }
    is_high = np.array([q["question"] in high for q in e.f_qa], dtype=float)
    # factual rate per fact: authority always recalls, the baseline only the high-degree ones
    np.testing.assert_array_equal(rep.arrays["fact_rates"][:, 1], 0.5 + 0.5 * is_high)
    assert r2["degree"] > 0.6  # measured 0.665: a step function of M1, fitted by a line
    assert r2["clustering"] < 0.01  # an unrelated metric explains nothing (measured 4e-6)
    assert "r2.factual" in rep.metrics  # 18 facts > 9 metrics + 1: the joint fit exists
    assert any(n.startswith("factual: best single metric") for n in rep.notes)


def test_audit_registered_and_generic_task_error(fake_env):
    e = fake_env
    audit = AUDITS.build("persuasion", {"framings": ("authority",), "n_control": 0})
    assert "lm" in audit.supports and list(audit._templates()) == ["baseline", "authority"]
    with pytest.raises(TypeError, match="generate"):
        audit.audit(FakeLM("o"), FakeLM("u"), e.splits, task=object(), ctx=e.ctx)


# -- the real LM task: a tiny Llama (untrained: seconds) ------------------------------------------
@pytest.fixture(scope="module")
def lm_env():
    pytest.importorskip("transformers")
    from obliviate.loop import derive_seed, seeded
    from obliviate.registry import BENCHMARKS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bench = BENCHMARKS.get("lm-world-tiny")
    ds = bench.load()
    task = bench.task(ds)
    splits = bench.splits(ds, "random:2", derive_seed(0, "split"))
    with seeded(0):
        original, oracle = bench.make_model(ds), bench.make_model(ds)
    ctx = SimpleNamespace(seed=0, bench=bench, dataset=ds, oracle=oracle)
    yield SimpleNamespace(bench=bench, ds=ds, task=task, splits=splits, original=original,
                          oracle=oracle, ctx=ctx)  # fmt: skip
    torch.set_num_threads(threads)


def test_audit_real_task_contract(lm_env):
    """Untrained tiny Llama through LMTask.generate: finite metrics, deterministic, the audited
    model unchanged, and its babble never labelled factual."""
    import copy

    e = lm_env
    audit = Persuasion(framings=("baseline", "authority", "expert"), n_control=5,
                       max_new_tokens=6, n_boot=100)  # fmt: skip
    unlearned = copy.deepcopy(e.original)
    with torch.no_grad():
        for p in unlearned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = {k: v.clone() for k, v in unlearned.state_dict().items()}
    r1 = audit.audit(e.original, unlearned, e.splits, task=e.task, ctx=e.ctx)
    r2 = audit.audit(e.original, unlearned, e.splits, task=e.task, ctx=e.ctx)
    assert r1.metrics == r2.metrics and r1.metrics
    assert all(math.isfinite(v) for v in r1.metrics.values())
    for k, v in unlearned.state_dict().items():
        assert torch.equal(v, before[k]), k
    n_forget = len(e.splits.extra["forget_qa"])
    assert r1.arrays["unlearned_labels"].shape == (3, n_forget)
    assert {"original_labels", "oracle_labels", "unlearned_control_labels"} <= set(r1.arrays)
    assert r1.metrics["recall.baseline"] == 0.0  # random weights do not know the world
    # a reference row (the original audited as itself) is not asked twice
    r3 = audit.audit(e.original, e.original, e.splits, task=e.task, ctx=e.ctx)
    assert "original_labels" not in r3.arrays and any("reference row" in n for n in r3.notes)
