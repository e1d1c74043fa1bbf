"""The ``obliviate`` command: train | run | bench | audit | report | tune | list | show | demo.

Every command builds the same objects as the Python API (``RunSpec``, registries); ``--set
key=value`` is checked against the method's dataclass field types, and ``--config FILE.toml``
takes the same keys as ``RunSpec``. Errors print one line that says the fix (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.registry import AUDITS, BENCHMARKS, DATASETS, METHODS, MODELS
from obliviate.types import RunSpec

log = logging.getLogger("obliviate")

SPEC_KEYS = {f.name for f in dataclasses.fields(RunSpec)}


def _parse_sets(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _parse_audit_sets(items: Sequence[str] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in _parse_sets(items, "--audit-set").items():
        audit, dot, field = key.partition(".")
        if not dot:
            raise ValueError(f"--audit-set expects audit.key=value, got {key}={value}")
        out.setdefault(audit, {})[field] = value
    return out


def _load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        cfg = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p} is not valid TOML: {e}") from None
    unknown = set(cfg) - SPEC_KEYS
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, sorted(SPEC_KEYS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{p}: unknown key {key!r}.{hint} Keys: {', '.join(sorted(SPEC_KEYS))}")
    return cfg


def _csv(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {text!r}") from None


def _dirs(args: argparse.Namespace) -> dict[str, Any]:
    return {"runs_dir": args.runs_dir, "cache_dir": args.cache_dir, "data_dir": args.data_dir}


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    cfg = _load_config(args.config)
    params = dict(cfg.get("params", {}))
    params.update(_parse_sets(args.set, "--set"))
    audit_params = {k: dict(v) for k, v in cfg.get("audit_params", {}).items()}
    for audit, kv in _parse_audit_sets(args.audit_set).items():
        audit_params.setdefault(audit, {}).update(kv)
    bench = args.bench or cfg.get("benchmark")
    method = args.method or cfg.get("method")
    if not bench or not method:
        raise ValueError("name a benchmark and a method: --bench B --method M (or in --config)")
    audits = _csv(args.audits) if args.audits else cfg.get("audits")
    return RunSpec(
        benchmark=bench,
        method=method,
        params=params,
        seed=args.seed if args.seed is not None else int(cfg.get("seed", 0)),
        forget=args.forget or cfg.get("forget"),
        audits=tuple(audits) if audits is not None else None,
        audit_params=audit_params,
        max_steps=args.max_steps if args.max_steps is not None else cfg.get("max_steps"),
        save_model=bool(args.save_model or cfg.get("save_model", False)),
    )


# -- commands ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from obliviate.bench.runner import run

    spec = spec_from_args(args)
    result = run(
        spec,
        exist="reuse" if args.reuse else "error",
        references=not args.no_references,
        progress=not args.quiet,
        executor=args.executor,
        **_dirs(args),
    )
    print(_summary(result.path))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Run audits on an existing run's spec: a new run folder with the chosen audits."""
    from obliviate.bench.runner import run
    from obliviate.store import read_run

    stored = read_run(Path(args.run))["manifest"]["spec"]
    spec = RunSpec(
        benchmark=stored["benchmark"], method=stored["method"], params=stored["params"],
        seed=stored["seed"], forget=stored["forget"], audits=_csv(args.audits),
        audit_params=_parse_audit_sets(args.audit_set), max_steps=stored["max_steps"],
    )  # fmt: skip
    result = run(
        spec, exist="reuse", progress=not args.quiet, executor=args.executor, **_dirs(args)
    )
    print(_summary(result.path))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from obliviate.bench.runner import run

    for method in ("original", "oracle") if args.oracle else ("original",):
        spec = RunSpec(
            args.bench, method, seed=args.seed or 0, forget=args.forget, audits=_csv(args.audits)
        )
        result = run(spec, exist="reuse", progress=not args.quiet, **_dirs(args))
        print(f"{method}: {result.path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from obliviate.bench.grid import run_suite
    from obliviate.report import write_report

    t0 = time.perf_counter()
    results = run_suite(
        args.suite, seeds=_seeds(args.seeds), methods=_csv(args.methods), executor=args.executor,
        progress=not args.quiet, **_dirs(args),
    )  # fmt: skip
    out = Path(args.html or Path(args.runs_dir or "runs") / f"{args.suite}.html")
    paths = write_report([r.path for r in results], html=out, markdown=out.with_suffix(".md"))
    print(f"{len(results)} runs in {time.perf_counter() - t0:.0f} s; report: {paths.get('html')}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from obliviate.report import write_report

    if not (args.html or args.markdown or args.csv):
        args.html = "report.html"
    paths = write_report(
        args.runs, html=args.html, markdown=args.markdown, csv=args.csv, title=args.title
    )
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from obliviate.tune import tune

    best = tune(
        args.suite, method=args.method, trials=args.trials, seeds=_seeds(args.seeds) or (0,),
        timeout=args.timeout, **_dirs(args),
    )  # fmt: skip
    print(best)
    return 0


def _summary(path: Path) -> str:
    from obliviate.report import summary_text

    return summary_text(path)


def cmd_show(args: argparse.Namespace) -> int:
    print(_summary(Path(args.run)))
    return 0


def _first_line(obj: Any) -> str:
    """The module docstring's first line (the paper) for classes; the docstring otherwise."""
    doc = obj.__doc__ or ""
    if (
        dataclasses.is_dataclass(obj)
        and isinstance(obj, type)
        and doc.startswith(obj.__name__ + "(")
    ):
        doc = sys.modules[obj.__module__].__doc__ or ""
    return doc.strip().split("\n")[0]


def _fmt_default(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def cmd_list(args: argparse.Namespace) -> int:
    kinds = {
        "methods": METHODS, "audits": AUDITS, "benchmarks": BENCHMARKS,
        "datasets": DATASETS, "models": MODELS,
    }  # fmt: skip
    wanted = [args.what] if args.what != "all" else list(kinds)
    if args.what == "suites" or args.what == "all":
        try:
            from obliviate.bench.grid import SUITES
        except ImportError:
            SUITES = {}  # noqa: N806 (the grid module is optional while suites are written)
        print("suites:")
        for name, suite in SUITES.items():
            print(f"  {name:18s} {getattr(suite, 'description', '')}")
        if args.what == "suites":
            return 0
    for kind in wanted:
        reg = kinds[kind]
        print(f"{kind}:")
        for name in reg.names():
            obj = reg.get(name)
            doc = getattr(obj, "description", "") or _first_line(obj)
            supports = getattr(obj, "supports", None)
            tag = f" [{', '.join(sorted(supports))}]" if supports else ""
            print(f"  {name:18s}{tag} {doc}")
            if args.verbose:
                for field, tp, default, comment in reg.describe(name):
                    if field in ("name", "description"):
                        continue
                    print(
                        f"      {field} ({tp}) = {_fmt_default(default)}"
                        + (f"  # {comment}" if comment else "")
                    )
    return 0


DEMO_METHODS = ("finetune", "grad-ascent", "salun", "scrub", "trw")
DEMO_AUDITS = ("accuracy", "mia-efficacy", "mia-loss", "mia-nn", "relearn")


def cmd_demo(args: argparse.Namespace) -> int:
    """Real Fashion-MNIST: train, forget the class Shirt with a few methods, audit, report."""
    from obliviate.bench.runner import run
    from obliviate.report import write_report

    out = Path(args.out)
    runs_dir, cache_dir = out / "runs", Path(args.cache_dir) if args.cache_dir else out / "cache"
    methods = [m for m in DEMO_METHODS if m in METHODS]
    audits = tuple(a for a in DEMO_AUDITS if a in AUDITS)
    t0 = time.perf_counter()
    log.info("demo: Fashion-MNIST, forget the class Shirt; methods %s; audits %s", methods, audits)
    paths = []
    for method in ("original", "oracle", *methods):
        spec = RunSpec("fmnist-demo", method, seed=args.seed, audits=audits)
        r = run(spec, runs_dir=runs_dir, cache_dir=cache_dir, data_dir=args.data_dir, exist="reuse",
                progress=not args.quiet)  # fmt: skip
        paths.append(r.path)
        log.info("%-12s done (%.0f s so far)", method, time.perf_counter() - t0)
    written = write_report(
        paths, html=out / "report.html", markdown=out / "report.md", title="obliviate demo"
    )
    print(Path(written["markdown"]).read_text() if "markdown" in written else "")
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Report: {written.get('html')}")
    return 0


# -- parser ----------------------------------------------------------------------------------------
def _add_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", help="where run folders go (default ./runs or $OBLIVIATE_RUNS)")
    p.add_argument("--cache-dir", help="trained-model cache (default ./cache or $OBLIVIATE_CACHE)")
    p.add_argument(
        "--data-dir", help="a folder with the dataset files (e.g. Fashion-MNIST IDX .gz)"
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="obliviate", description=__doc__.split("\n")[0])
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="unlearn with one method on one benchmark, then audit")
    p.add_argument("--bench", help="benchmark (see `obliviate list benchmarks`)")
    p.add_argument("--method", help="method, or 'original' / 'oracle' for the reference rows")
    p.add_argument("--config", help="a TOML file with RunSpec keys ([params], [audit_params.X])")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method hyperparameter")
    p.add_argument("--audit-set", action="append", metavar="AUDIT.KEY=VALUE", help="audit option")
    p.add_argument("--seed", type=int, help="run seed (split, training, unlearning, audits)")
    p.add_argument(
        "--forget",
        help="deletion request: class:Shirt | random:10%% | subclass:Shirt:bright | indices:FILE",
    )
    p.add_argument("--audits", help="comma-separated audits (default: the benchmark's)")
    p.add_argument("--max-steps", type=int, help="budget: at most this many optimizer steps")
    p.add_argument("--save-model", action="store_true", help="write model.safetensors")
    p.add_argument(
        "--reuse", action="store_true", help="return an identical finished run instead of refusing"
    )
    p.add_argument("--no-references", action="store_true", help="skip the original and oracle rows")
    p.add_argument("--executor", default="local", choices=("local", "processes", "ray"))
    _add_dirs(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("audit", help="run (more) audits for the spec of an existing run")
    p.add_argument("run", help="a run folder")
    p.add_argument("--audits", required=True, help="comma-separated audits")
    p.add_argument("--audit-set", action="append", metavar="AUDIT.KEY=VALUE")
    p.add_argument("--executor", default="local", choices=("local", "processes", "ray"))
    _add_dirs(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("train", help="train (or load) a benchmark's original and retrain oracle")
    p.add_argument("bench")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--forget", help="deletion request (for the oracle)")
    p.add_argument("--audits", help="comma-separated audits for the reference rows")
    p.add_argument("--no-oracle", dest="oracle", action="store_false", help="original only")
    _add_dirs(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="run a suite: methods x seeds x requests, then a report")
    p.add_argument("suite", help="see `obliviate list suites`")
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--methods", help="comma-separated subset of the suite's methods")
    p.add_argument("--executor", default="local", choices=("local", "processes", "ray"))
    p.add_argument("--html", help="report path (default <runs-dir>/<suite>.html)")
    _add_dirs(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="tables and plots of run folders: HTML, Markdown, CSV")
    p.add_argument("runs", nargs="+", help="run folders, or folders containing them")
    p.add_argument("--html")
    p.add_argument("--markdown")
    p.add_argument("--csv")
    p.add_argument("--title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tune", help="search a method's hyperparameters against the oracle (Optuna)")
    p.add_argument("suite")
    p.add_argument("--method", required=True)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seeds", help="comma-separated")
    p.add_argument("--timeout", type=float, help="seconds for the whole study")
    _add_dirs(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("list", help="methods, audits, benchmarks, suites, datasets, models")
    p.add_argument(
        "what", nargs="?", default="all",
        choices=("all", "methods", "audits", "benchmarks", "suites", "datasets", "models"),
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="every hyperparameter and default")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a run folder as a readable table, beside its oracle")
    p.add_argument("run")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("demo", help="the embedded default: Fashion-MNIST end to end (~2-5 min)")
    p.add_argument("--out", default="obliviate-demo", help="folder for runs, cache and report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="trained-model cache (default <out>/cache)")
    p.add_argument("--data-dir", help="a folder with the Fashion-MNIST IDX .gz files")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s",
    )
    from obliviate.bench.runner import RunFailed
    from obliviate.store import CacheError, RunExistsError

    try:
        return int(args.func(args) or 0)
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        ImportError,
        RunExistsError,
        CacheError,
        RunFailed,
    ) as e:
        if args.debug:
            raise
        print(f"obliviate: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (ValueError, TypeError)) else 1
    except KeyboardInterrupt:
        print("obliviate: interrupted; finished runs and cached models are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
