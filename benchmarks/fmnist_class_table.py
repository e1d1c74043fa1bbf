"""Three-seed class-forgetting table on Fashion-MNIST with the cheap audits.

    python benchmarks/fmnist_class_table.py [--seeds 0,1,2] [--methods ...] [--out runs-table]

Runs every method on `fmnist-class` (forget Shirt) with audits accuracy, mia-efficacy, mia-loss
and mia-nn (no shadow-model audits: `obliviate bench fmnist-class` runs those too), then writes
the report (HTML + Markdown) and prints the Markdown overview table: mean ± 95% CI over seeds and
the paired gap to the oracle.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import obliviate
from obliviate.report import write_report
from obliviate.types import RunSpec

METHODS = ("finetune", "grad-ascent", "neggrad-plus", "random-label", "l1-sparse", "salun", "scrub",
           "ssd", "bad-teacher", "boundary-shrink", "trw", "rwft")  # fmt: skip
AUDITS = ("accuracy", "mia-efficacy", "mia-loss", "mia-nn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="runs-table")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    paths = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in args.methods.split(","):
            r = obliviate.run(
                RunSpec("fmnist-class", method, seed=seed, audits=AUDITS),
                runs_dir=out / "runs", cache_dir=args.cache_dir or out / "cache",
                exist="reuse", progress=False,
            )  # fmt: skip
            paths.append(r.path)
            logging.info("seed %d %-16s %.1f s", seed, method, r.manifest["timings"]["unlearn_s"])
    written = write_report(paths, html=out / "report.html", markdown=out / "report.md")
    print(Path(written["markdown"]).read_text().split("\n\n## ")[0])


if __name__ == "__main__":
    main()
