"""Tune a method's hyperparameters against the retrain oracle with Optuna (``[tune]`` extra).

``tune("fmnist-class", method="salun", trials=30)`` searches the method's hyperparameters for
the smallest gap to the oracle on a *validation* split, under a compute budget, stores the
study in SQLite and writes the best hyperparameters to ``<tuned>/<suite>/<method>.toml``, where
``run_suite`` picks them up (see ``obliviate.bench.grid``; ``<tuned>`` is ``tuned/`` beside the
runs folder).

Objective. For each (benchmark, seed) of the suite (the seeds given here, default 0): unlearn a
copy of the cached original with the trial's hyperparameters, exactly as the runner does (same
unlearning seed), and measure it and the cached oracle on the same data. The score is SalUn's
Avg. Gap: the mean of |forget accuracy|, |retain accuracy|, |validation accuracy| and
|MIA-Efficacy| differences to the oracle (for non-classifier Tasks: the mean absolute difference
of every ``task.evaluate`` number on the forget, retain and validation sets). Lower is better;
the objective is averaged over benchmarks and seeds.

Validation split. The test set is split in two halves by a seeded permutation (seed derived from
the run seed): tuning sees only the first half (validation accuracy, and MIA-Efficacy's
non-members); the forget and retain sets are the request itself, as for any unlearning method.
The suite's report evaluates on the whole test set, so half of it was seen while tuning: read
test accuracy of tuned recipes with that in mind, or compare on the second half.

Compute budget. Each trial may take at most ``budget_fraction`` of the oracle's training steps
(default 0.25, a quarter of retraining). A trial that reaches the cap would run differently
without it, so it scores the worst value (1.0) and is marked ``over_budget``; a trial that
diverges (non-finite weights) likewise, marked ``diverged``, and so does a combination the
method rejects (a ValueError, e.g. scrub with msteps > epochs), marked ``invalid``. The defaults
are evaluated first (an enqueued trial), so the tuned recipe is never worse than the defaults
on the objective.

Search spaces: ``SEARCH_SPACES`` below, per method (log-uniform learning rates, epoch ranges
scaled to our 10-epoch retrains); a method without an entry gets ``lr`` (log-uniform, 1/10x to
10x its default) and ``epochs`` (1/4x to 4x) when it has them. Names a method lacks are dropped.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obliviate.bench.grid import _benchmarks, _suite, tuned_path
from obliviate.registry import AUDITS, BENCHMARKS, METHODS

log = logging.getLogger(__name__)

__all__ = ["PENALTY", "SEARCH_SPACES", "Dim", "search_space", "tune"]

PENALTY = 1.0  # the objective of an over-budget or diverged trial (the largest possible gap)


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: ``kind`` "log" (log-uniform), "float", "int" or "cat"."""

    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str, *, integer: bool = False) -> Any:
        if self.kind == "cat":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int" or integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.kind == "log")
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "log")

    def widened(self, default: Any) -> Dim:
        """The range stretched to include the method's default (it is enqueued as trial 0)."""
        if self.kind == "cat" or not isinstance(default, (int, float)) or isinstance(default, bool):
            return self
        if self.kind == "log" and default <= 0:
            return self
        return dataclasses.replace(self, low=min(self.low, default), high=max(self.high, default))


def _log(lo: float, hi: float) -> Dim:
    return Dim("log", lo, hi)


def _uni(lo: float, hi: float) -> Dim:
    return Dim("float", lo, hi)


# Ranges from each paper's reported sweeps where it gives them, scaled to our 10-epoch retrain
# (epochs over D_r of 0.25-2 are 2.5-20% of retraining; over D_f, which is ~10x smaller, more).
SEARCH_SPACES: dict[str, dict[str, Dim]] = {
    "finetune": {"lr": _log(1e-3, 1e-1), "epochs": _uni(0.25, 2.0)},
    "grad-ascent": {"lr": _log(1e-5, 1e-2), "epochs": _uni(1.0, 20.0)},
    "neggrad-plus": {"lr": _log(1e-3, 1e-1), "beta": _uni(0.5, 0.999), "epochs": _uni(0.25, 2.0)},
    "random-label": {"lr": _log(1e-3, 5e-2), "epochs": _uni(0.25, 2.0)},
    "l1-sparse": {"lr": _log(1e-3, 5e-2), "alpha": _log(1e-5, 1e-3), "epochs": _uni(0.25, 2.0)},
    "salun": {"lr": _log(1e-3, 5e-2), "gamma": _uni(0.1, 0.9), "epochs": _uni(0.25, 2.0)},
    "boundary-shrink": {"lr": _log(1e-5, 1e-2), "bound": _uni(0.02, 0.3), "epochs": _uni(1, 10)},
    "trw": {
        "lr": _log(1e-3, 1e-1),
        "beta": _uni(0.0, 30.0),
        "temperature": _log(0.02, 1.0),
        "epochs": _uni(0.5, 5.0),
    },
    "rwft": {"lr": _log(1e-3, 1e-1), "epochs": _uni(0.5, 5.0)},
    "scrub": {
        "lr": _log(1e-4, 5e-2),
        "alpha": _log(1e-3, 10.0),
        "gamma": _log(1e-2, 10.0),
        "msteps": Dim("int", 1, 5),
        "epochs": _uni(1.0, 10.0),
    },
    "ssd": {"alpha": _log(1.0, 100.0), "lam": _log(0.1, 10.0)},
    "bad-teacher": {"lr": _log(1e-5, 1e-2), "temperature": _log(0.5, 8.0), "epochs": _uni(0.5, 3)},
    "influence-prune": {"q": _uni(0.1, 0.9)},
    "minnorm-og": {"lr": _log(1e-4, 1e-1)},
}


def _fields(method: str) -> dict[str, Any]:
    """name -> (type, default) of a method's init fields."""
    cls = METHODS.get(method)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"method {method!r} is not a dataclass; it has no hyperparameters to tune")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.init and f.default is not dataclasses.MISSING:
            out[f.name] = (hints.get(f.name), f.default)
    return out


def search_space(method: str, *, exclude: Sequence[str] = ()) -> dict[str, Dim]:
    """The dimensions searched for ``method``: its SEARCH_SPACES entry restricted to the fields
    it has, else lr and epochs around their defaults; each range includes the default."""
    fields = _fields(method)
    if method in SEARCH_SPACES:
        space = dict(SEARCH_SPACES[method])
        dropped = sorted(set(space) - set(fields))
        if dropped:
            log.info("tune %s: the method has no %s; not searched", method, dropped)
        space = {k: v for k, v in space.items() if k in fields}
    else:
        space = {}
        lr = fields.get("lr", (None, None))[1]
        if isinstance(lr, float) and lr > 0:
            space["lr"] = _log(lr / 10, lr * 10)
        ep = fields.get("epochs", (None, None))[1]
        if isinstance(ep, (int, float)) and not isinstance(ep, bool) and ep > 0:
            space["epochs"] = Dim("int" if isinstance(ep, int) else "float", ep / 4, ep * 4)
    space = {k: v.widened(fields[k][1]) for k, v in space.items() if k not in exclude}
    if not space:
        raise ValueError(
            f"no hyperparameter of {method!r} to search: add an entry for it to "
            f"obliviate.tune.SEARCH_SPACES (fields: {sorted(fields)})"
        )
    return space


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ImportError(
            "tune needs Optuna, the optional [tune] extra: pip install 'obliviate[tune]'"
        ) from e
    return optuna


# -- one (benchmark, seed): the cached original and oracle, the validation split ----------------
class _Env:
    def __init__(
        self, bench_key: str, forget: str | None, seed: int, *, cache_dir: Any, data_dir: Any,
        budget_fraction: float | None, progress: bool,
    ) -> None:  # fmt: skip
        from obliviate.bench.runner import RunContext, trained_model
        from obliviate.loop import derive_seed
        from obliviate.store import ModelCache

        self.bench = BENCHMARKS.get(bench_key)
        self.seed = seed
        ds = self.bench.load(data_dir)
        self.task = self.bench.task(ds)
        rule = self.bench.resolve_forget(ds, forget)
        self.splits = self.bench.splits(ds, rule, derive_seed(seed, "split"))
        cache = ModelCache(cache_dir)
        train_seed = derive_seed(seed, "train")  # the runner's seeds, so the cache entries match
        self.original, _ = trained_model(
            self.bench, ds, self.task, cache, train_idx=self.bench.all_train_indices(ds),
            seed=train_seed, kind="original", progress=progress,
        )  # fmt: skip
        self.oracle, oracle_manifest = trained_model(
            self.bench, ds, self.task, cache, train_idx=self.splits.retain_idx, seed=train_seed,
            kind="oracle", progress=progress,
        )  # fmt: skip
        # 1. The validation half of the test set (a seeded permutation of its positions).
        rng = np.random.default_rng(derive_seed(seed, "tune-val"))
        n_test = len(self.splits.test)
        val_pos = np.sort(rng.permutation(n_test)[: n_test // 2])
        self.val = dataclasses.replace(
            self.splits, test=self.splits.test.subset(val_pos), extra={}
        )  # fmt: skip
        # 2. The compute budget: a fraction of the oracle's training steps.
        budget = self.bench.budget()
        cap = budget.max_steps
        oracle_steps = int(oracle_manifest.get("train", {}).get("steps", 0))
        if budget_fraction is not None and oracle_steps > 0:
            frac_cap = max(1, math.ceil(budget_fraction * oracle_steps))
            cap = frac_cap if cap is None else min(cap, frac_cap)
        self.max_steps = cap
        self.ctx = RunContext(
            seed=derive_seed(seed, "audit"), bench=self.bench, dataset=ds, task=self.task,
            splits=self.val, method=None, budget=budget, cache=cache, oracle=self.oracle,
            data_dir=data_dir, progress=False,
        )  # fmt: skip
        self.kind = getattr(self.bench, "kind", "vision")
        self.oracle_metrics = self.measure(self.oracle)

    def measure(self, model: torch.nn.Module) -> dict[str, float]:
        from obliviate.loop import derive_seed, seeded

        out: dict[str, float] = {}
        names = [a for a in ("accuracy", "mia-efficacy") if a in AUDITS]
        if "accuracy" in names and self.kind in AUDITS.get("accuracy").supports:
            for name in names:
                audit = AUDITS.build(name)
                if self.kind not in audit.supports:
                    continue
                with seeded(derive_seed(self.seed, "tune", name)):
                    rep = audit.audit(self.original, model, self.val, task=self.task, ctx=self.ctx)
                out.update({f"{name}.{k}": float(v) for k, v in rep.metrics.items()})
            keys = ("accuracy.forget_acc", "accuracy.retain_acc", "accuracy.test_acc")
            keys += ("mia-efficacy.efficacy",) if "mia-efficacy.efficacy" in out else ()
            return {k: out[k] for k in keys}
        # A Task without the classifier audits: every number task.evaluate reports.
        for part, data in (("forget", self.val.forget), ("retain", self.val.retain),
                           ("val", self.val.test)):  # fmt: skip
            for k, v in self.task.evaluate(model, data).items():
                out[f"{part}.{k}"] = float(v)
        return out

    def gap(self, method: str, params: Mapping[str, Any]) -> tuple[float, str]:
        """(objective, status) of one unlearning run with ``params``."""
        from obliviate.bench.runner import _check_finite
        from obliviate.loop import count_steps, derive_seed, seeded
        from obliviate.types import Budget

        model = copy.deepcopy(self.original)
        try:
            m = METHODS.build(method, params)
            with seeded(derive_seed(self.seed, "unlearn")), count_steps() as counter:
                out = m.unlearn(
                    model, self.splits.forget, self.splits.retain, task=self.task,
                    budget=Budget(max_steps=self.max_steps),
                )  # fmt: skip
        except (ValueError, TypeError) as e:
            # a combination the method rejects (e.g. scrub's msteps > epochs): a bad region
            log.info("tune %s: %s rejected (%s)", method, dict(params), e)
            return PENALTY, "invalid"
        out.eval()
        if self.max_steps is not None and counter.steps >= self.max_steps:
            return PENALTY, "over_budget"
        if _check_finite(out) is not None:  # the runner's check: the name of a non-finite tensor
            return PENALTY, "diverged"
        mine = self.measure(out)
        diffs = [abs(mine[k] - v) for k, v in self.oracle_metrics.items() if k in mine]
        diffs = [d for d in diffs if math.isfinite(d)]
        return (float(np.mean(diffs)) if diffs else PENALTY), "ok"


def _round(v: Any) -> Any:
    """Floats to 3 significant digits: readable recipes, and the value evaluated is the value
    written (TPE's resolution is far coarser than that anyway)."""
    return float(f"{v:.3g}") if isinstance(v, float) else v


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string: JSON's escapes are valid TOML


def _write_toml(path: Path, header: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    from obliviate.store import atomic_write

    lines = [
        "# Written by obliviate.tune: the hyperparameters with the smallest validation gap to",
        "# the retrain oracle. `obliviate bench <suite>` uses [params]; edit or delete freely.",
    ]
    lines += [f"{k} = {_toml_value(v)}" for k, v in header.items()]
    lines += ["", "[params]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(params.items())]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def tune(
    suite: str,
    *,
    method: str,
    trials: int,
    seeds: Sequence[int] = (0,),
    timeout: float | None = None,
    runs_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    data_dir: str | None = None,
    storage: str | None = None,
    params: Mapping[str, Any] | None = None,
    budget_fraction: float | None = 0.25,
    progress: bool = False,
) -> dict[str, Any]:
    """Search ``method``'s hyperparameters on ``suite``'s benchmarks; write the best as TOML.

    ``trials`` new trials are run (a rerun continues the stored study); ``timeout`` stops
    earlier, in seconds. ``params`` fixes hyperparameters (not searched, written with the best).
    ``storage`` is an Optuna storage URL (default: SQLite beside the TOML file). Returns
    {"suite", "method", "params", "value", "default_value", "n_trials", "toml", "storage",
    "max_steps"}.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if budget_fraction is not None and budget_fraction <= 0:
        raise ValueError(f"budget_fraction must be > 0 (or None), got {budget_fraction}")
    optuna = _optuna()
    s = _suite(suite)
    fixed = dict(params or {})
    METHODS.build(method, fixed)  # check the method and the fixed hyperparameters now
    space = search_space(method, exclude=tuple(fixed))
    field_types = {k: t for k, (t, _) in _fields(method).items()}
    seeds = tuple(int(x) for x in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")

    envs = []
    for bench_key, forget in _benchmarks(s):
        kind = getattr(BENCHMARKS.get(bench_key), "kind", "vision")
        if kind not in METHODS.get(method).supports:
            log.warning("tune: %s does not support %s (%r), skipped", method, bench_key, kind)
            continue
        for seed in seeds:
            envs.append(
                _Env(
                    bench_key,
                    forget,
                    seed,
                    cache_dir=cache_dir,
                    data_dir=data_dir,
                    budget_fraction=budget_fraction,
                    progress=progress,
                )  # fmt: skip
            )
    if not envs:
        raise ValueError(f"method {method!r} supports none of suite {suite!r}'s benchmarks")

    toml = tuned_path(suite, method, runs_dir=runs_dir)
    toml.parent.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = f"sqlite:///{toml.with_suffix('.db').absolute()}"
    # A study is one objective: the same seeds, budget and fixed hyperparameters.
    tag = hashlib.sha256(
        json.dumps([seeds, budget_fraction, sorted(fixed.items())], default=str).encode()
    ).hexdigest()[:8]
    study_name = f"{suite}:{method}:{tag}"
    sampler = optuna.samplers.TPESampler(seed=0)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="minimize", sampler=sampler,
        load_if_exists=True,
    )  # fmt: skip
    defaults = {k: _fields(method)[k][1] for k in space}
    if not study.trials:
        study.enqueue_trial(defaults, user_attrs={"default": True})

    def objective(trial: Any) -> float:
        p = dict(fixed)
        for name, dim in space.items():
            p[name] = _round(dim.suggest(trial, name, integer=field_types.get(name) is int))
        trial.set_user_attr("params", {k: v for k, v in p.items() if k in space})
        values = []
        for env in envs:
            value, status = env.gap(method, p)
            if status != "ok":
                trial.set_user_attr(status, True)
                log.info("tune %s trial %d: %s", method, trial.number, status.replace("_", " "))
            values.append(value)
        return float(np.mean(values))

    verbosity = optuna.logging.get_verbosity()
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout)
    finally:
        optuna.logging.set_verbosity(verbosity)

    done = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and not t.user_attrs.get("over_budget")
        and not t.user_attrs.get("diverged")
        and not t.user_attrs.get("invalid")
    ]
    if not done:
        raise RuntimeError(
            f"no trial of {method!r} finished within the budget (each over budget or diverged). "
            f"Raise budget_fraction (now {budget_fraction}) or narrow SEARCH_SPACES[{method!r}]."
        )
    best = min(done, key=lambda t: t.value)
    default_trials = [t for t in done if t.user_attrs.get("default")]
    best_params = {**fixed, **best.user_attrs.get("params", best.params)}
    header = {
        "suite": suite,
        "method": method,
        "objective": "avg_gap_val",
        "value": float(best.value),
        "default_value": float(default_trials[0].value) if default_trials else float("nan"),
        "trials": len(study.trials),
        "seeds": list(seeds),
        "budget_fraction": budget_fraction if budget_fraction is not None else "none",
        "max_steps": [e.max_steps if e.max_steps is not None else -1 for e in envs],
        "study": study_name,
        "storage": storage,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    _write_toml(toml, header, best_params)
    log.info(
        "tune %s on %s: best avg gap %.4f (defaults %.4f) after %d trials -> %s",
        method, suite, best.value, header["default_value"], len(study.trials), toml,
    )  # fmt: skip
    return {
        "suite": suite,
        "method": method,
        "params": best_params,
        "value": float(best.value),
        "default_value": header["default_value"],
        "n_trials": len(study.trials),
        "toml": str(toml),
        "storage": storage,
        "max_steps": [e.max_steps for e in envs],
    }
