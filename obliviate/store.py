"""Run folders and the model cache: safetensors and JSON only, atomic writes, checked reuse.

Layout::

    runs/<bench>/<method>/<seed>-<hash8>/  manifest.json, report.json, arrays.npz,
                                            model.safetensors (when asked)
    cache/<kind>/<key>.safetensors + <key>.json   originals, oracles, shadow models

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted write never leaves a half file under the final name. A cache entry is complete only
when its JSON manifest exists; the manifest records the request the weights were trained for and
the SHA-256 of the weights, and reuse refuses a mismatch instead of loading the wrong model.
No pickle is ever loaded: ``np.load(..., allow_pickle=False)`` and safetensors only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "CacheError",
    "ModelCache",
    "RunExistsError",
    "atomic_write",
    "cache_key",
    "canonical_json",
    "default_cache_dir",
    "default_runs_dir",
    "load_arrays",
    "load_weights",
    "read_run",
    "save_weights",
    "write_run",
]


class CacheError(RuntimeError):
    """A cache entry is corrupted or was made for another request."""


class RunExistsError(FileExistsError):
    """The run folder already exists; nothing was overwritten."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_RUNS", "runs"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", "cache"))


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))  # e.g. an audit's nested option tables
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)  # JSON has no NaN/inf; keep them readable
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


def cache_key(request: Mapping[str, Any]) -> str:
    """A 16-hex-digit key of a request (benchmark, split, seed, recipe, model...)."""
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: Path) -> str:
    """Write a state dict as safetensors atomically; return the file's SHA-256.

    Shared storage (tied weights) is cloned so that safetensors accepts it.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors, seen = {}, {}
    for k, v in state.items():
        v = v.detach().cpu()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        tensors[k] = v.clone().contiguous() if ptr in seen or not v.is_contiguous() else v
        seen[ptr] = k
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return _sha256(path)


def load_weights(model: nn.Module, path: Path, *, sha256: str | None = None) -> nn.Module:
    """Load safetensors weights into ``model`` (strict), checking the file hash if given."""
    path = Path(path)
    if sha256 is not None and _sha256(path) != sha256:
        raise CacheError(
            f"{path} does not match the SHA-256 in its manifest (corrupted or replaced). "
            f"Delete {path} and {path.with_suffix('.json')} to retrain it."
        )
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated headers
        raise CacheError(
            f"{path} is not a readable safetensors file ({e}). Delete it to retrain."
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CacheError(
            f"{path} holds weights for another architecture ({str(e).splitlines()[0]}). "
            f"Delete it or use another --cache-dir."
        ) from None
    return model


class ModelCache:
    """Trained models keyed by their request; ``get_or_train`` reuses or trains and stores."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.root / kind / key
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    def load(
        self, kind: str, request: Mapping[str, Any], make_model: Callable[[], nn.Module]
    ) -> tuple[nn.Module, dict[str, Any]] | None:
        key = cache_key(request)
        weights, manifest_path = self.paths(kind, key)
        if not manifest_path.exists():
            return None  # never completed (a weights file alone is an interrupted write)
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise CacheError(
                f"{manifest_path} is not valid JSON ({e}). Delete it and {weights} to retrain."
            ) from None
        stored = manifest.get("request")
        if canonical_json(stored) != canonical_json(request):
            raise CacheError(
                f"{manifest_path} was made for another request than the one asked for "
                f"(stored {canonical_json(stored)[:200]}, asked {canonical_json(request)[:200]}). "
                f"Refusing to reuse it; delete it or use another --cache-dir."
            )
        if not weights.exists():
            raise CacheError(
                f"{weights} is missing but its manifest exists. Delete {manifest_path}."
            )
        model = load_weights(make_model(), weights, sha256=manifest.get("sha256"))
        return model.eval(), manifest

    def store(
        self, kind: str, request: Mapping[str, Any], model: nn.Module, info: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = cache_key(request)
        weights, manifest_path = self.paths(kind, key)
        sha = save_weights(model, weights)
        manifest = {"kind": kind, "key": key, "request": dict(request), "sha256": sha, **info}
        _write_json(manifest_path, manifest)  # written last: marks the entry complete
        return manifest

    def get_or_train(
        self,
        kind: str,
        request: Mapping[str, Any],
        make_model: Callable[[], nn.Module],
        train: Callable[[nn.Module], Mapping[str, Any]],
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Load the cached model for ``request``, or build, ``train`` and cache it."""
        hit = self.load(kind, request, make_model)
        if hit is not None:
            log.info("cache hit: %s/%s", kind, cache_key(request))
            return hit
        model = make_model()
        info = dict(train(model))
        manifest = self.store(kind, request, model, {"train": info})
        return model.eval(), manifest


# -- run folders ---------------------------------------------------------------------------------
def write_run(
    path: Path,
    *,
    manifest: Mapping[str, Any],
    reports: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    model: nn.Module | None = None,
) -> Path:
    """Write a whole run folder atomically (a temporary folder renamed into place).

    Refuses to replace an existing folder: the caller decides whether to reuse it.
    """
    path = Path(path)
    if path.exists():
        raise RunExistsError(
            f"run folder {path} already exists; nothing was overwritten. Read it with "
            f"`obliviate show {path}`, or move it away to run again."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_json(tmp / "manifest.json", manifest)
        _write_json(tmp / "report.json", reports)
        with atomic_write(tmp / "arrays.npz") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})
        if model is not None:
            save_weights(model, tmp / "model.safetensors")
        os.replace(tmp, path)  # fails if another process created `path` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_run(path: Path) -> dict[str, Any]:
    """{"manifest", "report", "path"} of a run folder; arrays are loaded on demand."""
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.exists():
        raise FileNotFoundError(
            f"{path} is not a run folder (no manifest.json). Run folders live under "
            f"runs/<benchmark>/<method>/<seed>-<hash>/."
        )
    return {
        "path": path,
        "manifest": json.loads(mf.read_text()),
        "report": json.loads((path / "report.json").read_text()),
    }
