"""ResAlign's ablation, and benign fine-tuning that is strong enough to revive an erasure.

    python benchmarks/resalign_ablation.py --out /tmp/ra [--bench t2i-tiny] [--seed 0]
        [--threads 2] [--rows plain,hyper,meta-data,full,unrolled,esd,salun] [--n 10]

Issue 9, findings 1 and 2 (methods.md section 1). ResAlign is run at the setting that erases
"three" from `t2i-tiny` without the gradient-ascent cliff (outer lr 3e-3, retain weight 20
throughout; measured in BENCHMARKS.md), with its parts switched on one at a time as in the
paper's ablation table:

- ``plain``: unlearning only (``outer_lambda=0``: no inner fine-tune, no hypergradient);
- ``hyper``: + the implicit hypergradient through one fixed inner fine-tune (``inner_configs[0]``:
  benign shard 0, LoRA, Adam, lr 1e-3, 5 steps);
- ``meta-data``: + sampling the benign shard;
- ``full``: + sampling the inner configuration (lr, steps, optimiser, LoRA or full): ResAlign;
- ``unrolled``: the full method with the unrolled hypergradient instead of the implicit one;

beside the original, the retrain oracle, ESD and SalUn at their defaults. Each model is attacked
by ``finetune-recovery`` with a stronger grid than its defaults (the defaults, 50 steps at lr
1e-4 / 1e-3 / 1e-2, revive nothing on this model: BENCHMARKS.md): steps 0, 50, 200 of full
AdamW at lr 1e-3, rank-8 LoRA Adam at 3e-3 (neither is among ResAlign's inner configurations)
and full SGD at 1e-2, with 10 samples per prompt (the audit's default 2 gives rates in steps of
0.1 here). Printed: the concept rate before, after 50 and after 200 steps (the
configuration that revives most), the detector's mean concept probability at 0 / 50 / 200
steps (finer than the rate), the unrelated prompts' class accuracy before and after, and the
unlearning and audit times.
"""

from __future__ import annotations

import argparse
import logging
import time

from _common import setup  # benchmarks/ is on sys.path when a script here runs

import obliviate
from obliviate.types import RunSpec

RESALIGN = {"lr": 3e-3, "retain_weight": 20.0, "retain_weight_end": 20.0}
ROWS = {
    "original": ("original", {}),
    "oracle": ("oracle", {}),
    "esd": ("esd", {}),
    "salun": ("salun", {}),
    "plain": ("resalign", {**RESALIGN, "outer_lambda": 0.0, "meta_data": False,
                           "meta_configs": False}),
    "hyper": ("resalign", {**RESALIGN, "meta_data": False, "meta_configs": False}),
    "meta-data": ("resalign", {**RESALIGN, "meta_configs": False}),
    "full": ("resalign", dict(RESALIGN)),
    "unrolled": ("resalign", {**RESALIGN, "hypergradient": "unrolled"}),
}  # fmt: skip
ATTACK = {
    "steps": [0, 50, 200],
    "configs": [
        {"name": "full-adamw-1e-3", "optimizer": "adamw", "lr": 1e-3, "params": "full"},
        {"name": "lora8-adam-3e-3", "optimizer": "adam", "lr": 3e-3, "params": "lora",
         "lora_r": 8},
        {"name": "full-sgd-1e-2", "optimizer": "sgd", "lr": 1e-2, "params": "full"},
    ],
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="t2i-tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs-resalign-ablation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--n", type=int, default=10, help="samples per prompt (the audit's: 2)")
    args = ap.parse_args()
    kw = setup(args.out, args.threads)
    names = [c["name"] for c in ATTACK["configs"]]
    head = ["row", "concept rate", "synonym rate", "after 50 FT", "after 200 FT",
            "concept prob 0 / 50 / 200", *[f"200 {n}" for n in names], "unrelated acc",
            "unrelated acc after 200", "unlearn s", "audit s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in args.rows.split(","):
        method, params = ROWS[row]
        spec = RunSpec(args.bench, method, params=params, seed=args.seed,
                       audits=("concept-rate", "finetune-recovery"),
                       audit_params={"finetune-recovery": {**ATTACK, "n": args.n}})  # fmt: skip
        t0 = time.perf_counter()
        r = obliviate.run(spec, **kw)
        logging.info("%s: %.0f s", row, time.perf_counter() - t0)
        m, t = r.metrics(), r.manifest["timings"]
        curves = r.reports["finetune-recovery"]["curves"]

        def worst(key: str, k: int, curves=curves) -> float:
            # the configuration that revives the concept most, at fine-tuning step k
            return max(c[key][c["steps"].index(k)] for c in curves.values())

        probs = " / ".join(f"{worst('concept_prob', k):.3f}" for k in ATTACK["steps"])
        acc200 = min(m[f"finetune-recovery.{n}_unrelated_class_acc"] for n in names)
        cells = [row, m["concept-rate.concept_rate"], m["concept-rate.synonym_rate"],
                 worst("concept_rate", 50), worst("concept_rate", 200), probs,
                 *[m[f"finetune-recovery.{n}_concept_rate"] for n in names],
                 m["concept-rate.unrelated_class_acc"], acc200, t.get("unlearn_s", 0.0),
                 sum(t.get("audit_s", {}).values())]  # fmt: skip
        lines.append("| " + " | ".join(c if isinstance(c, str) else f"{c:.3f}" for c in cells)
                     + " |")  # fmt: skip
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
