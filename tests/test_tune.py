"""tune.py: 2 Optuna trials on the tiny suite write a TOML recipe that run_suite picks up; the
study resumes from SQLite; search spaces; the budget; a clear error without Optuna."""

from __future__ import annotations

import sys
import tomllib

import pytest

from obliviate import tune as tune_mod
from obliviate.bench.grid import plan_suite, read_tuned
from obliviate.tune import Dim, search_space, tune

pytest.importorskip("optuna")


def test_two_trials_on_tiny_write_a_recipe_run_suite_uses(tmp_path, tiny):
    runs, cache = tmp_path / "runs", tiny.cache.root  # seed 0's original and oracle, cached
    out = tune("tiny", method="finetune", trials=2, runs_dir=runs, cache_dir=cache)
    toml = tmp_path / "tuned" / "tiny" / "finetune.toml"
    assert out["toml"] == str(toml) and toml.exists()
    assert (tmp_path / "tuned" / "tiny" / "finetune.db").exists()  # the study, in SQLite
    data = tomllib.loads(toml.read_text())
    assert set(data["params"]) == {"lr", "epochs"} and data["params"] == out["params"]
    # trial 0 is the defaults, so the best is never worse than them
    assert out["value"] <= out["default_value"] + 1e-12
    assert 0.0 <= out["value"] <= 1.0 and out["n_trials"] == 2
    # 25% of the oracle's 285 training steps on tiny
    assert out["max_steps"] == [72]
    spec = next(s for s in plan_suite("tiny", seeds=(0,), runs_dir=runs) if s.method == "finetune")
    assert dict(spec.params) == read_tuned(toml) == out["params"]
    again = tune("tiny", method="finetune", trials=1, runs_dir=runs, cache_dir=cache)
    assert again["n_trials"] == 3  # the stored study continued


def test_search_spaces():
    ft = search_space("finetune")
    assert set(ft) == {"lr", "epochs"} and ft["lr"].kind == "log"
    assert set(search_space("finetune", exclude=("epochs",))) == {"lr"}
    ga = search_space("grad-ascent")
    assert ga["lr"].low <= 2e-4 <= ga["lr"].high  # ranges include the method's default
    assert Dim("log", 1e-3, 1e-2).widened(0.05) == Dim("log", 1e-3, 0.05)


def test_methods_without_an_entry_get_lr_and_epochs(monkeypatch):
    monkeypatch.delitem(tune_mod.SEARCH_SPACES, "finetune")
    sp = search_space("finetune")  # defaults lr 0.01, epochs 1.0
    assert sp["lr"] == Dim("log", 0.001, 0.1) and sp["epochs"] == Dim("float", 0.25, 4.0)


def test_over_budget_trials_do_not_count(tmp_path, tiny):
    with pytest.raises(RuntimeError, match="budget"):
        tune("tiny", method="finetune", trials=1, runs_dir=tmp_path / "runs",
             cache_dir=tiny.cache.root, budget_fraction=0.001)  # fmt: skip


def test_bad_requests(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="trials"):
        tune("tiny", method="finetune", trials=0)
    with pytest.raises(ValueError, match="Did you mean"):
        tune("tiny", method="fine-tune", trials=1, runs_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"obliviate\[tune\]"):
        tune("tiny", method="finetune", trials=1, runs_dir=tmp_path)
