"""Shared fixtures: the `tiny` benchmark (sklearn's real 8x8 digits, stride CNN) trained once
per test session into a temporary cache, and a RunContext for audits."""

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


def make_env(cache_root, forget: str = "class:3", seed: int = 0) -> SimpleNamespace:
    bench = BENCHMARKS.get("tiny")
    ds = bench.load()
    task = bench.task(ds)
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
