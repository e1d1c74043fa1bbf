"""End to end on the tiny benchmark through the Python API: run folders, reuse, budgets,
reproducibility and failures that keep their evidence."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import obliviate
from obliviate.bench.runner import RunFailed
from obliviate.store import RunExistsError, read_run
from obliviate.types import RunSpec


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    return {"runs_dir": root / "runs", "cache_dir": root / "cache", "progress": False}


def test_run_writes_a_complete_folder_with_reference_rows(dirs):
    r = obliviate.run(RunSpec("tiny", "finetune", seed=0), **dirs)
    m = r.manifest
    assert m["status"] == "done"
    assert m["spec"]["forget"] == "class:3"  # the benchmark default, resolved
    assert set(m["seeds"]) >= {"run", "split", "train", "unlearn"}
    assert len(m["splits"]["forget"]) == 16 and m["splits"]["n_forget"] > 0
    assert m["timings"]["unlearn_s"] > 0 and m["timings"]["oracle_train_s"] > 0
    assert m["versions"]["torch"].startswith("2.")
    assert {"accuracy", "mia-efficacy"} <= set(r.reports)
    assert 0.0 <= r.metrics()["accuracy.forget_acc"] <= 1.0
    assert "accuracy.forget_mean_probs" in r.arrays()
    for ref in ("original", "oracle"):
        folders = list((dirs["runs_dir"] / "tiny" / ref).iterdir())
        assert len(folders) == 1
        assert read_run(folders[0])["manifest"]["group"] == m["group"]
    oracle = read_run(next((dirs["runs_dir"] / "tiny" / "oracle").iterdir()))
    assert oracle["report"]["accuracy"]["metrics"]["forget_acc"] < 0.05  # class 3 never seen


def test_existing_run_is_refused_or_reused(dirs):
    spec = RunSpec("tiny", "finetune", seed=0)
    with pytest.raises(RunExistsError, match="--reuse"):
        obliviate.run(spec, **dirs)
    again = obliviate.run(spec, exist="reuse", **dirs)
    assert again.reused and again.manifest["status"] == "done"


def test_equal_hyperparameters_name_the_same_run(dirs):
    # the command line's strings, Python's floats and an int for a float field are one run
    first = obliviate.run(
        RunSpec(
            "tiny", "finetune", params={"lr": "1e-2", "epochs": 1}, seed=0, audits=("accuracy",)
        ),
        **dirs,
    )
    assert first.manifest["spec"]["params"] == {"epochs": 1.0, "lr": 0.01}
    for params in ({"lr": 0.01, "epochs": 1.0}, {"epochs": "1", "lr": 1e-2}):
        spec = RunSpec("tiny", "finetune", params=params, seed=0, audits=("accuracy",))
        with pytest.raises(RunExistsError):
            obliviate.run(spec, **dirs)
        again = obliviate.run(spec, exist="reuse", **dirs)
        assert again.reused and again.path == first.path
    other = RunSpec("tiny", "finetune", params={"lr": 0.02}, seed=0, audits=("accuracy",))
    assert obliviate.run(other, **dirs).path != first.path


def test_budget_is_respected_and_recorded(dirs):
    r = obliviate.run(RunSpec("tiny", "grad-ascent", max_steps=3, audits=("accuracy",)), **dirs)
    assert r.manifest["steps"] == 3
    assert r.manifest["budget"]["max_steps"] == 3


def test_same_seed_same_numbers_in_a_fresh_cache(dirs, tmp_path):
    spec = RunSpec("tiny", "grad-ascent", seed=0, audits=("accuracy",), params={"lr": 0.01})
    a = obliviate.run(spec, **dirs)
    b = obliviate.run(
        spec, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False
    )
    assert a.metrics() == b.metrics()


def test_diverging_method_keeps_its_folder(dirs):
    spec = RunSpec(
        "tiny", "grad-ascent", params={"lr": 1e12, "clip": 0.0, "epochs": 50}, audits=("accuracy",)
    )
    with pytest.raises(RunFailed, match="not finite") as e:
        obliviate.run(spec, **dirs)
    stored = read_run(e.value.path)
    assert stored["manifest"]["status"] == "failed" and "lr" in stored["manifest"]["error"]
    with pytest.raises(RunExistsError, match="failed"):
        obliviate.run(spec, exist="reuse", **dirs)


def test_bad_specs_fail_before_training(tmp_path):
    kw = {"runs_dir": tmp_path / "r", "cache_dir": tmp_path / "c", "progress": False}
    with pytest.raises(ValueError, match="Did you mean"):
        obliviate.run(RunSpec("tiny", "fine-tune"), **kw)
    with pytest.raises(ValueError, match="no hyperparameter"):
        obliviate.run(RunSpec("tiny", "finetune", params={"alpha": 1}), **kw)
    with pytest.raises(ValueError, match="unknown audit"):
        obliviate.run(RunSpec("tiny", "finetune", audits=("acuracy",)), **kw)
    with pytest.raises(ValueError, match="not in this run"):
        obliviate.run(
            RunSpec(
                "tiny", "finetune", audits=("accuracy",), audit_params={"mia-efficacy": {"C": 1}}
            ),
            **kw,
        )
    with pytest.raises(ValueError, match="takes no hyperparameters"):
        obliviate.run(RunSpec("tiny", "oracle", params={"lr": 1}), **kw)
    assert not (tmp_path / "c").exists()  # nothing was trained


def test_import_boundary():
    code = (
        "import sys, obliviate; obliviate.METHODS.names(); obliviate.AUDITS.names(); "
        "obliviate.BENCHMARKS.names(); import obliviate.cli, obliviate.bench.runner; "
        "heavy = ('transformers', 'diffusers', 'matplotlib', 'peft'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_is_plain_json(dirs):
    folder = next((dirs["runs_dir"] / "tiny" / "finetune").iterdir())
    json.loads((folder / "manifest.json").read_text())
    json.loads((folder / "report.json").read_text())
