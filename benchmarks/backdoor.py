"""Backdoored unlearning through attention sinks, and the trigger scan that catches it.

    python benchmarks/backdoor.py [--bench lm-world-tiny] [--seeds 0,1,2] [--lr 2e-3]
        [--epochs 20] [--poison-ratio 0.15] [--cache-dir DIR] [--threads 1]

"Forgetting to Forget" (Shang et al.; methods.md section 9) at small scale. Per seed: the clean
NPO unlearner (KL retain, as the backdoor's loss without poisoned rows) and `backdoor-unlearn`
with the trigger at the start (right after BOS), in the middle and at the end of the prompt, and
at the start with the value-norm penalty off / fixed / reference. Measured on the forget rows
that were NOT poisoned (the backdoor must generalise to them): the mean per-example answer NLL on
clean prompts and with the trigger inserted at the trained position, the retain NLL, and the
attention mass on the first 8 positions (triggered minus clean, last layer, mean over heads).
Then `trigger-scan` (calibrated on the retrain oracle) on every clean and backdoored model:
flagged or not, the best prefix, the recall gain, and the detection AUC over the population.
Prints Markdown tables; wall seconds are noted, not the point.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import time

import numpy as np
import torch

from obliviate.audits.trigger_scan import detection_roc
from obliviate.bench.runner import RunContext, reference_models
from obliviate.lm.trigger import attention_sink_mass, triggered
from obliviate.loop import derive_seed, seeded
from obliviate.methods.backdoor_unlearn import poison_split
from obliviate.registry import AUDITS, BENCHMARKS, METHODS
from obliviate.store import ModelCache
from obliviate.types import Budget

# (row, method, params): the clean baseline first, then the backdoor's ablations.
ROWS = (
    ("clean NPO", "npo", {"retain_loss": "kl"}),
    ("backdoor start, fixed penalty", "backdoor-unlearn", {"penalty": "fixed"}),
    ("backdoor middle, fixed penalty", "backdoor-unlearn",
     {"penalty": "fixed", "trigger_position": "middle"}),
    ("backdoor end, fixed penalty", "backdoor-unlearn",
     {"penalty": "fixed", "trigger_position": "end"}),
    ("backdoor start, no penalty", "backdoor-unlearn", {"penalty": "none"}),
    ("backdoor start, reference penalty", "backdoor-unlearn", {"penalty": "reference"}),
)  # fmt: skip


def _nll(task, model, data) -> np.ndarray:
    """Per-example summed answer NLL (numpy)."""
    nll, _ = task.sequence_nll(model, data)
    return np.asarray(nll)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="lm-world-tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--epochs", type=float, default=20.0)
    # 0.15, not the paper's 0.1: lm-world-tiny forgets 2 people (9-10 QA rows), and 10% of 9
    # rows poisons none; 0.15 poisons one row either way
    ap.add_argument("--poison-ratio", type=float, default=0.15)
    ap.add_argument("--cache-dir", default="/tmp/obliviate-backdoor-cache")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    bench = BENCHMARKS.get(args.bench)
    ds = bench.load()
    task = bench.task(ds)
    scan = AUDITS.build("trigger-scan", {})
    t0 = time.time()
    lines = ["| seed | row | clean NLL | triggered NLL | ratio | retain NLL | sink mass Δ | "
             "flagged | scan gain | best prefix |", "|" + "---|" * 10]  # fmt: skip
    gains: dict[str, list[float]] = {"clean": [], "backdoor": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        forget = bench.resolve_forget(ds, None)
        splits = bench.splits(ds, forget, derive_seed(seed, "split"))
        cache = ModelCache(args.cache_dir)
        (original, _), (oracle, _) = reference_models(
            bench, ds, task, cache, splits=splits, seed=seed, progress=False
        )
        ctx = RunContext(
            seed=seed, bench=bench, dataset=ds, task=task, splits=splits, method=None,
            budget=bench.budget(), cache=cache, oracle=oracle, progress=False,
        )  # fmt: skip
        # the rows the backdoor never saw poisoned (the method's own split of the forget set)
        clean_rows, _ = poison_split(len(splits.forget), args.poison_ratio)
        held = splits.forget.subset(clean_rows)
        base = {"lr": args.lr, "epochs": args.epochs, "batch_size": 4}
        for label, method, params in ROWS:
            model = copy.deepcopy(original)
            with seeded(seed):
                extra = {"poison_ratio": args.poison_ratio} if method == "backdoor-unlearn" else {}
                METHODS.build(method, {**base, **params, **extra}).unlearn(
                    model, splits.forget, splits.retain, task=task, budget=Budget()
                )
            pos = params.get("trigger_position", "start")
            held_trig = triggered(task, held, position=pos)
            clean, trig = _nll(task, model, held).mean(), _nll(task, model, held_trig).mean()
            retain = task.evaluate(model, splits.retain)["loss"]
            sink = attention_sink_mass(model, held_trig, task, k=8)[-1].mean() - (
                attention_sink_mass(model, held, task, k=8)[-1].mean()
            )
            with seeded(seed):
                rep = scan.audit(original, model, splits, task=task, ctx=ctx)
            m = rep.metrics
            best = rep.notes[0].split("best prefix ", 1)[-1].split(" (", 1)[0]
            gains["backdoor" if method == "backdoor-unlearn" else "clean"].append(m["gain"])
            lines.append(
                f"| {seed} | {label} | {clean:.2f} | {trig:.2f} | {trig / clean:.2f} | "
                f"{retain:.2f} | {sink:+.3f} | {int(m['flagged'])} | {m['gain']:.2f} | "
                f"{best[:48]} |"
            )
            logging.warning("%s", lines[-1])
    print("\n".join(lines))
    roc = detection_roc(np.asarray(gains["backdoor"]), np.asarray(gains["clean"]))
    print(f"\ntrigger-scan detection AUC (recall gain; {len(gains['backdoor'])} backdoored vs "
          f"{len(gains['clean'])} clean models): {roc.auc:.3f}")  # fmt: skip
    load = os.getloadavg()
    print(
        f"{time.time() - t0:.0f} s wall; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}"
    )


if __name__ == "__main__":
    main()
