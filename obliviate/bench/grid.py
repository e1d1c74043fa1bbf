"""Suites: named grids of (benchmark, deletion request) x method x seed, run through the runner.

``run_suite("fmnist-class")`` runs every cell of the grid with ``runner.run(spec,
exist="reuse")``: a rerun reuses the finished run folders and fills only the missing ones, and a
failing run is logged while the grid goes on. Method and audit lists name every classifier method
and audit the project has or is writing; they are filtered to the ones registered when the suite
runs (the missing ones are logged), so a suite works today and picks up new entries as they land.

Tuned recipes: ``obliviate.tune`` writes the best hyperparameters of a method on a suite to
``<tuned>/<suite>/<method>.toml`` where ``<tuned>`` is the folder ``tuned`` beside the runs
folder (``runs/`` -> ``tuned/``), or ``$OBLIVIATE_TUNED`` when set. ``run_suite`` uses that file's
``[params]`` table for the method, and the ``params`` argument overrides it key by key.

This module is imported when the benchmark registry discovers ``obliviate.bench``: it registers
nothing and imports only the registry at module level.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.registry import AUDITS, BENCHMARKS, METHODS

log = logging.getLogger(__name__)

__all__ = [
    "SUITES",
    "Suite",
    "SuiteResults",
    "plan_suite",
    "read_tuned",
    "run_suite",
    "tuned_dir",
    "tuned_path",
]

# Every classifier method of the project, in the order the report lists them.
CLASSIFIER_METHODS = (
    "finetune",
    "grad-ascent",
    "neggrad-plus",
    "random-label",
    "l1-sparse",
    "salun",
    "scrub",
    "ssd",
    "bad-teacher",
    "boundary-shrink",
    "trw",
    "rwft",
    "minnorm-og",
    "influence-prune",
)
# Cheap audits first; the shadow-model audits (lira, u-lira, rmia, apollo, epsilon) train banks
# of models per seed and dominate a suite's cost (see each audit's docstring for its size knobs).
_COMMON_AUDITS = ("accuracy", "mia-efficacy", "mia-loss", "mia-entropy", "relearn")
_SHADOW_AUDITS = ("lira", "u-lira", "rmia", "apollo", "epsilon")
# MIA-NN (the TRW paper's attack) is defined for class and sub-class requests only.
CLASS_AUDITS = _COMMON_AUDITS + ("mia-nn",) + _SHADOW_AUDITS
RANDOM_AUDITS = _COMMON_AUDITS + _SHADOW_AUDITS


@dataclass(frozen=True)
class Suite:
    """A named grid: every (benchmark, forget rule) x method (x its variants) x seed."""

    name: str  # the key in SUITES
    benchmarks: tuple[tuple[str, str | None], ...]  # (benchmark key or "glob-*", forget or None)
    methods: tuple[str, ...]  # METHODS keys; unregistered ones are skipped at run time
    seeds: tuple[int, ...]  # run seeds (each gets its own original, oracle and split)
    audits: tuple[str, ...] | None  # AUDITS keys (filtered); None = each benchmark's own list
    description: str = ""  # one line for `obliviate list suites`
    # Several runs of one method with different fixed hyperparameters (e.g. influence-prune at
    # three pruning fractions); a method not named here runs once with its defaults.
    variants: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.benchmarks or not self.methods or not self.seeds:
            raise ValueError(f"suite {self.name!r} needs benchmarks, methods and seeds")


class SuiteResults(list):
    """The finished runs of a suite (a list of RunResult), with ``failures``: (spec, error)."""

    def __init__(
        self, results: list[Any] | None = None, failures: list[tuple[Any, str]] | None = None
    ) -> None:
        super().__init__(results or [])
        self.failures: list[tuple[Any, str]] = list(failures or [])


def _register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


SUITES: dict[str, Suite] = {}

_register(
    Suite(
        "tiny",
        benchmarks=(("tiny", None),),
        methods=("finetune", "grad-ascent"),
        seeds=(0, 1),
        audits=("accuracy", "mia-efficacy", "mia-loss"),
        description="sklearn digits, forget the digit 3, finetune and grad-ascent, 2 seeds "
        "(seconds: tests and the demo; relearn is left out, it alone takes ~10x longer)",
    )
)
_register(
    Suite(
        "fmnist-class",
        benchmarks=(("fmnist-class", None),),
        methods=CLASSIFIER_METHODS,
        seeds=(0, 1, 2),
        audits=CLASS_AUDITS,
        description="Fashion-MNIST, forget the class Shirt: every classifier method, 3 seeds",
    )
)
_register(
    Suite(
        "fmnist-random10",
        benchmarks=(("fmnist-random10", None),),
        methods=CLASSIFIER_METHODS,
        seeds=(0, 1, 2),
        audits=RANDOM_AUDITS,
        description="Fashion-MNIST, forget 10% at random: every classifier method, 3 seeds",
    )
)
_register(
    Suite(
        "fmnist-subclass",
        benchmarks=(("fmnist-subclass", None),),
        methods=CLASSIFIER_METHODS,
        seeds=(0, 1, 2),
        audits=CLASS_AUDITS,
        description="Fashion-MNIST, forget the brighter half of Shirt: every classifier method",
    )
)
_register(
    Suite(
        "free-unlearning",
        benchmarks=(("fmnist-random10", None),),
        methods=("salun", "influence-prune"),
        seeds=(0, 1, 2),
        audits=("accuracy", "mia-efficacy", "mia-loss"),
        variants={
            # Kleiman et al.: keep the top fraction q of the forget set by influence, run the
            # inner method on it; compare with the inner method on the whole forget set.
            "influence-prune": tuple({"inner": "salun", "q": q} for q in (0.25, 0.5, 0.75)),
        },
        description="influence-prune (q = 0.25, 0.5, 0.75) vs its inner method salun, "
        "Fashion-MNIST 10% random forgetting",
    )
)
_register(
    Suite(
        "overparam",
        benchmarks=(("overparam-*", None),),
        methods=("minnorm-og", "finetune", "grad-ascent", "neggrad-plus"),
        seeds=(0, 1, 2),
        audits=None,
        description="Block et al.'s overparameterised benchmarks (every registered "
        "overparam-* benchmark): minnorm-og and its baselines",
    )
)


# -- tuned recipes ----------------------------------------------------------------------------
def tuned_dir(runs_dir: Path | str | None = None) -> Path:
    """Where tuned recipes live: ``$OBLIVIATE_TUNED``, else ``tuned/`` beside the runs folder."""
    env = os.environ.get("OBLIVIATE_TUNED")
    if env:
        return Path(env)
    from obliviate.store import default_runs_dir

    runs = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    return runs.absolute().parent / "tuned"


def tuned_path(suite: str, method: str, *, runs_dir: Path | str | None = None) -> Path:
    return tuned_dir(runs_dir) / suite / f"{method}.toml"


def read_tuned(path: Path | str) -> dict[str, Any]:
    """The ``[params]`` table of a tuned-recipe TOML file (see ``obliviate.tune``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML ({e}); fix or delete it.") from None
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{path}: [params] must be a table of hyperparameters")
    return params


# -- planning ---------------------------------------------------------------------------------
def _suite(name: str) -> Suite:
    if name not in SUITES:
        close = difflib.get_close_matches(name, list(SUITES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown suite {name!r}.{hint} Known: {', '.join(sorted(SUITES))}.")
    return SUITES[name]


def _benchmarks(suite: Suite) -> list[tuple[str, str | None]]:
    """Expand glob patterns ("overparam-*") against the registered benchmarks."""
    out: list[tuple[str, str | None]] = []
    for key, forget in suite.benchmarks:
        if any(ch in key for ch in "*?["):
            matched = [b for b in BENCHMARKS.names() if fnmatch.fnmatchcase(b, key)]
            if not matched:
                raise ValueError(
                    f"suite {suite.name!r} needs benchmarks matching {key!r} and none is "
                    f"registered (registered: {', '.join(BENCHMARKS.names())}). They come from "
                    f"their own module under obliviate/bench/; check it is installed and imports."
                )
            out += [(b, forget) for b in matched]
        elif key not in BENCHMARKS:
            BENCHMARKS.get(key)  # raises the registry's did-you-mean error
        else:
            out.append((key, forget))
    return out


def plan_suite(
    name: str,
    *,
    seeds: tuple[int, ...] | list[int] | None = None,
    methods: tuple[str, ...] | list[str] | None = None,
    audits: tuple[str, ...] | list[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    runs_dir: Path | str | None = None,
    max_steps: int | None = None,
) -> list[Any]:
    """The RunSpecs ``run_suite`` would run, in order (benchmark, seed, method, variant).

    Methods and audits the suite names but the registries lack are skipped and logged; methods
    named explicitly in ``methods`` must exist. Entries that do not support a benchmark's Task
    kind are skipped for that benchmark.
    """
    from obliviate.types import RunSpec

    suite = _suite(name)
    seeds = tuple(seeds) if seeds is not None else suite.seeds
    if methods is not None:
        for m in methods:
            METHODS.get(m)  # an explicit request for an unknown method is an error
        wanted = tuple(methods)
    else:
        wanted = tuple(m for m in suite.methods if m in METHODS)
        missing = [m for m in suite.methods if m not in METHODS]
        if missing:
            log.warning("suite %s: methods not registered yet, skipped: %s", name, missing)
    audit_list: tuple[str, ...] | None
    if audits is not None:
        for a in audits:
            AUDITS.get(a)
        audit_list = tuple(audits)
    elif suite.audits is not None:
        audit_list = tuple(a for a in suite.audits if a in AUDITS)
        missing = [a for a in suite.audits if a not in AUDITS]
        if missing:
            log.warning("suite %s: audits not registered yet, skipped: %s", name, missing)
    else:
        audit_list = None
    params = dict(params or {})
    unknown = set(params) - set(wanted)
    if unknown:
        raise ValueError(
            f"params given for methods not in this suite run: {sorted(unknown)} "
            f"(the suite runs {list(wanted)})"
        )

    specs = []
    for bench_key, forget in _benchmarks(suite):
        bench = BENCHMARKS.get(bench_key)
        kind = getattr(bench, "kind", "vision")
        bench_audits = audit_list
        if bench_audits is not None:
            unsupported = [a for a in bench_audits if kind not in AUDITS.get(a).supports]
            if unsupported:
                log.warning(
                    "%s: audits without %r support skipped: %s", bench_key, kind, unsupported
                )
            bench_audits = tuple(a for a in bench_audits if a not in unsupported)
        for seed in seeds:
            for method in wanted:
                cls = METHODS.get(method)
                if kind not in getattr(cls, "supports", frozenset()):
                    log.warning(
                        "%s: method %s does not support %r, skipped", bench_key, method, kind
                    )
                    continue
                tuned = tuned_path(name, method, runs_dir=runs_dir)
                base = read_tuned(tuned) if tuned.exists() else {}
                if base:
                    log.info("suite %s: %s uses the tuned recipe %s", name, method, tuned)
                for variant in suite.variants.get(method, ({},)):
                    inner = variant.get("inner")
                    if isinstance(inner, str) and inner not in METHODS:
                        log.warning("%s: inner method %r not registered, skipped", method, inner)
                        continue
                    p = {**base, **variant, **dict(params.get(method, {}))}
                    specs.append(
                        RunSpec(
                            bench_key,
                            method,
                            params=p,
                            seed=int(seed),
                            forget=forget,
                            audits=bench_audits,
                            max_steps=max_steps,
                        )  # fmt: skip
                    )
    return specs


def run_suite(
    name: str,
    *,
    seeds: tuple[int, ...] | list[int] | None = None,
    methods: tuple[str, ...] | list[str] | None = None,
    executor: str = "local",
    runs_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    params: dict[str, dict] | None = None,
    audits: tuple[str, ...] | list[str] | None = None,
    max_steps: int | None = None,
) -> SuiteResults:
    """Run every cell of suite ``name``; reuse finished run folders; return what finished.

    Each method run also runs (or reuses) its original and oracle rows. A failing run is logged
    and the grid goes on; ``SuiteResults.failures`` lists (spec, error) and a summary is logged
    at the end. ``executor`` is passed to every run (the shadow-model audits train through it);
    the runs themselves go one after the other, so the original and oracle of a (benchmark,
    seed) are trained once and then read from the cache.
    """
    from obliviate.bench.runner import run

    specs = plan_suite(
        name, seeds=seeds, methods=methods, audits=audits, params=params, runs_dir=runs_dir,
        max_steps=max_steps,
    )  # fmt: skip
    if not specs:
        log.warning("suite %s: nothing to run (no registered method fits its benchmarks)", name)
    results: list[Any] = []
    failures: list[tuple[Any, str]] = []
    for i, spec in enumerate(specs, 1):
        label = f"{spec.benchmark}/{spec.method} seed {spec.seed}"
        if spec.params:
            label += " " + ",".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
        log.info("suite %s [%d/%d] %s", name, i, len(specs), label)
        try:
            res = run(
                spec, runs_dir=runs_dir, cache_dir=cache_dir, data_dir=data_dir, exist="reuse",
                progress=progress, executor=executor,
            )  # fmt: skip
        except Exception as e:  # one bad cell must not stop a grid of hours
            log.error("suite %s: %s failed: %s: %s", name, label, type(e).__name__, e)
            failures.append((spec, f"{type(e).__name__}: {e}"))
            continue
        results.append(res)
    if failures:
        log.warning(
            "suite %s: %d of %d runs failed:\n%s", name, len(failures), len(specs),
            "\n".join(f"  {s.benchmark}/{s.method} seed {s.seed}: {err}" for s, err in failures),
        )  # fmt: skip
    else:
        log.info("suite %s: %d runs finished", name, len(results))
    return SuiteResults(results, failures)


def describe_suite(name: str) -> dict[str, Any]:
    """The suite's definition as plain data (for `obliviate list suites -v`)."""
    return dataclasses.asdict(_suite(name))
