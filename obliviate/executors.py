"""Where many independent jobs run (shadow models, unlearned shadows, seeds): in-process, in
worker processes on this machine, or on a Ray cluster. ``get_executor(name).map(fn, items)``
returns ``[fn(item) for item in items]`` in order, whichever executor runs them.

Names (the ``--executor`` flag and ``RunContext.executor``):

- ``"local"``: in this process, one job after the other.
- ``"processes"`` (or ``"processes:N"``): N worker processes (default 2), started with
  ``spawn`` (a forked child of a process that already ran OpenMP can deadlock), each with one
  torch thread. Jobs and results are pickled: ``fn`` must be a top-level function and the items
  plain data (indices, seeds, names, dataclasses), not models or open files. A spawned worker
  re-imports the main script, so a script that uses this executor must keep its work under
  ``if __name__ == "__main__":``.
- ``"ray"`` (or ``"ray:ADDRESS"``): Ray tasks; without an address a local Ray is started with
  ``ray.init(num_cpus=2, include_dashboard=False)``, with ``RAY_AUTH_MODE=disabled`` so that it
  writes no token into the home folder. Needs ``pip install 'obliviate[ray]'``.

Same results whichever executor: every job runs with the same number of torch threads
(``threads``, default 1), in the local executor too, because a convolution's weight gradient
summed by two threads differs from the one-thread sum in the last bits (measured: 1.6e-6 after
one training of the tiny benchmark), and the models trained from the same seeds would then
differ by executor. ``threads=0`` leaves the thread count alone (faster in-process on an idle
machine, but not bit-identical to what workers train).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

log = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "get_executor",
    "torch_threads",
]

T = TypeVar("T")
R = TypeVar("R")
EXECUTORS = ("local", "processes", "ray")


class Executor(Protocol):
    """Runs ``fn`` over ``items`` and returns the results in the order of ``items``."""

    name: str

    def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, desc: str | None = None
    ) -> list[R]: ...


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: unchanged), restoring them after."""
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _call(fn: Callable[[T], R], item: T, threads: int) -> R:
    """One job with a pinned thread count: what every executor runs, so results agree."""
    with torch_threads(threads):
        return fn(item)


def _bar(total: int, desc: str | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc or "jobs", disable=desc is None, leave=False, unit="job")


@dataclass(frozen=True)
class LocalExecutor:
    """In this process, one job after the other."""

    threads: int = 1  # torch threads per job (0: leave as is; see the module docstring)
    name: str = "local"

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, desc: str | None = None) -> list[R]:
        items = list(items)
        out = []
        with _bar(len(items), desc) as bar:
            for item in items:
                out.append(_call(fn, item, self.threads))
                bar.update(1)
        return out


def _init_worker(threads: int) -> None:
    # Before any parallel region runs in the fresh process: one pool of `threads` threads.
    if threads > 0:
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)


@dataclass(frozen=True)
class ProcessExecutor:
    """``workers`` spawned processes on this machine, ``threads`` torch threads each."""

    workers: int = 2  # worker processes (keep workers x threads <= the machine's cores)
    threads: int = 1  # torch threads per worker
    name: str = "processes"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"ProcessExecutor needs at least one worker, got {self.workers}")

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, desc: str | None = None) -> list[R]:
        items = list(items)
        if not items:
            return []
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)), mp_context=ctx,
            initializer=_init_worker, initargs=(self.threads,),
        )  # fmt: skip
        try:
            futures = [pool.submit(_call, fn, item, self.threads) for item in items]
            with _bar(len(items), desc) as bar:
                for f in cf.as_completed(futures):
                    f.result()  # raise the first failure now, not after every job ran
                    bar.update(1)
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "the 'ray' executor needs Ray, which is not installed. Install it with: "
            "pip install 'obliviate[ray]' (or use --executor processes on one machine)"
        ) from e
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Ray tasks: on a local Ray started here (``address=None``) or on a running cluster."""

    address: str | None = None  # "auto", "ray://host:10001"...; None starts a local Ray
    num_cpus: int = 2  # CPUs of the local Ray (ignored when joining a cluster)
    threads: int = 1  # torch threads per task (each task reserves that many CPUs)
    name: str = "ray"

    def _ensure_started(self) -> Any:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token in the home folder
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        return ray

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, desc: str | None = None) -> list[R]:
        items = list(items)
        if not items:
            return []
        ray = self._ensure_started()
        remote = ray.remote(num_cpus=max(self.threads, 1))(_call)
        refs = [remote.remote(fn, item, self.threads) for item in items]
        pending = list(refs)
        with _bar(len(refs), desc) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # raise the first failure now
                bar.update(len(done))
        return ray.get(refs)


def get_executor(
    name: str | Executor = "local",
    *,
    workers: int | None = None,
    threads: int = 1,
    address: str | None = None,
) -> Executor:
    """An executor by name: "local", "processes" ("processes:4" for 4 workers), "ray"
    ("ray:ADDRESS" to join a cluster). An Executor object is returned as it is."""
    if not isinstance(name, str):
        if not callable(getattr(name, "map", None)):
            raise TypeError(f"expected an executor name or an object with .map, got {name!r}")
        return name
    if name.startswith("ray://"):  # a Ray client address given as the name itself
        return RayExecutor(address=name, threads=threads)
    kind, _, arg = name.partition(":")
    kind = kind.strip().lower()
    if kind == "local":
        return LocalExecutor(threads=threads)
    if kind == "processes":
        if arg:
            try:
                workers = int(arg)
            except ValueError:
                raise ValueError(f"bad executor {name!r}: write processes:<workers>") from None
        return ProcessExecutor(workers=workers or 2, threads=threads)
    if kind == "ray":
        return RayExecutor(address=arg or address, threads=threads)
    raise ValueError(
        f"unknown executor {name!r}; use one of: local, processes, processes:<workers>, ray, "
        f"ray:<address>"
    )
