"""Executors: names, order of results, errors, pinned threads, and the same models from the
same seeds whichever executor trains them (local, worker processes, Ray when installed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from obliviate.audits.shadows import train_models
from obliviate.executors import (
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    get_executor,
    torch_threads,
)
from obliviate.store import ModelCache


def square(x: int) -> int:  # top level: picklable by reference for worker processes
    return x * x


def threads_seen(_: int) -> int:
    return torch.get_num_threads()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def test_get_executor_names():
    assert get_executor("local") == LocalExecutor(threads=1)
    assert get_executor("processes") == ProcessExecutor(workers=2, threads=1)
    assert get_executor("processes:3").workers == 3
    assert get_executor("ray") == RayExecutor(address=None)
    assert get_executor("ray:auto").address == "auto"
    assert get_executor("ray://head:10001").address == "ray://head:10001"
    ex = LocalExecutor(threads=0)
    assert get_executor(ex) is ex
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        get_executor("gpu")
    with pytest.raises(ValueError, match="processes:<workers>"):
        get_executor("processes:two")
    with pytest.raises(ValueError, match="at least one worker"):
        ProcessExecutor(workers=0)


def test_local_map_pins_and_restores_threads():
    before = torch.get_num_threads()
    assert LocalExecutor().map(square, [3, 1, 2]) == [9, 1, 4]
    assert LocalExecutor(threads=1).map(threads_seen, [0]) == [1]
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0 leaves the count alone
        assert torch.get_num_threads() == before


def test_process_map_order_threads_and_errors():
    ex = ProcessExecutor(workers=2)
    assert ex.map(square, list(range(7))) == [x * x for x in range(7)]
    assert ex.map(threads_seen, [0, 1]) == [1, 1]
    assert ex.map(square, []) == []
    with pytest.raises(ValueError, match="three is not allowed"):
        ex.map(fail_on_three, [1, 2, 3, 4])


def _train(env, cache_root, executor, sets, seeds):
    ctx = copy.copy(env.ctx)
    ctx.cache, ctx.executor = ModelCache(cache_root), executor
    return train_models(ctx, sets, seeds, kind="shadow")


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_processes_train_the_same_models_as_local(tiny, tmp_path):
    n = len(tiny.ds.train)
    rng = np.random.default_rng(0)
    # one train-only set and one with test examples (population indices >= n_train)
    sets = [np.sort(rng.choice(n, 200, replace=False)), np.r_[np.arange(150), n + np.arange(50)]]
    seeds = [11, 12]
    local = _train(tiny, tmp_path / "local", "local", sets, seeds)
    procs = _train(tiny, tmp_path / "procs", "processes", sets, seeds)
    for a, b in zip(local, procs, strict=True):
        assert _same(a, b), "the processes executor trained a different model from the same seed"
    assert not _same(local[0], local[1])
    # a second call finds them in the cache: nothing is dispatched to the (bad) executor
    again = _train(tiny, tmp_path / "procs", "no-such-executor", sets, seeds)
    assert all(_same(a, b) for a, b in zip(procs, again, strict=True))


def test_ray_trains_the_same_models_as_local(tiny, tmp_path):
    pytest.importorskip("ray")
    sets, seeds = [np.arange(120)], [5]
    local = _train(tiny, tmp_path / "local", "local", sets, seeds)
    ray_models = _train(tiny, tmp_path / "ray", "ray", sets, seeds)
    assert _same(local[0], ray_models[0])


def test_ray_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'obliviate\[ray\]'"):
        RayExecutor().map(square, [1])
