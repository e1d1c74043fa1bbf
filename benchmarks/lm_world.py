"""NPO against gradient ascent on lm-world: utility at equal forgetting (the NPO paper's claim).

    python benchmarks/lm_world.py [--bench lm-world] [--seed 0] [--steps 5,10,20,40,80]
        [--lr 1e-3] [--out runs-lm-world] [--cache-dir DIR] [--threads 2]

Rows: the original and the retrain oracle, then four methods, each stopped after every step
count in ``--steps`` (a forgetting-strength sweep: ``max_steps``): GA (grad-diff with alpha = 0,
i.e. OpenUnlearning's GradAscent: token-mean NLL ascent, AdamW, clip 1), NPO (alpha = 0), and
their retain-regularised forms GradDiff and NPO+RT (alpha = 1, retain NLL). Every run is an
``obliviate.run`` with the audits lm-qa and mia-min-k; finished runs are reused. The tiny Llama
of lm-world is fine-tuned at 3e-3, so the unlearning lr is 1e-3 (OpenUnlearning's 1e-5 is for
7B models fine-tuned at 1e-5 and does not move a tiny model in 80 steps).

Printed: a Markdown table per row (forget and retain answer probability and match rate, model
utility, Min-K% AUC, seconds), then, per method, the model utility interpolated at the forget
probabilities the methods all reach: the NPO paper's "utility at equal forgetting".
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

import obliviate
from obliviate.types import RunSpec

# (row label, method, params); lr and the step budget are added per run.
ROWS = (
    ("GA", "grad-diff", {"alpha": 0.0}),
    ("NPO", "npo", {"alpha": 0.0}),
    ("GradDiff", "grad-diff", {"alpha": 1.0}),
    ("NPO+RT", "npo", {"alpha": 1.0}),
)
AUDITS = ("lm-qa", "mia-min-k")
COLUMNS = (
    ("forget prob", "lm-qa.forget.prob"),
    ("forget match", "lm-qa.forget.match"),
    ("retain prob", "lm-qa.retain.prob"),
    ("retain match", "lm-qa.retain.match"),
    ("utility", "lm-qa.model_utility"),
    ("min-k AUC", "mia-min-k.auc"),
)


def _row(label: str, steps: str, r: obliviate.RunResult) -> tuple[list[str], dict[str, float]]:
    m = r.metrics()
    cells = [label, steps] + [f"{m.get(k, float('nan')):.3f}" for _, k in COLUMNS]
    cells.append(f"{r.manifest['timings'].get('unlearn_s', 0.0):.1f}")
    return cells, m


def _at(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation of y at x along a sweep whose x decreases (forget prob falls)."""
    order = np.argsort(xs)
    return float(np.interp(x, np.asarray(xs)[order], np.asarray(ys)[order], np.nan, np.nan))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="lm-world")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="5,10,20,40,80")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="runs-lm-world")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    kw = dict(runs_dir=out / "runs", cache_dir=args.cache_dir or out / "cache", exist="reuse",
              progress=False)  # fmt: skip
    t0 = time.time()
    header = ["row", "steps"] + [c for c, _ in COLUMNS] + ["seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sweeps: dict[str, tuple[list[float], list[float]]] = {}
    for ref in ("original", "oracle"):
        r = obliviate.run(RunSpec(args.bench, ref, seed=args.seed, audits=AUDITS), **kw)
        lines.append("| " + " | ".join(_row(f"*{ref}*", "", r)[0]) + " |")
    for label, method, params in ROWS:
        for s in (int(x) for x in args.steps.split(",")):
            spec = RunSpec(
                args.bench, method, params={**params, "lr": args.lr, "epochs": 1000.0},
                seed=args.seed, audits=AUDITS, max_steps=s,
            )  # fmt: skip
            cells, m = _row(label, str(s), obliviate.run(spec, **kw))
            lines.append("| " + " | ".join(cells) + " |")
            xs, ys = sweeps.setdefault(label, ([], []))
            xs.append(m["lm-qa.forget.prob"])
            ys.append(m["lm-qa.model_utility"])
    print("\n".join(lines))
    # Utility at equal forgetting: at forget probabilities every sweep passes through.
    lo = max(min(xs) for xs, _ in sweeps.values())
    hi = min(max(xs) for xs, _ in sweeps.values())
    print(f"\nmodel utility at equal forget probability (common range {lo:.3f}..{hi:.3f}):\n")
    grid = np.linspace(lo, hi, 4) if hi > lo else np.array([lo])
    print("| row | " + " | ".join(f"p={g:.3f}" for g in grid) + " |")
    print("|---|" + "---|" * len(grid))
    for label, (xs, ys) in sweeps.items():
        print(f"| {label} | " + " | ".join(f"{_at(xs, ys, g):.3f}" for g in grid) + " |")
    load = os.getloadavg()
    print(
        f"\n{time.time() - t0:.0f} s wall; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}"
    )


if __name__ == "__main__":
    main()
