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


@pytest.fixture(scope="session")
def t2i_tiny(tmp_path_factory):
    """Erase the concept "three" on t2i-tiny (8x8 digits, captioned, tinted; a small UNet)."""
    n = torch.get_num_threads()
    # One intra-op thread: these 8x8 models gain nothing from two, and on a shared machine two
    # spinning threads trained the fixture 30x slower.
    torch.set_num_threads(1)
    try:
        return make_env(tmp_path_factory.mktemp("cache-t2i"), None, bench="t2i-tiny")
    finally:
        torch.set_num_threads(n)


# The tiny fixture of each Task kind, for the contract tests.
KIND_FIXTURES = {"vision": "tiny", "lm": "lm_tiny", "diffusion": "t2i_tiny"}
