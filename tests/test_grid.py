"""bench/grid.py: suite definitions, planning (registry filtering, tuned recipes, overrides),
and run_suite reusing finished folders and carrying on past a failing run."""

from __future__ import annotations

import logging

import pytest

from obliviate.bench import grid
from obliviate.bench.grid import SUITES, Suite, plan_suite, run_suite, tuned_path
from obliviate.registry import AUDITS, BENCHMARKS, METHODS


def test_every_suite_is_defined():
    for name in ("tiny", "fmnist-class", "fmnist-random10", "fmnist-subclass",
                 "free-unlearning", "overparam"):  # fmt: skip
        s = SUITES[name]
        assert isinstance(s, Suite) and s.name == name and s.description
        assert s.methods and s.seeds and s.benchmarks
    assert SUITES["tiny"].methods == ("finetune", "grad-ascent")
    assert "mia-nn" in SUITES["fmnist-class"].audits
    assert "mia-nn" not in SUITES["fmnist-random10"].audits  # a class-request attack
    assert "influence-prune" in SUITES["free-unlearning"].methods


def test_plan_tiny_filters_to_registered_audits():
    specs = plan_suite("tiny")
    assert [(s.method, s.seed) for s in specs] == [
        ("finetune", 0), ("grad-ascent", 0), ("finetune", 1), ("grad-ascent", 1)
    ]  # fmt: skip
    for s in specs:
        assert s.benchmark == "tiny" and s.params == {}
        assert set(s.audits) <= set(SUITES["tiny"].audits)
        assert all(a in AUDITS for a in s.audits) and "accuracy" in s.audits


def test_unregistered_entries_are_skipped_and_logged(monkeypatch, caplog):
    monkeypatch.setitem(
        SUITES, "t-missing",
        Suite("t-missing", benchmarks=(("tiny", None),), methods=("finetune", "not-yet-written"),
              seeds=(0,), audits=("accuracy", "not-an-audit")),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="obliviate.bench.grid"):
        specs = plan_suite("t-missing")
    assert [s.method for s in specs] == ["finetune"] and specs[0].audits == ("accuracy",)
    assert "not-yet-written" in caplog.text and "not-an-audit" in caplog.text


def test_planning_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        plan_suite("tinyy")
    with pytest.raises(ValueError, match="Did you mean 'finetune'"):
        plan_suite("tiny", methods=["fine-tune"])
    with pytest.raises(ValueError, match="not in this suite run"):
        plan_suite("tiny", methods=["finetune"], params={"grad-ascent": {"lr": 0.1}})
    monkeypatch.setitem(
        SUITES, "t-glob",
        Suite("t-glob", benchmarks=(("nothing-here-*", None),), methods=("finetune",),
              seeds=(0,), audits=None),
    )  # fmt: skip
    with pytest.raises(ValueError, match="nothing-here-"):
        plan_suite("t-glob")


def test_overparam_suite_needs_its_benchmarks():
    if any(b.startswith("overparam-") for b in BENCHMARKS.names()):
        specs = plan_suite("overparam")  # the methods supporting their Task kind, if any yet
        assert all(s.benchmark.startswith("overparam-") for s in specs)
    else:
        with pytest.raises(ValueError, match="overparam-"):
            plan_suite("overparam")


def test_variants_and_inner_methods(monkeypatch):
    monkeypatch.setitem(
        SUITES, "t-var",
        Suite("t-var", benchmarks=(("tiny", None),), methods=("finetune",), seeds=(0,),
              audits=("accuracy",), variants={"finetune": ({"lr": 0.1}, {"lr": 0.2},
                                                          {"inner": "no-such"})}),
    )  # fmt: skip
    specs = plan_suite("t-var")
    assert [s.params for s in specs] == [{"lr": 0.1}, {"lr": 0.2}]  # unknown inner: skipped
    if "influence-prune" in METHODS and "salun" in METHODS:
        fu = plan_suite("free-unlearning", seeds=(0,))
        qs = sorted(s.params["q"] for s in fu if s.method == "influence-prune")
        assert qs == [0.25, 0.5, 0.75]


def test_tuned_recipes_are_used_and_params_override_them(tmp_path):
    runs = tmp_path / "runs"
    path = tuned_path("tiny", "finetune", runs_dir=runs)
    assert path == tmp_path / "tuned" / "tiny" / "finetune.toml"
    path.parent.mkdir(parents=True)
    path.write_text('suite = "tiny"\n\n[params]\nlr = 0.02\nepochs = 2.0\n')
    specs = plan_suite("tiny", seeds=(0,), runs_dir=runs)
    ft = next(s for s in specs if s.method == "finetune")
    assert dict(ft.params) == {"lr": 0.02, "epochs": 2.0}
    assert next(s for s in specs if s.method == "grad-ascent").params == {}
    specs = plan_suite("tiny", seeds=(0,), runs_dir=runs, params={"finetune": {"lr": 0.05}})
    assert dict(specs[0].params) == {"lr": 0.05, "epochs": 2.0}  # key by key
    path.write_text("[params\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        plan_suite("tiny", runs_dir=runs)


def test_run_suite_reuses_finished_runs_and_survives_a_failure(tmp_path, caplog, tiny):
    kw = dict(seeds=(0,), runs_dir=tmp_path / "runs", cache_dir=tiny.cache.root, progress=False)
    with caplog.at_level(logging.ERROR, logger="obliviate.bench.grid"):
        res = run_suite("tiny", params={"grad-ascent": {"no_such_knob": 1}}, **kw)
    assert [r.manifest["spec"]["method"] for r in res] == ["finetune"]
    assert len(res.failures) == 1 and "no_such_knob" in res.failures[0][1]
    assert "grad-ascent" in caplog.text  # logged, and the grid went on
    assert (tmp_path / "runs" / "tiny" / "oracle").is_dir()  # references ran with the method
    again = run_suite("tiny", methods=["finetune"], **kw)
    assert len(again) == 1 and again[0].reused and again[0].path == res[0].path


def test_describe_suite_is_plain_data():
    d = grid.describe_suite("tiny")
    assert d["name"] == "tiny" and d["methods"] == ("finetune", "grad-ascent")
