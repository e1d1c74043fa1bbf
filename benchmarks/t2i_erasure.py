"""Concept erasure on the text-to-image model trained here: does the concept come back?

    python benchmarks/t2i_erasure.py [--bench t2i-tiny] [--seed 0]
        [--methods esd,uce,salun,ga-distill,resalign]
        [--audits concept-rate,finetune-recovery,memora] [--out runs-t2i] [--cache-dir DIR]

Every row is an ``obliviate.run`` (finished runs are reused): the original, the retrain oracle
(trained without the concept's images), and each erasure method at its defaults, audited by
``concept-rate`` (the detector over the concept's explicit and synonym prompts and the unrelated
prompts), ``finetune-recovery`` (ResAlign's test: benign fine-tuning, concept rate against steps,
beside the original and the oracle given the same fine-tune) and ``memora`` (self-regeneration:
inversion + slerp + regeneration + rank-4 LoRA, steps to reach half the original's concept rate).
Prints one Markdown table of the headline numbers and writes the HTML report (sample grids,
recovery curves) to OUT/report.html.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

import obliviate
from obliviate.report import write_report
from obliviate.types import RunSpec

COLUMNS = (
    ("concept rate", "concept-rate.concept_rate"),
    ("synonym rate", "concept-rate.synonym_rate"),
    ("unrelated class acc", "concept-rate.unrelated_class_acc"),
    ("FD unrelated", "concept-rate.fd_unrelated"),
    ("after benign FT", "finetune-recovery.concept_rate"),
    ("MemoRa after LoRA", "memora.concept_rate"),
    ("MemoRa steps to half", "memora.steps_to_half"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="t2i-tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="esd,uce,salun,ga-distill,resalign")
    ap.add_argument("--audits", default="concept-rate,finetune-recovery,memora")
    ap.add_argument("--out", default="runs-t2i")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    audits = tuple(args.audits.split(","))
    t0 = time.time()
    rows, paths = [], []
    for method in ("original", "oracle", *args.methods.split(",")):
        r = obliviate.run(
            RunSpec(args.bench, method, seed=args.seed, audits=audits),
            runs_dir=out / "runs", cache_dir=args.cache_dir or out / "cache", exist="reuse",
            progress=False,
        )  # fmt: skip
        paths.append(r.path)
        m = r.metrics()
        if r.manifest.get("status") != "done":
            logging.warning("%s: %s", method, r.manifest.get("error"))
        seconds = r.manifest["timings"].get("unlearn_s", 0.0)
        rows.append([method] + [f"{m.get(k, float('nan')):.3f}" for _, k in COLUMNS]
                    + [f"{seconds:.1f}"])  # fmt: skip
    header = ["row"] + [c for c, _ in COLUMNS] + ["unlearn s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    write_report(paths, html=out / "report.html", markdown=out / "report.md")
    load = os.getloadavg()
    print(
        f"\n{time.time() - t0:.0f} s wall; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}"
    )  # noqa: E501
    print(f"report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
