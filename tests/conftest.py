"""Shared fixtures: the tiny benchmark of every modality (sklearn's real 8x8 digits with a stride
CNN; 16 fictitious people and a 2-layer Llama; captioned 8x8 digits and a small UNet) trained
once per test session into a temporary cache, with a RunContext for audits."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from obliviate.bench.runner import RunContext, reference_models
from obliviate.loop import derive_seed
from obliviate.registry import BENCHMARKS
from obliviate.store import ModelCache

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_env(
    cache_root, forget: str | None = "class:3", seed: int = 0, bench: str = "tiny"
) -> SimpleNamespace:
    """Original, oracle, splits and a RunContext for ``bench`` (``forget=None``: its default)."""
    bench = BENCHMARKS.get(bench)
    ds = bench.load()
    task = bench.task(ds)
    forget = bench.resolve_forget(ds, forget)
    splits = bench.splits(ds, forget, derive_seed(seed, "split"))
    cache = ModelCache(cache_root)
    (original, _), (oracle, _) = reference_models(
        bench, ds, task, cache, splits=splits, seed=seed, progress=False
    )
    ctx = RunContext(
        seed=seed, bench=bench, dataset=ds, task=task, splits=splits, method=None,
        budget=bench.budget(), cache=cache, oracle=oracle, progress=False,
    )  # fmt: skip
    return SimpleNamespace(
        bench=bench, ds=ds, task=task, splits=splits, cache=cache, original=original,
        oracle=oracle, ctx=ctx, fresh=lambda: copy.deepcopy(original),
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Class forgetting (digit 3) on the tiny benchmark: original, oracle, splits, ctx."""
    return make_env(tmp_path_factory.mktemp("cache"), "class:3")


@pytest.fixture(scope="session")
def tiny_random(tmp_path_factory):
    """10% random forgetting on the tiny benchmark."""
    return make_env(tmp_path_factory.mktemp("cache-random"), "random:10%")


@pytest.fixture(scope="session")
def lm_tiny(tmp_path_factory):
    """Forget 2 of 16 fictitious people on lm-world-tiny (a 2-layer Llama): needs `[lm]`."""
    pytest.importorskip("transformers")
    return make_env(tmp_path_factory.mktemp("cache-lm"), None, bench="lm-world-tiny")


def _train_oracle_in_background(cache_root, bench_name: str, forget: str | None, seed: int):
    """Start training ``bench_name``'s retrain oracle into ``cache_root`` in a worker process
    (one thread), so that it trains while this process trains the original: the t2i fixture's
    two models take the wall time of one. Returns the process (join it before reading)."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_train_oracle, args=(str(cache_root), bench_name, forget, seed), daemon=True
    )
    proc.start()
    return proc


def _train_oracle(cache_root: str, bench_name: str, forget: str | None, seed: int) -> None:
    from obliviate.bench.runner import trained_model

    torch.set_num_threads(1)
    bench = BENCHMARKS.get(bench_name)
    ds = bench.load()
    task = bench.task(ds)
    splits = bench.splits(ds, bench.resolve_forget(ds, forget), derive_seed(seed, "split"))
    trained_model(
        bench, ds, task, ModelCache(cache_root), train_idx=splits.retain_idx,
        seed=derive_seed(seed, "train"), kind="oracle", progress=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def t2i_tiny(tmp_path_factory):
    """Erase the concept "three" on t2i-tiny (8x8 digits, captioned, tinted; a small UNet that
    draws its concept: about 1,900 training steps per model, the oracle trained in parallel)."""
    root = tmp_path_factory.mktemp("cache-t2i")
    worker = _train_oracle_in_background(root, "t2i-tiny", None, 0)
    n = torch.get_num_threads()
    # One intra-op thread: these 8x8 models gain nothing from two, and on a shared machine two
    # spinning threads trained the fixture 30x slower.
    torch.set_num_threads(1)
    try:
        from obliviate.bench.runner import trained_model

        bench = BENCHMARKS.get("t2i-tiny")
        ds = bench.load()
        trained_model(
            bench, ds, bench.task(ds), ModelCache(root), train_idx=bench.all_train_indices(ds),
            seed=derive_seed(0, "train"), kind="original", progress=False,
        )  # fmt: skip
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"training the t2i-tiny oracle failed (exit {worker.exitcode})")
        env = make_env(root, None, bench="t2i-tiny")  # both models load from the cache
        env.cache_root = root
        return env
    finally:
        torch.set_num_threads(n)


# The tiny fixture of each Task kind, for the contract tests.
KIND_FIXTURES = {"vision": "tiny", "lm": "lm_tiny", "diffusion": "t2i_tiny"}
