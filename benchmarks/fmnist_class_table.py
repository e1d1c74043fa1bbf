"""Three-seed method table on Fashion-MNIST with the cheap audits.

    python benchmarks/fmnist_class_table.py [--bench fmnist-class] [--seeds 0,1,2]
        [--methods ...] [--out runs-table] [--tuned tuned/]

Runs every method on `fmnist-class` (forget Shirt; or `--bench fmnist-random10`, forget 10% at
random) with audits accuracy, mia-efficacy, mia-loss and mia-nn (MIA-NN only for class
requests; no shadow-model audits: `obliviate bench fmnist-class` runs those too), then writes the
report (HTML + Markdown) and prints the Markdown overview table: mean ± 95% CI over seeds and the
paired gap to the oracle. With ``--tuned DIR``, a method that has a tuned recipe
(``DIR/<bench>/<method>.toml``, written by ``obliviate tune <bench> --method M``) gets a second
row with those hyperparameters beside its default row.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import obliviate
from obliviate.bench.grid import read_tuned
from obliviate.report import write_report
from obliviate.types import RunSpec

METHODS = ("finetune", "grad-ascent", "neggrad-plus", "random-label", "l1-sparse", "salun", "scrub",
           "ssd", "bad-teacher", "boundary-shrink", "trw", "rwft", "minnorm-og",
           "influence-prune")  # fmt: skip
# TRW and RWFT reshape a forgotten *class's* output distribution: they refuse other requests.
CLASS_ONLY = ("trw", "rwft")
CLASS_AUDITS = ("accuracy", "mia-efficacy", "mia-loss", "mia-nn")
RANDOM_AUDITS = ("accuracy", "mia-efficacy", "mia-loss")  # MIA-NN needs a forgotten class


def _rows(methods: list[str], bench: str, tuned: Path | None) -> list[tuple[str, dict]]:
    """(method, params) per row: the defaults, then the tuned recipe where one exists."""
    rows: list[tuple[str, dict]] = []
    for method in methods:
        rows.append((method, {}))
        path = tuned / bench / f"{method}.toml" if tuned else None
        if path is not None and path.exists():
            rows.append((method, read_tuned(path)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="fmnist-class")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="runs-table")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--tuned", type=Path, help="folder of tuned recipes: adds a tuned row")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    is_class = "class" in args.bench
    audits = CLASS_AUDITS if is_class else RANDOM_AUDITS
    methods = [m for m in args.methods.split(",") if is_class or m not in CLASS_ONLY]
    paths = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method, params in _rows(methods, args.bench, args.tuned):
            r = obliviate.run(
                RunSpec(args.bench, method, params=params, seed=seed, audits=audits),
                runs_dir=out / "runs", cache_dir=args.cache_dir or out / "cache",
                exist="reuse", progress=False,
            )  # fmt: skip
            paths.append(r.path)
            logging.info("seed %d %-16s %.1f s", seed, method, r.manifest["timings"]["unlearn_s"])
    written = write_report(paths, html=out / "report.html", markdown=out / "report.md")
    print(Path(written["markdown"]).read_text().split("\n\n## ")[0])


if __name__ == "__main__":
    main()
