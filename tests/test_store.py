from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from obliviate import store
from obliviate.store import CacheError, ModelCache, RunExistsError, read_run, write_run


def make():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_cache_trains_once_then_reuses(tmp_path):
    cache = ModelCache(tmp_path)
    calls = []

    def train(m):
        calls.append(1)
        with torch.no_grad():
            m.weight.add_(1.0)
        return {"seconds": 0.1}

    req = {"bench": "x", "seed": 1}
    m1, man1 = cache.get_or_train("original", req, make, train)
    m2, man2 = cache.get_or_train("original", req, make, train)
    assert len(calls) == 1
    assert torch.equal(m1.weight, m2.weight)
    assert man2["train"]["seconds"] == 0.1 and man1["sha256"] == man2["sha256"]


def test_mismatched_manifest_is_refused_and_kept(tmp_path):
    cache = ModelCache(tmp_path)
    req = {"bench": "x", "seed": 1}
    cache.get_or_train("original", req, make, lambda m: {})
    weights, manifest = cache.paths("original", store.cache_key(req))
    doc = json.loads(manifest.read_text())
    doc["request"]["seed"] = 2  # as if another request had been stored under this key
    manifest.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="another request"):
        cache.get_or_train("original", req, make, lambda m: {})
    assert weights.exists() and manifest.exists()  # nothing deleted


def test_corrupted_weights_are_refused_and_kept(tmp_path):
    cache = ModelCache(tmp_path)
    req = {"k": 1}
    cache.get_or_train("oracle", req, make, lambda m: {})
    weights, _ = cache.paths("oracle", store.cache_key(req))
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="SHA-256"):
        cache.load("oracle", req, make)
    assert weights.exists()


def test_wrong_architecture_is_refused(tmp_path):
    cache = ModelCache(tmp_path)
    req = {"k": 2}
    cache.get_or_train("oracle", req, make, lambda m: {})
    with pytest.raises(CacheError, match="another architecture"):
        cache.load("oracle", req, lambda: torch.nn.Linear(4, 2))


def test_interrupted_write_leaves_no_loadable_file(tmp_path, monkeypatch):
    cache = ModelCache(tmp_path)
    req = {"k": 3}

    def boom(tensors, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train("oracle", req, make, lambda m: {})
    weights, manifest = cache.paths("oracle", store.cache_key(req))
    assert not weights.exists() and not manifest.exists()
    assert list((tmp_path / "oracle").iterdir()) == []  # the temporary file was removed
    monkeypatch.undo()
    assert cache.load("oracle", req, make) is None  # a clean miss: it will be retrained


def test_weights_without_manifest_are_not_loaded(tmp_path):
    cache = ModelCache(tmp_path)
    req = {"k": 4}
    weights, _ = cache.paths("oracle", store.cache_key(req))
    store.save_weights(make(), weights)
    assert cache.load("oracle", req, make) is None


def test_run_folder_is_atomic_and_never_overwritten(tmp_path):
    path = tmp_path / "runs" / "b" / "m" / "0-abc"
    write_run(
        path, manifest={"a": 1}, reports={"r": {"metrics": {"x": 1.0}}}, arrays={"s": np.arange(3)}
    )
    stored = read_run(path)
    assert stored["manifest"] == {"a": 1}
    assert store.load_arrays(path / "arrays.npz")["s"].tolist() == [0, 1, 2]
    with pytest.raises(RunExistsError, match="nothing was overwritten"):
        write_run(path, manifest={"a": 2}, reports={}, arrays={})
    assert read_run(path)["manifest"] == {"a": 1}


def test_failed_run_write_leaves_nothing(tmp_path):
    path = tmp_path / "r"
    with pytest.raises(TypeError):
        write_run(path, manifest={"a": object()}, reports={}, arrays={})
    assert not path.exists() and list(tmp_path.iterdir()) == []
