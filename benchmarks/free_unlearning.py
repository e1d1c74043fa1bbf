"""Is unlearning free for low-influence points? influence-prune against its inner method.

    python benchmarks/free_unlearning.py [--bench fmnist-random10] [--inner salun] [--seed 0]
        [--q 0.25,0.5,0.75] [--estimators grad-norm,grad-norm-head,self-influence,less]
        [--cache-dir /tmp/shared-cache] [--threads 1] [--out table.md]

Rows: the original and the retrain oracle, the inner method U alone, and influence-prune(U) for
every estimator and keep fraction q. Columns: forget / retain / test accuracy and MIA-Efficacy
(the benchmark's audits, with the runner's seeds, so each row equals ``obliviate run``'s), the
average gap to the oracle over those four (SalUn's "Avg. Gap", in points) and its change from U
alone, the cost (scoring + U, in CPU seconds of this process and in wall seconds), the compute
saved against U alone, U's optimizer steps, the points kept, and the accuracy of the original
and of the oracle on the *dropped* points (the paper's premise: there they already agree).

Each estimator scores the forget set once; every q then prunes those scores and runs U, and its
cost is charged the whole scoring time. That is exactly what the method does inside ``unlearn``
(the global RNG state after scoring is restored for every q; tests/test_influence_prune.py checks
that the wrapper equals score -> select -> U). Cost is CPU time (``time.process_time``, one
thread by default), steadier than wall time on a shared machine; the load average is printed.
``torch.func`` is imported and warmed before timing: its first use costs seconds once per
process, not per unlearning request. A change in the gap is called significant when it exceeds
the 95% binomial half-width of the forget accuracy (n = |D_f|).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from obliviate.bench.runner import RunContext, reference_models
from obliviate.loop import count_steps, derive_seed, seeded
from obliviate.methods.influence_prune import (
    influence_scores,
    per_example_grads,
    select_influential,
)
from obliviate.registry import AUDITS, BENCHMARKS, METHODS
from obliviate.store import ModelCache

log = logging.getLogger("free_unlearning")

# label -> influence_scores keyword arguments
ESTIMATORS: dict[str, dict[str, Any]] = {
    "grad-norm": {"estimator": "grad-norm"},
    "grad-norm-head": {"estimator": "grad-norm", "grad_layers": "head"},
    "self-influence": {"estimator": "self-influence", "hessian": "last-layer"},
    "less": {"estimator": "less"},
    "less-head": {"estimator": "less", "grad_layers": "head"},
}
METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")


@dataclass
class Row:
    label: str
    metrics: dict[str, float]
    cpu_s: float = float("nan")
    wall_s: float = float("nan")
    steps: int | None = None
    kept: int | None = None
    dropped_acc: tuple[float, float] | None = None  # (original, oracle) on the dropped points
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def rng_state() -> tuple[Any, ...]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def set_rng_state(state: tuple[Any, ...]) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="fmnist-random10")
    ap.add_argument("--forget", default=None, help="deletion request; default: the benchmark's")
    ap.add_argument("--inner", default="salun", help="inner method(s) U, comma-separated")
    ap.add_argument("--inner-params", default="", help='U\'s hyperparameters, "lr=0.01;epochs=2"')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--q", default="0.25,0.5,0.75", help="keep fractions, comma-separated")
    ap.add_argument("--estimators", default="grad-norm,grad-norm-head,self-influence,less")
    ap.add_argument("--cache-dir", default="/tmp/shared-cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    qs = [float(q) for q in args.q.split(",")]
    labels = [e.strip() for e in args.estimators.split(",") if e.strip()]
    for lab in labels:
        if lab not in ESTIMATORS:
            raise SystemExit(f"unknown estimator {lab!r}; choose from {sorted(ESTIMATORS)}")
    from obliviate.methods.influence_prune import parse_inner_params

    inners = {
        name: METHODS.build(name, parse_inner_params(args.inner_params, name))
        for name in args.inner.split(",")
    }

    # 1. Data, split, original and oracle exactly as the runner makes them (cached).
    bench = BENCHMARKS.get(args.bench)
    ds = bench.load()
    task = bench.task(ds)
    forget_rule = bench.resolve_forget(ds, args.forget)
    splits = bench.splits(ds, forget_rule, derive_seed(args.seed, "split"))
    cache = ModelCache(args.cache_dir)
    (original, _), (oracle, oracle_manifest) = reference_models(
        bench, ds, task, cache, splits=splits, seed=args.seed, progress=True
    )
    budget = bench.budget()
    ctx = RunContext(
        seed=derive_seed(args.seed, "audit"), bench=bench, dataset=ds, task=task, splits=splits,
        method=None, budget=budget, cache=cache, oracle=oracle, progress=False,
    )  # fmt: skip
    audits = {name: AUDITS.build(name, {}) for name in ("accuracy", "mia-efficacy")}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        out = {}
        for name, audit in audits.items():
            with seeded(derive_seed(args.seed, "audit", name)):
                rep = audit.audit(original, model, splits, task=task, ctx=ctx)
            out.update({f"{name}.{k}": v for k, v in rep.metrics.items()})
        return {
            "forget_acc": out["accuracy.forget_acc"],
            "retain_acc": out["accuracy.retain_acc"],
            "test_acc": out["accuracy.test_acc"],
            "mia_efficacy": out["mia-efficacy.efficacy"],
        }

    forget, retain = splits.forget, splits.retain
    y = forget.y.numpy()
    right_orig = task.predict(original, forget).argmax(1) == y
    right_oracle = task.predict(oracle, forget).argmax(1) == y
    # warm torch.func (a one-off import of several seconds) outside every timed block
    for _ in per_example_grads(copy.deepcopy(original).eval(), forget.subset(np.arange(2)),
                               task=task):  # fmt: skip
        pass

    rows: list[Row] = [
        Row("original", evaluate(original), steps=0),
        Row(
            "oracle",
            evaluate(oracle),
            wall_s=float(oracle_manifest.get("train", {}).get("seconds", float("nan"))),
            steps=oracle_manifest.get("train", {}).get("steps"),
        ),  # fmt: skip
    ]
    unlearn_seed = derive_seed(args.seed, "unlearn")
    for inner_name, inner in inners.items():
        # 2. U alone, seeded as the runner seeds a method.
        model = copy.deepcopy(original)
        with seeded(unlearn_seed), count_steps() as c, Clock() as clk:
            model = inner.unlearn(model, forget, retain, task=task, budget=budget)
        rows.append(
            Row(f"{inner_name} alone", evaluate(model.eval()), clk.cpu, clk.wall, c.steps,
                kept=len(forget), extra={"inner": inner_name, "base": True})
        )  # fmt: skip
        log.info("%s alone: %.1f CPU s, %d steps", inner_name, clk.cpu, c.steps)
    # 3. Each estimator scores once; each (U, q) reuses the scores and the RNG state after them.
    for lab in labels:
        with seeded(unlearn_seed):
            with Clock() as sclk:
                scores = influence_scores(
                    copy.deepcopy(original), forget, retain, task=task, **ESTIMATORS[lab]
                )
            after = rng_state()
            log.info("%s: scored %d points in %.1f CPU s", lab, len(scores), sclk.cpu)
            for inner_name, inner in inners.items():
                for q in qs:
                    set_rng_state(after)
                    keep = select_influential(scores, q=q)
                    drop = np.setdiff1d(np.arange(len(scores)), keep)
                    model = copy.deepcopy(original)
                    with count_steps() as c, Clock() as clk:
                        model = inner.unlearn(
                            model, forget.subset(keep), retain, task=task, budget=budget
                        )
                    rows.append(
                        Row(
                            f"prune[{lab}] q={q:g}",
                            evaluate(model.eval()),
                            sclk.cpu + clk.cpu,
                            sclk.wall + clk.wall,
                            c.steps,
                            kept=len(keep),
                            dropped_acc=(
                                float(right_orig[drop].mean()),
                                float(right_oracle[drop].mean()),
                            )
                            if len(drop)
                            else None,
                            extra={"inner": inner_name, "score_cpu": sclk.cpu},
                        )  # fmt: skip
                    )
                    log.info(
                        "%s q=%g with %s: %.1f CPU s (scoring %.1f), %d steps", lab, q,
                        inner_name, sclk.cpu + clk.cpu, sclk.cpu, c.steps,
                    )  # fmt: skip
    table = render(rows, n_forget=len(forget), args=args, oracle=rows[1].metrics)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


def avg_gap(m: dict[str, float], oracle: dict[str, float]) -> float:
    return 100 * float(np.mean([abs(m[k] - oracle[k]) for k in METRICS]))


def render(rows: list[Row], *, n_forget: int, args: argparse.Namespace, oracle: dict) -> str:
    base = {r.extra["inner"]: r for r in rows if r.extra.get("base")}
    p = rows[1].metrics["forget_acc"]
    half = 100 * 1.96 * math.sqrt(max(p * (1 - p), 1 / n_forget) / n_forget)
    load = os.getloadavg()
    head = [
        f"### influence-prune on {args.bench} (seed {args.seed}, |D_f| = {n_forget}), "
        f"inner: {args.inner} {args.inner_params}".rstrip(),
        "",
        f"Gap: mean |x - oracle| over forget/retain/test acc and MIA-Efficacy, in points. "
        f"Significant: |Δgap| > {half:.2f} (95% binomial half-width of the forget accuracy). "
        f"Cost: CPU seconds, scoring included ({args.threads} thread(s); load average "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).",
        "",
        "| row | forget | retain | test | MIA-eff. | gap | Δgap vs U | CPU s | wall s "
        "| saved | steps | kept | dropped: orig / oracle acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for r in rows:
        m = r.metrics
        b = base.get(r.extra.get("inner", ""))
        gap = avg_gap(m, oracle)
        dgap = saved = ""
        if b is not None and r is not b:
            d = gap - avg_gap(b.metrics, oracle)
            dgap = f"{d:+.2f}" + (" *" if abs(d) > half else "")
            saved = f"{100 * (1 - r.cpu_s / b.cpu_s):.0f}%"
        label = r.label if r.extra.get("base") or b is None else f"{r.label} ({b.extra['inner']})"
        dropped = f"{r.dropped_acc[0]:.3f} / {r.dropped_acc[1]:.3f}" if r.dropped_acc else ""
        lines.append(
            f"| {label} | {m['forget_acc']:.3f} | {m['retain_acc']:.3f} | {m['test_acc']:.3f} "
            f"| {m['mia_efficacy']:.3f} | {gap:.2f} | {dgap} "
            f"| {'' if math.isnan(r.cpu_s) else f'{r.cpu_s:.1f}'} "
            f"| {'' if math.isnan(r.wall_s) else f'{r.wall_s:.1f}'} | {saved} "
            f"| {'' if r.steps is None else r.steps} | {'' if r.kept is None else r.kept} "
            f"| {dropped} |"
        )
    return "\n".join(head + lines)


if __name__ == "__main__":
    main()
