"""U-LiRA with 64 shadow models on Fashion-MNIST, end to end: finetune, grad-ascent, and the
original and oracle rows; and the speed of the local and processes executors on a shadow bank.

    python benchmarks/ulira.py                    # everything (about 12 minutes, idle 2 cores)
    python benchmarks/ulira.py --skip-speed       # only the U-LiRA table
    python benchmarks/ulira.py --speed-only       # only local vs processes
    python benchmarks/ulira.py --bench fmnist-random10   # the full 60k benchmark (see below)

Setup (defaults). Benchmark ``fmnist12k-random10`` (``obliviate/bench/vision.py``):
Fashion-MNIST with a seeded random 12,000-example subset of the training set (the full
10,000-example test set), the project's Fashion-MNIST recipe (stride CNN, 10 epochs, SGD
OneCycle lr 0.05, batch 128), forget request random:10% (1,200 examples). U-LiRA: 64 shadows;
500 forget targets and 500 held-out test targets; 500 further test examples (RMIA's population,
in the shared pool); background: every one of the 10,800 retain examples is in every shadow, so
a shadow trains on about 11,550 examples with the same recipe, close to the original's 12,000
(the audited model and its shadows should be trained alike: with 10x smaller shadows the online
test is miscalibrated). Shadow models: 64 trainings; the oracle row retrains 64 more without
their targets (exact unlearning); finetune and grad-ascent each unlearn the 64 shadows once
(cached). ``loo_*`` columns attack every unlearned shadow with the 63 others: the paper's
protocol, which needs no assumption about the audited model. The 12k subset is the scale-down:
64 shadows on the full 60,000 (``--bench fmnist-random10``) take about 5x longer, and with the
default 10,000-example background those shadows are 5.6x smaller than the original, so read the
``loo_*`` columns.

Speed: the same 8 shadows trained into two fresh caches by the local executor (one job after
the other, one torch thread each) and by the processes executor (2 workers of one thread); the
script checks that both give bit-identical weights and reports the speed-up. Measure on an idle
machine: a shared CPU gives numbers that say more about the neighbours than about the code.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import obliviate
from obliviate.registry import BENCHMARKS

log = logging.getLogger("ulira-benchmark")


ULIRA = {"n_shadows": 64, "n_targets": 500, "n_reference": 500, "n_background": 10800}


def speed(bench_name: str, n_shadows: int, data_dir: str | None) -> dict[str, Any]:
    """Train the same bank with the local and the processes executor; time both."""
    from obliviate.audits.shadows import bank_plan, target_pool, train_models
    from obliviate.bench.runner import RunContext
    from obliviate.loop import derive_seed
    from obliviate.store import ModelCache

    bench = BENCHMARKS.get(bench_name)
    ds = bench.load(data_dir)
    task = bench.task(ds)
    splits = bench.splits(ds, bench.resolve_forget(ds, None), derive_seed(0, "split"))
    out: dict[str, Any] = {"n_shadows": n_shadows}
    models = {}
    for executor in ("local", "processes"):
        with tempfile.TemporaryDirectory(prefix=f"ulira-speed-{executor}-") as root:
            ctx = RunContext(
                seed=0, bench=bench, dataset=ds, task=task, splits=splits, method=None,
                budget=bench.budget(), cache=ModelCache(root), oracle=None, data_dir=data_dir,
                progress=True, executor=executor,
            )  # fmt: skip
            pool = target_pool(
                ctx, n_targets=ULIRA["n_targets"], n_reference=ULIRA["n_reference"],
                n_background=ULIRA["n_background"], tag="speed",
            )  # fmt: skip
            plan = bank_plan(
                ctx, n_models=n_shadows, pool_idx=pool.pool, tag="speed", always_in=pool.background
            )  # fmt: skip
            t0 = time.perf_counter()
            models[executor] = train_models(
                ctx, [plan.train_idx(k) for k in range(n_shadows)], plan.seeds
            )
            out[f"{executor}_s"] = time.perf_counter() - t0
    out["speedup"] = out["local_s"] / out["processes_s"]
    out["identical"] = all(
        all(
            torch.equal(a, b)
            for a, b in zip(m.state_dict().values(), n.state_dict().values(), strict=True)
        )
        for m, n in zip(models["local"], models["processes"], strict=True)
    )
    out["threads"] = torch.get_num_threads()
    return out


def ulira_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    params = dict(ULIRA, n_shadows=args.shadows)
    if args.bench != "fmnist12k-random10":
        params["n_background"] = args.background
    spec_kw = {
        "seed": 0, "audits": ("accuracy", "u-lira"), "audit_params": {"u-lira": params},
    }  # fmt: skip
    run_kw = {
        "runs_dir": args.runs_dir, "cache_dir": args.cache_dir, "data_dir": args.data_dir,
        "executor": args.executor, "exist": "reuse",
    }  # fmt: skip
    rows = []
    for method in args.methods:
        t0 = time.perf_counter()
        obliviate.run(obliviate.RunSpec(args.bench, method, **spec_kw), **run_kw)
        log.info(
            "%s done in %.0f s (with the reference rows the first time)",
            method,
            time.perf_counter() - t0,
        )
    for method in ("original", "oracle", *args.methods):
        res = obliviate.run(obliviate.RunSpec(args.bench, method, **spec_kw), **run_kw)
        m = res.metrics()
        seconds = res.reports["u-lira"].get("seconds", float("nan"))
        rows.append({"row": method, "seconds": seconds, **m})
    return rows


def _fmt(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("row", "row", "{}"), ("accuracy.forget_acc", "forget acc", "{:.3f}"),
        ("accuracy.test_acc", "test acc", "{:.3f}"), ("u-lira.auc", "AUC", "{:.3f}"),
        ("u-lira.auc_ci_low", "CI low", "{:.3f}"), ("u-lira.auc_ci_high", "CI high", "{:.3f}"),
        ("u-lira.balanced_acc", "bal. acc", "{:.3f}"), ("u-lira.tpr@0.01", "TPR@1%", "{:.3f}"),
        ("u-lira.tpr@0.001", "TPR@0.1%", "{:.3f}"), ("u-lira.loo_auc", "LOO AUC", "{:.3f}"),
        ("u-lira.loo_tpr@0.01", "LOO TPR@1%", "{:.3f}"), ("seconds", "audit s", "{:.0f}"),
    ]  # fmt: skip
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    lines = [head, "|" + "---|" * len(cols)]
    for r in rows:
        cells = [c[2].format(r[c[0]]) if c[0] in r else "-" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", default="fmnist12k-random10")
    p.add_argument("--methods", nargs="+", default=["finetune", "grad-ascent"])
    p.add_argument("--shadows", type=int, default=64)
    p.add_argument("--background", type=int, default=10000, help="for other benchmarks")
    p.add_argument("--executor", default="processes")
    p.add_argument("--runs-dir", default="runs-ulira")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--speed-shadows", type=int, default=8)
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results: dict[str, Any] = {"bench": args.bench, "shadows": args.shadows}
    t0 = time.perf_counter()
    if not args.speed_only:
        rows = ulira_table(args)
        results["ulira"] = rows
        print(_fmt(rows))
    if not args.skip_speed:
        results["speed"] = speed(args.bench, args.speed_shadows, args.data_dir)
        s = results["speed"]
        print(
            f"\n{s['n_shadows']} shadows: local {s['local_s']:.1f} s, processes "
            f"{s['processes_s']:.1f} s, speed-up {s['speedup']:.2f}x, identical weights: "
            f"{s['identical']}"
        )
    results["total_s"] = time.perf_counter() - t0
    print(f"\ntotal {results['total_s'] / 60:.1f} min")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
