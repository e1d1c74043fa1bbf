"""LM benchmarks: the world generator, deletion requests, the lm-world-tiny fixture, the
modality-free methods on the LM Task, and one end-to-end run."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

import obliviate  # noqa: E402
from obliviate.bench.lm import parse_count  # noqa: E402
from obliviate.bench.runner import RunContext, reference_models  # noqa: E402
from obliviate.lm.data import make_world  # noqa: E402
from obliviate.loop import count_steps, derive_seed, seeded  # noqa: E402
from obliviate.registry import BENCHMARKS, METHODS  # noqa: E402
from obliviate.store import ModelCache  # noqa: E402
from obliviate.types import Budget  # noqa: E402

# Modality-free methods that run unchanged on the LM Task (their `supports` gets "lm" next).
MODALITY_FREE = ("finetune", "grad-ascent")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny Llamas gain nothing from a second thread, and on a loaded 2-core machine two
    OpenMP threads per process thrash (the fixture took minutes instead of ~20 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm_tiny(tmp_path_factory, one_thread):
    """lm-world-tiny: original and oracle (2-layer Llama on 16 people), forget 2 people."""
    root = tmp_path_factory.mktemp("lm-cache")
    bench = BENCHMARKS.get("lm-world-tiny")
    ds = bench.load()
    task = bench.task(ds)
    splits = bench.splits(ds, "random:2", derive_seed(0, "split"))
    cache = ModelCache(root)
    (original, _), (oracle, _) = reference_models(
        bench, ds, task, cache, splits=splits, seed=0, progress=False
    )
    ctx = RunContext(
        seed=0, bench=bench, dataset=ds, task=task, splits=splits, method=None,
        budget=bench.budget(), cache=cache, oracle=oracle, progress=False,
    )  # fmt: skip
    return SimpleNamespace(
        bench=bench, ds=ds, task=task, splits=splits, cache=cache, root=root, original=original,
        oracle=oracle, ctx=ctx, fresh=lambda: copy.deepcopy(original),
    )  # fmt: skip


def test_world_is_deterministic_and_graph_matches_qa():
    a = make_world(seed=5, n_people=12, n_holdout=3)
    b = make_world(seed=5, n_people=12, n_holdout=3)
    assert a.to_json() == b.to_json()
    assert make_world(seed=6, n_people=12, n_holdout=3).to_json() != a.to_json()
    g = a.graph()
    names = {n["id"]: n["name"] for n in a.nodes}
    assert len({p["name"] for p in a.people}) == 15  # distinct people
    for q in a.qa:
        assert q["answer"] not in q["perturbed_short"]
        assert len(q["perturbed_answers"]) == 3
        if q["object"] is None:  # an attribute of the person node
            assert str(g.nodes[q["person"]][q["relation"]]) == q["answer"]
        else:  # an edge of the graph
            assert g.has_edge(q["person"], q["object"], key=q["relation"])
            assert names[q["object"]] == q["answer"]
    # siblings are symmetric and never cross the trained/held-out boundary
    hold = {p["id"]: p["holdout"] for p in a.people}
    for s, o, rel in a.edges:
        if rel == "sibling_of":
            assert g.has_edge(o, s, key="sibling_of") and hold[s] == hold[o]
    assert a.from_json(a.to_json()).to_json() == a.to_json()


def test_forget_rules_and_bad_requests():
    assert parse_count("random:10%", 200, unit="people") == (20, "random:10%")
    assert parse_count("random:0.05", 200, unit="people") == (10, "random:5%")
    assert parse_count("random:3", 200, unit="people") == (3, "random:3")
    with pytest.raises(ValueError, match="empty"):
        parse_count("random:1%", 16, unit="people")
    with pytest.raises(ValueError, match="nothing would be retained"):
        parse_count("random:100%", 16, unit="people")
    with pytest.raises(ValueError, match="unknown forget rule"):
        parse_count("class:3", 16, unit="people")


def test_splits_forget_whole_people(lm_tiny):
    sp, ds = lm_tiny.splits, lm_tiny.ds
    people = set(sp.info["people"])
    assert len(people) == 2
    assert {m["person"] for m in sp.forget.meta} == people
    assert not people & {m["person"] for m in sp.retain.meta}
    assert len(sp.forget) + len(sp.retain) == len(ds.train)
    assert not {m["person"] for m in sp.test.meta} & {m["person"] for m in ds.train.meta}
    again = lm_tiny.bench.splits(ds, "random:2", derive_seed(0, "split"))
    assert np.array_equal(again.forget_idx, sp.forget_idx)


def test_original_memorised_and_oracle_did_not(lm_tiny):
    t, sp = lm_tiny.task, lm_tiny.splits
    orig_f = t.evaluate(lm_tiny.original, sp.forget)["loss"]
    orac_f = t.evaluate(lm_tiny.oracle, sp.forget)["loss"]
    orac_r = t.evaluate(lm_tiny.oracle, sp.retain)["loss"]
    # measured (seed 0): original forget 0.34 nats/token, oracle forget 2.70, oracle retain 0.44
    assert orig_f < 0.6 and orac_r < 0.6
    assert orac_f > orig_f + 1.0


def _lm_methods():
    names = [n for n in METHODS.names() if "lm" in METHODS.get(n).supports]
    return sorted(set(names) | set(MODALITY_FREE))


@pytest.fixture
def lm_supported(monkeypatch):
    for name in MODALITY_FREE:
        cls = METHODS.get(name)
        monkeypatch.setattr(cls, "supports", frozenset(cls.supports) | {"lm"})


@pytest.mark.parametrize("name", _lm_methods())
def test_lm_method_contract(name, lm_tiny, lm_supported):
    """The method contract of tests/test_contracts.py, on the LM Task."""

    def unlearn(seed=0):
        model = lm_tiny.fresh().train()
        with seeded(seed), count_steps() as c:
            out = METHODS.build(name, {}).unlearn(
                model, lm_tiny.splits.forget, lm_tiny.splits.retain, task=lm_tiny.task,
                budget=Budget(max_steps=3),
            )  # fmt: skip
        return out, c.steps

    model, steps = unlearn()
    assert steps <= 3
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.isfinite(v).all(), k
    again, _ = unlearn()
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_grad_ascent_raises_forget_loss(lm_tiny, lm_supported):
    t, sp = lm_tiny.task, lm_tiny.splits
    # measured (seed 0): forget loss 0.34 -> 7.5 nats/token with these settings
    model = METHODS.build("grad-ascent", {"lr": 0.03, "clip": 1.0}).unlearn(
        lm_tiny.fresh(), sp.forget, sp.retain, task=t, budget=Budget(max_steps=None)
    )
    before = t.evaluate(lm_tiny.original, sp.forget)["loss"]
    after = t.evaluate(model, sp.forget)["loss"]
    assert math.isfinite(after) and after > before + 2.0


def test_run_end_to_end(lm_tiny, lm_supported, tmp_path):
    res = obliviate.run(
        obliviate.RunSpec("lm-world-tiny", "grad-ascent", seed=0, audits=()),
        runs_dir=tmp_path / "runs", cache_dir=lm_tiny.root, progress=False,
    )  # fmt: skip
    m = res.manifest
    assert m["status"] == "done" and m["kind"] == "lm"
    assert m["splits"]["unit"] == "people" and len(m["splits"]["people"]) == 2
    assert 0 < m["steps"] <= 10
    # the original and the oracle rows were written too, and came from the fixture's cache
    for row in ("original", "oracle"):
        assert (tmp_path / "runs" / "lm-world-tiny" / row).is_dir()
