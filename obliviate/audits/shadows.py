"""The shadow-model bank shared by LiRA, U-LiRA, RMIA, Apollo and the epsilon score.

K models are trained by the benchmark's own recipe on random halves of a pool of examples,
optionally with examples that every model trains on (``always_in``). The membership matrix is
balanced: every pool example is IN for exactly half of the models (Carlini
et al. 2022's protocol), so per-example IN and OUT distributions have K/2 samples each. Each
model is cached on its own (key: benchmark, indices, seed), so an interrupted sweep resumes from
the models already trained, and every audit and method of a benchmark shares them.

Training goes through ``ctx.executor`` (see ``obliviate/executors.py``): a worker rebuilds the
benchmark by name, loads its data and trains into the same cache; the parent then loads the
models from the cache. Every job runs with the same torch thread count, so the same seeds give
bit-identical models whichever executor trained them.

Population indices. A membership audit needs held-out examples (never seen by the audited
model) that the shadows *do* train on half of the time, so a pool may also hold test examples:
index ``i < n_train`` is training example ``i``, index ``n_train + j`` is test example ``j``.
A pool of training indices only means what it always meant (and hits the same cache entries as
``ctx.train_on``). ``target_pool`` draws the pool that LiRA, U-LiRA and RMIA share.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate.loop import derive_seed, seeded
from obliviate.types import Budget, index_hash

log = logging.getLogger(__name__)

__all__ = [
    "ShadowBank",
    "TargetPool",
    "balanced_membership",
    "bank_plan",
    "cached_arrays",
    "population_data",
    "shadow_bank",
    "shadow_logits",
    "target_pool",
    "train_models",
    "unlearned_shadow_logits",
]


def balanced_membership(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """(K, P) bool, each column with exactly K//2 True (K even), rows random halves."""
    if n_models < 2 or n_models % 2:
        raise ValueError(f"a shadow bank needs an even number of models >= 2, got {n_models}")
    rng = np.random.default_rng(seed)
    # rank of a uniform key per column: the K/2 smallest are IN, so each column is balanced
    keys = rng.random((n_models, n_examples))
    order = keys.argsort(axis=0).argsort(axis=0)
    return order < n_models // 2


@dataclass
class ShadowBank:
    pool_idx: np.ndarray  # (P,) population indices (= training-set indices for a train-only pool)
    members: np.ndarray  # (K, P) bool: model k trained on pool example p
    models: list[nn.Module]  # empty for a plan (bank_plan), filled by shadow_bank
    seeds: list[int]
    always_in: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # in all

    def train_idx(self, k: int) -> np.ndarray:
        """The (population) indices model ``k`` trained on: the always-in ones, then its half."""
        return np.r_[self.always_in, self.pool_idx[self.members[k]]].astype(np.int64)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the bank's models, for the keys of cached signals."""
        return {
            "pool": index_hash(self.pool_idx),
            "always_in": index_hash(self.always_in),
            "members": index_hash(np.packbits(self.members).astype(np.int64)),
            "shape": list(self.members.shape),
            "seeds": [int(s) for s in self.seeds],
        }


# -- population indices -------------------------------------------------------------------------
def _n_train(ds: Any) -> int:
    if not hasattr(ds, "train"):
        raise TypeError(f"shadow banks need a dataset with a .train split, got {type(ds).__name__}")
    return len(ds.train)


def _concat(a: Any, b: Any, offset: int) -> Any:
    """Join two data objects of the same dataclass type field by field (tensors: torch.cat);
    ``idx`` of the second is shifted by ``offset`` so population indices stay unique."""
    if type(a) is not type(b) or not dataclasses.is_dataclass(a):
        raise TypeError(
            f"a shadow pool with test examples needs training and test data of one dataclass "
            f"type with tensor fields (like TensorData); got {type(a).__name__} and "
            f"{type(b).__name__}. Use a pool of training indices only."
        )
    out = {}
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        out[f.name] = torch.cat([x, y + offset if f.name == "idx" else y])
    return type(a)(**out)


def population_data(bench: Any, ds: Any, pop_idx: np.ndarray) -> Any:
    """The data of population indices, in the order given (training i; test n_train + j)."""
    pop = np.asarray(pop_idx, dtype=np.int64)
    n = _n_train(ds)
    if pop.size and (pop.min() < 0 or pop.max() >= n + len(ds.test)):
        raise ValueError(f"population indices must lie in [0, {n + len(ds.test)}), got {pop}")
    is_train = pop < n
    if is_train.all():
        return bench.train_data(ds, pop)
    tr, te = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    joined = _concat(bench.train_data(ds, pop[tr]), ds.test.subset(pop[te] - n), n)
    return joined.subset(np.argsort(np.r_[tr, te], kind="stable"))  # back to the given order


def _source_idx(data: Any) -> np.ndarray:
    """Positions of ``data``'s examples in their source set (TensorData keeps them in .idx)."""
    if not hasattr(data, "idx"):
        raise TypeError(f"{type(data).__name__} carries no .idx: cannot place it in the pool")
    idx = data.idx
    return idx.numpy().astype(np.int64) if isinstance(idx, torch.Tensor) else np.asarray(idx)


# -- training models through the executor -------------------------------------------------------
@dataclass(frozen=True)
class _Env:
    """How a worker rebuilds the benchmark, its data and the cache (picklable)."""

    bench: Any  # registry name, or the benchmark object when it is not registered as such
    data_dir: str | None
    cache_root: str


_ENVS: dict[str, tuple[Any, Any, Any, Any]] = {}  # per process: env -> (bench, ds, task, cache)


def _env_key(env: _Env) -> str:
    bench = env.bench if isinstance(env.bench, str) else repr(env.bench)
    return json.dumps([bench, env.data_dir, env.cache_root])


def _make_env(ctx: Any) -> _Env:
    from obliviate.registry import BENCHMARKS

    bench = ctx.bench
    ref: Any = bench
    name = getattr(bench, "name", None)
    if isinstance(name, str) and name in BENCHMARKS:
        registered = BENCHMARKS.get(name)
        if registered is bench or registered.identity() == bench.identity():
            ref = name  # workers rebuild it from the registry
    env = _Env(ref, ctx.data_dir, str(Path(ctx.cache.root).resolve()))
    # this process already holds the benchmark, its data and task: reuse them for local jobs
    _ENVS.setdefault(_env_key(env), (bench, ctx.dataset, ctx.task, ctx.cache))
    return env


def _load_env(env: _Env) -> tuple[Any, Any, Any, Any]:
    key = _env_key(env)
    if key not in _ENVS:
        from obliviate.registry import BENCHMARKS
        from obliviate.store import ModelCache

        bench = BENCHMARKS.get(env.bench) if isinstance(env.bench, str) else env.bench
        ds = bench.load(env.data_dir)
        _ENVS[key] = (bench, ds, bench.task(ds), ModelCache(env.cache_root))
    return _ENVS[key]


def _request(bench: Any, ds: Any, pop: np.ndarray, seed: int) -> dict[str, Any]:
    from obliviate.bench.runner import model_request

    n = _n_train(ds)
    request = model_request(bench, pop[pop < n], seed)
    if (pop >= n).any():  # test examples in the pool; train-only pools keep the runner's key
        request |= {"test_idx": index_hash(pop[pop >= n] - n), "n_test": int((pop >= n).sum())}
    return request


def _fit(
    bench: Any, ds: Any, task: Any, cache: Any, pop: np.ndarray, seed: int, kind: str
) -> tuple[nn.Module, dict[str, Any]]:
    """Load from the cache or train a model on population indices ``pop`` (as the runner
    trains originals: seeded initialisation, the benchmark's recipe, seeded batch order)."""
    from obliviate.bench.runner import trained_model

    pop = np.asarray(pop, dtype=np.int64)
    if (pop < _n_train(ds)).all():  # exactly ctx.train_on: the same cache entries
        return trained_model(
            bench, ds, task, cache, train_idx=pop, seed=seed, kind=kind, progress=False
        )

    def make() -> nn.Module:
        with seeded(derive_seed(seed, "init")):
            return bench.make_model(ds)

    def train(model: nn.Module) -> dict[str, Any]:
        data = population_data(bench, ds, pop)
        return bench.train(model, data, task=task, seed=derive_seed(seed, "order"), progress=False)

    return cache.get_or_train(kind, _request(bench, ds, pop, seed), make, train)


@dataclass(frozen=True)
class _FitJob:
    env: _Env
    pop: np.ndarray
    seed: int
    kind: str


def _fit_job(job: _FitJob) -> str:
    """Worker side: train (or find) one model in the cache; the parent loads it from there."""
    bench, ds, task, cache = _load_env(job.env)
    _, manifest = _fit(bench, ds, task, cache, job.pop, job.seed, job.kind)
    return str(manifest.get("key", ""))


def train_models(
    ctx: Any, train_sets: list[np.ndarray], seeds: list[int], *, kind: str = "shadow"
) -> list[nn.Module]:
    """Models trained by the benchmark's recipe on each population-index set, through
    ``ctx.executor``; models already in the cache are loaded, not retrained."""
    from obliviate.executors import get_executor

    if len(train_sets) != len(seeds):
        raise ValueError(f"{len(train_sets)} training sets but {len(seeds)} seeds")
    env = _make_env(ctx)
    bench, ds, task, cache = _load_env(env)
    sets = [np.asarray(s, dtype=np.int64) for s in train_sets]
    todo = []
    for pop, seed in zip(sets, seeds, strict=True):
        _, manifest = cache.paths(kind, _cache_key(_request(bench, ds, pop, seed)))
        if not manifest.exists():
            todo.append(_FitJob(env, pop, int(seed), kind))
    if todo:
        executor = get_executor(getattr(ctx, "executor", "local"))
        log.info("training %d %s models with the %s executor", len(todo), kind, executor.name)
        desc = f"{kind} models ({executor.name})" if getattr(ctx, "progress", False) else None
        executor.map(_fit_job, todo, desc=desc)
    return [_fit(bench, ds, task, cache, p, s, kind)[0] for p, s in zip(sets, seeds, strict=True)]


def _cache_key(request: Mapping[str, Any]) -> str:
    from obliviate.store import cache_key

    return cache_key(request)


# -- banks ----------------------------------------------------------------------------------------
def bank_plan(
    ctx: Any,
    *,
    n_models: int,
    pool_idx: np.ndarray | None = None,
    tag: str = "shadow",
    always_in: np.ndarray | None = None,
) -> ShadowBank:
    """The bank's pool, membership and seeds, without training anything (``models`` empty).
    ``always_in``: population indices every shadow also trains on (never IN/OUT-balanced)."""
    n_train = len(ctx.dataset.train) if hasattr(ctx.dataset, "train") else None
    pool = np.arange(n_train) if pool_idx is None else np.asarray(pool_idx, dtype=np.int64)
    base = derive_seed(ctx.seed, "shadow-bank", tag, len(pool))
    members = balanced_membership(n_models, len(pool), base)
    seeds = [derive_seed(base, k) for k in range(n_models)]
    core = np.zeros(0, np.int64) if always_in is None else np.asarray(always_in, dtype=np.int64)
    if np.intersect1d(core, pool).size:
        raise ValueError("always_in and pool_idx overlap: an example is either balanced or in all")
    return ShadowBank(pool, members, [], seeds, core)


def shadow_bank(
    ctx: Any,
    *,
    n_models: int,
    pool_idx: np.ndarray | None = None,
    tag: str = "shadow",
    always_in: np.ndarray | None = None,
) -> ShadowBank:
    """Train (or load from the cache) ``n_models`` shadow models on balanced random halves of
    ``pool_idx`` (default: the whole training set; population indices may add test examples),
    plus ``always_in`` for every model, through ``ctx.executor``. ``tag`` separates banks."""
    plan = bank_plan(ctx, n_models=n_models, pool_idx=pool_idx, tag=tag, always_in=always_in)
    plan.models = train_models(
        ctx, [plan.train_idx(k) for k in range(n_models)], plan.seeds, kind="shadow"
    )
    return plan


# -- the pool of membership audits ---------------------------------------------------------------
@dataclass(frozen=True)
class TargetPool:
    """The examples of a membership audit, as population indices (see the module docstring).

    ``forget``: forget-set examples, scored as the audited model's (unlearned) members.
    ``heldout``: test examples the audited model never saw, scored as non-members.
    ``reference``: test examples never scored: RMIA's population z.
    ``background``: retain examples that *every* shadow trains on (``always_in``), never
    scored: they make the shadows resemble the audited model, which trained on the retain set.
    Every other pool example (``pool``) is IN for half of the shadows. The targets (forget +
    held-out) are what each shadow forgets in U-LiRA: for a class request both come from the
    forgotten class, so a shadow forgets all of the class it saw, as the audited model did.
    """

    forget: np.ndarray
    heldout: np.ndarray
    reference: np.ndarray
    background: np.ndarray
    n_train: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> np.ndarray:
        return np.r_[self.forget, self.heldout]

    @property
    def pool(self) -> np.ndarray:
        """The IN/OUT-balanced examples (the background is in every shadow, not here)."""
        return np.r_[self.forget, self.heldout, self.reference]

    @property
    def target_cols(self) -> np.ndarray:
        """Columns of the targets in ``pool`` (and in a bank over it)."""
        return np.arange(len(self.forget) + len(self.heldout))

    @property
    def reference_cols(self) -> np.ndarray:
        start = len(self.forget) + len(self.heldout)
        return np.arange(start, start + len(self.reference))

    @property
    def is_member(self) -> np.ndarray:
        """(T,) 1 for forget targets, 0 for held-out targets: the audited model's labels."""
        return np.r_[np.ones(len(self.forget)), np.zeros(len(self.heldout))]


def target_pool(
    ctx: Any, *, n_targets: int, n_reference: int, n_background: int, tag: str = "mia"
) -> TargetPool:
    """Draw (seeded by ``ctx.seed`` and ``tag``) the pool of a membership audit.

    ``n_targets`` forget examples and as many held-out ones (fewer if either set is smaller):
    for class and sub-class requests the held-out targets are test examples of the forgotten
    part (``splits.extra["forget_test"]``), otherwise test examples at random; ``n_reference``
    further test examples (from ``"retain_test"`` when there is one); ``n_background`` retain
    examples.
    """
    splits = ctx.splits
    n_train = _n_train(ctx.dataset)
    rng = np.random.default_rng(
        derive_seed(ctx.seed, "target-pool", tag, n_targets, n_reference, n_background)
    )
    extra = dict(splits.extra)
    held_src = _source_idx(extra["forget_test"] if "forget_test" in extra else splits.test)
    ref_src = _source_idx(extra["retain_test"] if "retain_test" in extra else splits.test)
    forget_src = np.asarray(splits.forget_idx, dtype=np.int64)
    n = min(n_targets, len(forget_src), len(held_src))
    if n < 1:
        raise ValueError(
            f"no targets: the forget set has {len(forget_src)} examples and the held-out set "
            f"{len(held_src)}; a membership audit needs at least one of each"
        )
    forget = np.sort(rng.choice(forget_src, n, replace=False))
    heldout = np.sort(rng.choice(held_src, n, replace=False))
    ref_pool = np.setdiff1d(ref_src, heldout)
    reference = np.sort(rng.choice(ref_pool, min(n_reference, len(ref_pool)), replace=False))
    retain = np.asarray(splits.retain_idx, dtype=np.int64)
    background = np.sort(rng.choice(retain, min(n_background, len(retain)), replace=False))
    info = {
        "n_targets": int(n),
        "n_reference": int(len(reference)),
        "n_background": int(len(background)),
    }
    return TargetPool(forget, heldout + n_train, reference + n_train, background, n_train, info)


# -- cached signals -------------------------------------------------------------------------------
def cached_arrays(
    ctx: Any,
    what: str,
    request: Mapping[str, Any],
    compute: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Arrays computed once per request and kept in ``<cache>/signals/<what>/<key>.npz``
    (written atomically; read without pickle; a file made for another request is recomputed)."""
    from obliviate.store import atomic_write, canonical_json

    text = canonical_json(request)
    path = Path(ctx.cache.root) / "signals" / what / f"{_cache_key(request)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["__request__"]) == text:
                    log.info("signals cache hit: %s", path)
                    return {k: z[k] for k in z.files if k != "__request__"}
        except (OSError, ValueError, KeyError) as e:  # unreadable: recompute and replace
            log.warning("ignoring unreadable signals file %s (%s)", path, e)
    arrays = compute()
    with atomic_write(path) as f:
        np.savez_compressed(f, __request__=np.array(text), **arrays)
    return arrays


def _logits(model: nn.Module, data: Any, task: Any) -> np.ndarray:
    from obliviate.audits.signals import predict_logits

    return predict_logits(model, data, task)


def shadow_logits(ctx: Any, *, plan: ShadowBank, query_idx: np.ndarray, tag: str) -> np.ndarray:
    """(K, Q, C) float64 logits of the bank's trained shadows on population indices
    ``query_idx``, cached with the bank's fingerprint (a rerun loads no model)."""
    from obliviate.store import cache_key

    query = np.asarray(query_idx, dtype=np.int64)
    request = {
        "what": "shadow-logits", "bench": ctx.bench.identity(), "tag": tag,
        "bank": plan.fingerprint(), "query": index_hash(query),
    }  # fmt: skip

    def compute() -> dict[str, np.ndarray]:
        models = train_models(
            ctx, [plan.train_idx(k) for k in range(len(plan.seeds))], plan.seeds, kind="shadow"
        )
        data = population_data(ctx.bench, ctx.dataset, query)
        return {"logits": np.stack([_logits(m, data, ctx.task) for m in models])}

    log.debug("shadow logits %s", cache_key(request))
    return cached_arrays(ctx, "shadow-logits", request, compute)["logits"]


@dataclass(frozen=True)
class _UnlearnJob:
    env: _Env
    train_idx: np.ndarray  # the shadow's training set (population indices)
    seed: int  # the shadow's seed
    forget_idx: np.ndarray  # what it unlearns (a subset of train_idx)
    method: Any  # a Method (picklable dataclass); None = exact unlearning by retraining
    budget: Budget
    unlearn_seed: int
    query_idx: np.ndarray  # where to read the unlearned shadow's logits


def _unlearn_job(job: _UnlearnJob) -> np.ndarray:
    """Worker side: load the shadow, unlearn its forget set, return its logits on the query."""
    bench, ds, task, cache = _load_env(job.env)
    retain_idx = np.setdiff1d(job.train_idx, job.forget_idx)
    if job.method is None:  # exact unlearning: the recipe on what is left, the shadow's seed
        model, _ = _fit(bench, ds, task, cache, retain_idx, job.seed, "shadow")
    else:
        model, _ = _fit(bench, ds, task, cache, job.train_idx, job.seed, "shadow")
        forget = population_data(bench, ds, job.forget_idx)
        retain = population_data(bench, ds, retain_idx)
        with seeded(job.unlearn_seed):
            model = job.method.unlearn(model, forget, retain, task=task, budget=job.budget)
    logits = _logits(model, population_data(bench, ds, job.query_idx), task)
    if not np.isfinite(logits).all():
        raise FloatingPointError(
            f"{type(job.method).__name__} made a shadow model's outputs non-finite: the method "
            f"diverged. Lower its learning rate."
        )
    return logits


def unlearned_shadow_logits(
    ctx: Any,
    *,
    plan: ShadowBank,
    forget_cols: np.ndarray,
    query_idx: np.ndarray,
    method: Any | None,
    tag: str,
) -> np.ndarray:
    """(K, Q, C) logits on ``query_idx`` of every shadow after it unlearned its members among
    the pool columns ``forget_cols`` with ``method`` (None: exact unlearning, i.e. the shadow
    retrained by the recipe without them). The shadows run through ``ctx.executor``; the
    logits are cached by (bank, method and its hyperparameters, budget, forget columns)."""
    from obliviate.executors import get_executor

    cols = np.asarray(forget_cols, dtype=np.int64)
    query = np.asarray(query_idx, dtype=np.int64)
    method_id = None
    if method is not None:
        params = dataclasses.asdict(method) if dataclasses.is_dataclass(method) else repr(method)
        method_id = {
            "type": f"{type(method).__module__}.{type(method).__qualname__}",
            "params": params,
        }
    request = {
        "what": "unlearned-shadow-logits", "bench": ctx.bench.identity(), "tag": tag,
        "bank": plan.fingerprint(), "forget_cols": index_hash(cols), "query": index_hash(query),
        "method": method_id, "budget": dataclasses.asdict(ctx.budget), "seed": int(ctx.seed),
    }  # fmt: skip

    def compute() -> dict[str, np.ndarray]:
        # the trained bank first (through the executor); exact unlearning needs no trained shadow
        if method is not None:
            train_models(ctx, [plan.train_idx(k) for k in range(len(plan.seeds))], plan.seeds)
        env = _make_env(ctx)
        in_forget = np.zeros(len(plan.pool_idx), dtype=bool)
        in_forget[cols] = True
        jobs = [
            _UnlearnJob(
                env,
                plan.train_idx(k),
                int(plan.seeds[k]),
                plan.pool_idx[plan.members[k] & in_forget],
                method,
                ctx.budget,
                derive_seed(ctx.seed, "unlearn-shadow", tag, k),
                query,
            )  # fmt: skip
            for k in range(len(plan.seeds))
        ]
        executor = get_executor(getattr(ctx, "executor", "local"))
        what = "retrained" if method is None else type(method).__name__
        desc = f"unlearned shadows ({what})" if getattr(ctx, "progress", False) else None
        return {"logits": np.stack(executor.map(_unlearn_job, jobs, desc=desc))}

    return cached_arrays(ctx, "unlearned-shadow-logits", request, compute)["logits"]
