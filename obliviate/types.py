"""The nouns of obliviate: Budget, Splits, Report, RunSpec, and the Task / Method / Audit protocols.

Everything a method or an audit sees goes through these types. They are modality-free: a Task
adapts one kind of model (classifier, causal LM, diffusion UNet) to the few operations that
methods and audits need, and ``Data`` is anything with a length that can be subset by indices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "Audit",
    "AuditContext",
    "Budget",
    "Data",
    "Method",
    "Report",
    "RunSpec",
    "Splits",
    "Task",
    "index_hash",
]


@runtime_checkable
class Data(Protocol):
    """A dataset a Task can batch: sized, and subset by an index array (a new Data)."""

    def __len__(self) -> int: ...

    def subset(self, idx: np.ndarray) -> Data: ...


@runtime_checkable
class Task(Protocol):
    """What a modality looks like to methods and audits.

    ``loss`` returns the per-example loss, shape (B,). For sequences it is the *sum* over target
    tokens and the batch carries the token counts, so a method chooses sum or mean on purpose.
    ``divergence(student, teacher, batch)`` is KL(teacher || student) per example, (B,).
    """

    kind: str

    def batches(
        self, data: Data, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Iterator[Any]: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def divergence(self, student: nn.Module, teacher: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module, data: Data) -> dict[str, float]: ...


@dataclass(frozen=True)
class Budget:
    """An upper bound on what an unlearning method may spend.

    Methods plan their own steps (epochs x batches, as in their paper); the budget clips that
    plan. ``max_steps`` counts optimizer steps; the runner counts every ``Optimizer.step`` taken
    during ``unlearn`` and records them, so a method cannot under-report.
    """

    max_steps: int | None = None  # optimizer steps; None = the method's own plan
    max_seconds: float | None = None  # wall-clock; loops stop at the first step past it

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"Budget.max_steps must be >= 0, got {self.max_steps}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"Budget.max_seconds must be > 0, got {self.max_seconds}")

    def clip(self, planned_steps: int) -> int:
        """The number of steps a method may take when its own plan is ``planned_steps``."""
        if self.max_steps is None:
            return planned_steps
        return min(planned_steps, self.max_steps)


def index_hash(idx: np.ndarray) -> str:
    """A short stable hash of an index array (int64, order-sensitive)."""
    arr = np.ascontiguousarray(np.asarray(idx, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Splits:
    """A deletion request made concrete: forget, retain and test data, with the indices.

    ``forget_idx`` and ``retain_idx`` index the benchmark's training set; ``extra`` holds
    named held-out sets an audit may need (``"forget_test"``: test samples of a forgotten class,
    ``"retain_test"``, ``"val"``...). ``info`` describes the rule (kind, class, fraction).
    """

    forget: Data
    retain: Data
    test: Data
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    extra: Mapping[str, Data] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def hashes(self) -> dict[str, str]:
        return {"forget": index_hash(self.forget_idx), "retain": index_hash(self.retain_idx)}


@dataclass
class Report:
    """What an audit found: headline ``metrics`` (JSON scalars), per-example ``arrays``
    (numpy, saved to arrays.npz), and ``curves`` (small named series for plots)."""

    name: str
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class AuditContext(Protocol):
    """What an audit may borrow from the run: the oracle, the method, the seed, the store.

    Expensive things are computed lazily and cached, so an audit that needs no oracle never
    pays for one.
    """

    seed: int
    method: Method | None  # the audited method (U-LiRA, Apollo re-run it on shadow models)

    @property
    def oracle(self) -> nn.Module: ...


class Method(Protocol):
    """An unlearning method: a frozen dataclass of hyperparameters with ``unlearn``."""

    supports: ClassVar[frozenset[str]]

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module: ...


class Audit(Protocol):
    """A measurement or an attack: ``audit`` returns a Report and never changes ``unlearned``."""

    supports: ClassVar[frozenset[str]]

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report: ...


@dataclass(frozen=True)
class RunSpec:
    """The whole configuration of one run: unlearn with ``method`` on ``benchmark``, audit.

    ``method`` may also be ``"original"`` or ``"oracle"``: those rows are audited exactly like
    a method, so "gap to the oracle" is a comparison of two run folders.
    """

    benchmark: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)  # method hyperparameters
    seed: int = 0
    forget: str | None = None  # deletion request, e.g. "class:Shirt", "random:10%"; None = default
    audits: tuple[str, ...] | None = None  # None = the benchmark's audit list
    audit_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_steps: int | None = None  # Budget.max_steps override
    save_model: bool = False  # write model.safetensors into the run folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "method": self.method,
            "params": dict(sorted(self.params.items())),
            "seed": self.seed,
            "forget": self.forget,
            "audits": list(self.audits) if self.audits is not None else None,
            "audit_params": {k: dict(v) for k, v in sorted(self.audit_params.items())},
            "max_steps": self.max_steps,
            "save_model": self.save_model,
        }
