"""``run(spec)``: train or load the original and the retrain oracle, unlearn, audit, store.

The runner is modality-free: it talks to a benchmark (``load``, ``task``, ``make_model``,
``splits``, ``train``, ``identity``...) and to methods and audits through their protocols. Every
run writes one folder (see ``store.py``); the original and the oracle are runs too, audited the
same way, so a report compares folders. Seeds: one run seed, from which the split, the model
initialisation, the training order, the unlearning and each audit get their own derived seed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate.loop import count_steps, derive_seed, seeded
from obliviate.registry import AUDITS, BENCHMARKS, METHODS
from obliviate.store import (
    ModelCache,
    RunExistsError,
    cache_key,
    canonical_json,
    default_runs_dir,
    load_arrays,
    read_run,
    write_run,
)
from obliviate.types import Budget, Report, RunSpec, Splits, Task, index_hash

log = logging.getLogger(__name__)

__all__ = ["REFERENCE_ROWS", "RunContext", "RunFailed", "RunResult", "run", "run_dir_for"]

REFERENCE_ROWS = ("original", "oracle")


class RunFailed(RuntimeError):
    """The method or an audit failed; the run folder keeps what was measured."""

    def __init__(self, message: str, path: Path | None) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class RunResult:
    path: Path
    manifest: dict[str, Any]
    reports: dict[str, Any]
    reused: bool = False
    model: nn.Module | None = None

    def metrics(self) -> dict[str, float]:
        """All headline metrics flattened as "audit.metric"."""
        return {
            f"{a}.{k}": v for a, r in self.reports.items() for k, v in r.get("metrics", {}).items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return load_arrays(self.path / "arrays.npz")


@dataclass
class RunContext:
    """What audits may borrow: the seed, the oracle, the audited method, and model training
    through the cache (``train_on``, ``train_many``: shadow and reference models for membership
    attacks)."""

    seed: int
    bench: Any
    dataset: Any
    task: Task
    splits: Splits
    method: Any | None
    budget: Budget
    cache: ModelCache
    oracle: nn.Module
    data_dir: str | None = None
    progress: bool = True
    executor: str = "local"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bench_name(self) -> str:
        return self.bench.name

    def train_on(self, idx: np.ndarray, *, seed: int, kind: str = "shadow") -> nn.Module:
        """A model trained by the benchmark's recipe on training examples ``idx``, cached."""
        model, _ = trained_model(
            self.bench, self.dataset, self.task, self.cache, train_idx=idx, seed=seed, kind=kind,
            progress=self.progress,
        )  # fmt: skip
        return model

    def train_many(
        self, sets: list[np.ndarray], *, seeds: list[int], kind: str = "shadow"
    ) -> list[nn.Module]:
        """``train_on`` for many training sets at once, through the run's executor (the same
        cache entries as ``train_on``; models already cached are loaded, not retrained)."""
        from obliviate.audits.shadows import train_models

        return train_models(self, sets, seeds, kind=kind)


def model_request(bench: Any, train_idx: np.ndarray, seed: int) -> dict[str, Any]:
    """The cache request of a model: the benchmark's identity, its data and its seed."""
    return {
        "bench": bench.identity(),
        "train_idx": index_hash(train_idx),
        "n_train": int(len(train_idx)),
        "seed": int(seed),
    }


def trained_model(
    bench: Any,
    ds: Any,
    task: Task,
    cache: ModelCache,
    *,
    train_idx: np.ndarray,
    seed: int,
    kind: str,
    progress: bool | str = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load from the cache, or initialise (seeded), train and cache a model on ``train_idx``."""
    request = model_request(bench, train_idx, seed)

    def make() -> nn.Module:
        with seeded(derive_seed(seed, "init")):
            return bench.make_model(ds)

    def train(model: nn.Module) -> dict[str, Any]:
        label = f"{kind} ({len(train_idx)} examples)" if progress else False
        data = bench.train_data(ds, np.asarray(train_idx))
        return bench.train(model, data, task=task, seed=derive_seed(seed, "order"), progress=label)

    return cache.get_or_train(kind, request, make, train)


def reference_models(
    bench: Any,
    ds: Any,
    task: Task,
    cache: ModelCache,
    *,
    splits: Splits,
    seed: int,
    progress: bool | str = True,
) -> tuple[tuple[nn.Module, dict[str, Any]], tuple[nn.Module, dict[str, Any]]]:
    """((original, manifest), (oracle, manifest)) of run seed ``seed``: the benchmark's recipe on
    the whole training set and on the retain set, both with the same derived training seed."""
    train_seed = derive_seed(seed, "train")
    original = trained_model(
        bench, ds, task, cache, train_idx=bench.all_train_indices(ds), seed=train_seed,
        kind="original", progress=progress,
    )  # fmt: skip
    oracle = trained_model(
        bench, ds, task, cache, train_idx=splits.retain_idx, seed=train_seed, kind="oracle",
        progress=progress,
    )  # fmt: skip
    return original, oracle


def _versions() -> dict[str, str]:
    import numpy
    import safetensors

    import obliviate

    return {
        "obliviate": obliviate.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": str(torch.get_num_threads()),
    }


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        )  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _resolved(spec: RunSpec, forget: str, method: Any, audits: Mapping[str, Any]) -> RunSpec:
    """The spec as it runs: the resolved request, the audit list, and the hyperparameters as
    the method and audits read them (coerced, then as plain JSON values), so that ``lr="1e-3"``
    from the command line, ``lr=0.001`` from Python and ``epochs=1`` for a float field name
    the same run folder and group."""
    params = {k: getattr(method, k) for k in spec.params} if method is not None else {}
    audit_params = {
        name: {k: getattr(audits[name], k) for k in kv} for name, kv in spec.audit_params.items()
    }
    plain = json.loads(canonical_json({"params": params, "audit_params": audit_params}))
    return dataclasses.replace(spec, forget=forget, audits=tuple(audits), **plain)


def run_dir_for(spec: RunSpec, runs_dir: Path) -> Path:
    """runs/<bench>/<method>/<seed>-<hash8>; the hash covers the whole resolved spec."""
    return runs_dir / spec.benchmark / spec.method / f"{spec.seed}-{cache_key(spec.to_dict())[:8]}"


def group_key(spec: RunSpec) -> str:
    """Runs that share a group are comparable rows: same benchmark, request, seed, audits."""
    return cache_key(
        {
            "benchmark": spec.benchmark,
            "forget": spec.forget,
            "seed": spec.seed,
            "audits": spec.audits,
            "audit_params": {k: dict(v) for k, v in spec.audit_params.items()},
            "max_steps": spec.max_steps,
        }
    )[:12]


def _check_finite(model: nn.Module) -> str | None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            return name
    return None


def _reuse(path: Path, spec: RunSpec) -> RunResult:
    stored = read_run(path)
    m = stored["manifest"]
    if m.get("spec") != spec.to_dict():
        raise RunExistsError(
            f"run folder {path} holds another spec than the one asked for; move it away to rerun."
        )
    if m.get("status") != "done":
        raise RunExistsError(
            f"run folder {path} is a run that failed ({m.get('error', 'unknown error')}); it is "
            f"kept as evidence. Move it away (or delete it) to run again."
        )
    return RunResult(path, m, stored["report"], reused=True)


def run(
    spec: RunSpec,
    *,
    runs_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    data_dir: str | None = None,
    exist: str = "error",
    references: bool = True,
    progress: bool = True,
    executor: str = "local",
    keep_model: bool = False,
) -> RunResult:
    """Run ``spec``: unlearn with its method on its benchmark, audit, write the run folder.

    ``exist``: "error" refuses an existing run folder; "reuse" returns it when it holds the same
    finished spec. ``references`` also runs (or reuses) the original and oracle rows of the same
    group, so the report can show the gap to the oracle.
    """
    if exist not in ("error", "reuse"):
        raise ValueError(f"exist must be 'error' or 'reuse', got {exist!r}")
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    cache = ModelCache(cache_dir)

    # 1. Validate everything named in the spec before any training starts.
    bench = BENCHMARKS.get(spec.benchmark)
    method = None
    if spec.method not in REFERENCE_ROWS:
        method = METHODS.build(spec.method, spec.params)
        if bench.kind not in method.supports:
            raise ValueError(
                f"method {spec.method!r} supports {sorted(method.supports)}, not the "
                f"{bench.kind!r} benchmark {spec.benchmark!r}. See `obliviate list methods`."
            )
    elif spec.params:
        raise ValueError(
            f"the {spec.method!r} row takes no hyperparameters, got {dict(spec.params)}"
        )
    audit_names = tuple(spec.audits) if spec.audits is not None else tuple(bench.audits)
    unknown = set(spec.audit_params) - set(audit_names)
    if unknown:
        raise ValueError(f"audit parameters given for audits not in this run: {sorted(unknown)}")
    audits = {}
    for name in audit_names:
        audits[name] = AUDITS.build(name, spec.audit_params.get(name))
        if bench.kind not in audits[name].supports:
            raise ValueError(f"audit {name!r} does not support {bench.kind!r} benchmarks")

    ds = bench.load(data_dir)
    forget = bench.resolve_forget(ds, spec.forget)
    spec = _resolved(spec, forget, method, audits)
    path = run_dir_for(spec, runs_dir)
    if path.exists():
        if exist == "reuse":
            return _reuse(path, spec)
        raise RunExistsError(
            f"run folder {path} already exists; nothing was overwritten. Read it with "
            f"`obliviate show {path}`, pass --reuse to accept it, or move it away to rerun."
        )

    # 2. The reference rows first, so that a method's run can always be compared.
    if references and method is not None:
        for ref in REFERENCE_ROWS:
            run(
                RunSpec(
                    spec.benchmark, ref, seed=spec.seed, forget=forget, audits=audit_names,
                    audit_params=spec.audit_params, max_steps=spec.max_steps,
                ),
                runs_dir=runs_dir, cache_dir=cache.root, data_dir=data_dir, exist="reuse",
                references=False, progress=progress, executor=executor,
            )  # fmt: skip

    # 3. Data, the deletion request, the original and the oracle (cached).
    task = bench.task(ds)
    splits = bench.splits(ds, forget, derive_seed(spec.seed, "split"))
    train_seed = derive_seed(spec.seed, "train")
    t0 = time.perf_counter()
    (original, orig_manifest), (oracle, oracle_manifest) = reference_models(
        bench, ds, task, cache, splits=splits, seed=spec.seed, progress=progress
    )
    load_s = time.perf_counter() - t0
    oracle_train_s = float(oracle_manifest.get("train", {}).get("seconds", float("nan")))
    budget = bench.budget(spec.max_steps)

    manifest: dict[str, Any] = {
        "spec": spec.to_dict(),
        "group": group_key(spec),
        "status": "running",
        "kind": bench.kind,
        "benchmark": {"name": bench.name, **bench.identity()},
        # how the task evaluates and samples (e.g. the diffusion sampler), where it says
        "task": task.describe() if hasattr(task, "describe") else {},
        "method_params": dataclasses.asdict(method) if method is not None else {},
        "audit_params": {n: dataclasses.asdict(a) for n, a in audits.items()},
        "budget": dataclasses.asdict(budget),
        "seeds": {
            "run": spec.seed,
            "split": derive_seed(spec.seed, "split"),
            "train": train_seed,
            "unlearn": derive_seed(spec.seed, "unlearn"),
        },
        "splits": {**splits.hashes(), **{k: v for k, v in splits.info.items()}},
        "data": {"dataset": getattr(ds, "name", None), "source": getattr(ds, "source", None)},
        "cache": {"original": orig_manifest["key"], "oracle": oracle_manifest["key"]},
        "versions": _versions(),
        "git_revision": _git_revision(),
        "timings": {
            "load_or_train_references_s": load_s,
            "original_train_s": float(orig_manifest.get("train", {}).get("seconds", float("nan"))),
            "oracle_train_s": oracle_train_s,
        },
    }

    # 4. Unlearn (or take the reference row's model), counting optimizer steps.
    error: str | None = None
    if spec.method == "original":
        unlearned, steps, unlearn_s = original, 0, 0.0
    elif spec.method == "oracle":
        unlearned = oracle
        steps = int(oracle_manifest.get("train", {}).get("steps", 0))
        unlearn_s = oracle_train_s
    else:
        model = copy.deepcopy(original)
        t1 = time.perf_counter()
        try:
            with seeded(derive_seed(spec.seed, "unlearn")), count_steps() as counter:
                unlearned = method.unlearn(
                    model, splits.forget, splits.retain, task=task, budget=budget
                )
        except Exception as e:  # keep the evidence of a failed run, then re-raise below
            log.exception("method %s failed", spec.method)
            unlearned, error = model, f"{type(e).__name__}: {e}"
        unlearn_s = time.perf_counter() - t1
        steps = counter.steps
        if error is None and not isinstance(unlearned, nn.Module):
            error = f"method {spec.method!r} returned {type(unlearned).__name__}, not an nn.Module"
        if error is None and budget.max_steps is not None and steps > budget.max_steps:
            error = f"method took {steps} optimizer steps, over the budget of {budget.max_steps}"
        if error is None and (bad := _check_finite(unlearned)) is not None:
            error = (
                f"the unlearned weights are not finite (first: {bad}): the method diverged. "
                f"Lower its learning rate (`--set lr=...`) or clip its gradients."
            )
        unlearned.eval()
    manifest["steps"] = steps
    manifest["timings"]["unlearn_s"] = unlearn_s
    manifest["timings"]["cost_ratio_to_retrain"] = (
        unlearn_s / oracle_train_s if oracle_train_s else None
    )

    # 5. Audits; a failing audit is recorded and the others still run.
    reports: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    if error is None:
        ctx = RunContext(
            seed=derive_seed(spec.seed, "audit"), bench=bench, dataset=ds, task=task, splits=splits,
            method=method, budget=budget, cache=cache, oracle=oracle, data_dir=data_dir,
            progress=progress, executor=executor,
        )  # fmt: skip
        audit_s: dict[str, float] = {}
        failed = []
        for name, audit in audits.items():
            t2 = time.perf_counter()
            before = {k: v.clone() for k, v in unlearned.state_dict().items()}
            try:
                with seeded(derive_seed(spec.seed, "audit", name)):
                    rep: Report = audit.audit(original, unlearned, splits, task=task, ctx=ctx)
            except Exception as e:
                log.exception("audit %s failed", name)
                failed.append(f"{name}: {type(e).__name__}: {e}")
                reports[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            finally:
                audit_s[name] = time.perf_counter() - t2
            if any(not torch.equal(before[k], v) for k, v in unlearned.state_dict().items()):
                failed.append(f"{name}: the audit changed the audited model's weights")
            reports[name] = {
                "metrics": {k: float(v) for k, v in rep.metrics.items()},
                "curves": rep.curves,
                "notes": rep.notes,
                "seconds": audit_s[name],
            }
            for k, v in rep.arrays.items():
                arrays[f"{name}.{k}"] = np.asarray(v)
        manifest["timings"]["audit_s"] = audit_s
        if failed:
            error = "audits failed: " + "; ".join(failed)
    manifest["status"] = "done" if error is None else "failed"
    if error is not None:
        manifest["error"] = error
    model_to_save = unlearned if (spec.save_model and error is None) else None
    write_run(path, manifest=manifest, reports=reports, arrays=arrays, model=model_to_save)
    if error is not None:
        raise RunFailed(f"{error} (what was measured is in {path})", path)
    log.info("run written to %s", path)
    return RunResult(path, manifest, reports, model=unlearned if keep_model else None)


def run_many(specs: list[RunSpec], **kwargs: Any) -> list[RunResult]:
    """Run several specs in turn (reusing finished ones)."""
    kwargs.setdefault("exist", "reuse")
    return [run(s, **kwargs) for s in specs]
