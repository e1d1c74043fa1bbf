"""TRW vs RWFT vs FT vs GA on fmnist-class (forget Shirt), and a TRW ablation.

    python benchmarks/trw_ablation.py [--seed 0] [--cache-dir /tmp/shared-cache]
                                      [--runs-dir runs-trw] [--grid] [--threads 2]

Every row is an ``obliviate.run`` with the audits ``accuracy`` and ``mia-nn``; finished run
folders are reused, so a rerun only fills what is missing. The ablation changes one TRW knob at a
time around the defaults: the similarity temperature T, the PCA dimension, the class
representation, and beta (beta = 0 is RWFT); ``--grid`` runs the full PCA x T product instead.
Prints a Markdown table: forget / retain / test accuracy (test on every class and on the kept
classes), MIA-NN discriminator accuracy and its gap to the oracle's, TV to the oracle's output
distribution on the forget set, unlearning seconds, and the cost ratio to retraining (unlearning
seconds / the cached oracle's training seconds: both are wall-clock, so run it on an idle
machine; the load average is printed beside the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import time
from typing import Any

import torch

import obliviate
from obliviate.registry import METHODS
from obliviate.types import RunSpec

AUDITS = ("accuracy", "mia-nn")
TEMPERATURES = (0.1, 0.3, 1.0, 3.0)
PCA_DIMS = (2, 4, 0)  # 0 = every component
REPRESENTATIONS = ("logits", "embedding", "head")
BETAS = (3.0, 30.0)


def trw_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(METHODS.get("trw"))}


def rows(grid: bool) -> list[tuple[str, dict[str, Any]]]:
    """(method, params) of every row: the comparison first, then the TRW ablation."""
    d = trw_defaults()
    out: list[tuple[str, dict[str, Any]]] = [
        ("finetune", {}), ("grad-ascent", {}), ("rwft", {}), ("trw", {}),
    ]  # fmt: skip
    if grid:
        cells = [
            {"pca_dim": p, "temperature": t} for p, t in itertools.product(PCA_DIMS, TEMPERATURES)
        ]
    else:
        cells = [{"temperature": t} for t in TEMPERATURES] + [{"pca_dim": p} for p in PCA_DIMS]
    cells += [{"representation": r} for r in REPRESENTATIONS] + [{"beta": b} for b in BETAS]
    seen = set()
    for cell in cells:
        # a cell equal to the defaults is the "trw" row already; keep every other cell once
        params = {k: v for k, v in cell.items() if v != d[k]}
        key = tuple(sorted(params.items()))
        if params and key not in seen:
            seen.add(key)
            out.append(("trw", params))
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def table_row(label: str, result: Any) -> str:
    m = result.metrics()
    t = result.manifest.get("timings", {})
    cells = [
        label,
        fmt(m.get("accuracy.forget_acc")),
        fmt(m.get("accuracy.retain_acc")),
        fmt(m.get("accuracy.test_acc")),
        fmt(m.get("accuracy.retain_test_acc")),
        fmt(m.get("mia-nn.acc")),
        fmt(m.get("mia-nn.gap")),
        fmt(m.get("mia-nn.tv")),
        fmt(t.get("unlearn_s"), 1),
        fmt(t.get("cost_ratio_to_retrain")),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--benchmark", default="fmnist-class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs-dir", default="runs-trw-ablation")
    ap.add_argument("--cache-dir", default=None, help="model cache (originals and oracles)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--grid", action="store_true", help="full PCA x temperature product")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    def go(method: str, params: dict[str, Any]) -> Any:
        spec = RunSpec(args.benchmark, method, params=params, seed=args.seed, audits=AUDITS)
        return obliviate.run(
            spec, runs_dir=args.runs_dir, cache_dir=args.cache_dir, data_dir=args.data_dir,
            exist="reuse", progress=False,
        )  # fmt: skip

    t0 = time.perf_counter()
    results = [(f"{m} {p}" if p else m, go(m, p)) for m, p in rows(args.grid)]
    refs = [(r, go(r, {})) for r in ("original", "oracle")]
    header = (
        "| row | forget acc | retain acc | test acc | test acc (kept classes) | MIA-NN acc "
        "| MIA-NN gap | TV to oracle | unlearn s | cost ratio |"
    )
    shown = ("beta", "temperature", "pca_dim", "representation", "epochs", "lr")
    defaults = ", ".join(f"{k}={v}" for k, v in trw_defaults().items() if k in shown)
    print(f"{args.benchmark}, seed {args.seed}; TRW defaults: {defaults}\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, res in refs + results:
        print(table_row(label.replace("|", "/"), res))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{time.perf_counter() - t0:.0f} s in all (runs reused where finished); "
          f"load average {load:.1f} on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
