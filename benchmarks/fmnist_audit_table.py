"""Every classifier method under every classifier audit on Fashion-MNIST, over seeds.

    python benchmarks/fmnist_audit_table.py --bench fmnist12k-class --seeds 0,1,2
    python benchmarks/fmnist_audit_table.py --bench fmnist12k-random10 --seeds 0,1,2
        [--methods finetune,salun] [--audits lira,u-lira] [--set u-lira.n_shadows=64]
        [--out runs-audits] [--executor processes]

Runs the original, the oracle and every method (TRW and RWFT only on class requests) of a
benchmark with every audit of the project: accuracy, mia-efficacy, mia-loss, mia-entropy,
mia-nn (class requests only), relearn, lira, u-lira, rmia, apollo, epsilon. Prints two Markdown
tables: the headline number of each audit (mean ± 95% t-interval over seeds, paired Δ to the
oracle of the same seed, bold where that interval excludes 0) and each audit's mean wall-clock
seconds per run. The HTML and Markdown reports with every metric go to ``--out``.

Scale (the defaults of ``SCALE`` below; every one can be changed with ``--set``). The
benchmarks are the 12,000-image subsets (``fmnist12k-*``): every shadow-model audit trains its
models with the benchmark's recipe, so the audited model and its shadows are trained alike, and
a 12k model trains in about 6 s instead of 50 s. LiRA, U-LiRA and RMIA share one bank of 16
shadows per seed (the papers use 64 or more: ``benchmarks/ulira.py`` runs U-LiRA with 64); the
U-LiRA oracle row retrains those 16 without their targets, and every method unlearns each of them
once. Apollo: 8 shadows, 100 forget and 100 held-out targets. Epsilon: 8 unlearned models
against 8 retrains, plus 8 more retrains for the ceiling (the challenge used 512; the spread of
the estimator at small N is in ``obliviate/audits/epsilon.py``). Shadow banks and retrains are
cached in ``--out``/cache and shared by every method of a seed, so the first rows of a seed pay
for them (read the audit-time table with that in mind). Rerunning reuses finished runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

import obliviate
from obliviate.bench.grid import CLASS_AUDITS, CLASSIFIER_METHODS, RANDOM_AUDITS
from obliviate.cli import _parse_audit_sets
from obliviate.report import _md_table, collect, table, write_report
from obliviate.types import RunSpec

# TRW and RWFT reshape a forgotten *class's* output distribution: they refuse other requests.
CLASS_ONLY = ("trw", "rwft")
# The shadow-model audits' sizes for this table (see the module docstring).
SCALE: dict[str, dict[str, object]] = {
    "lira": {"n_shadows": 16},
    "u-lira": {"n_shadows": 16},
    "rmia": {"n_shadows": 16},
    "apollo": {"n_shadows": 8},
    "epsilon": {"n_models": 8},
}
# The one number per audit in the headline table.
HEADLINE = {
    "accuracy": ("accuracy.forget_acc", "accuracy.test_acc"),
    "mia-efficacy": ("mia-efficacy.efficacy",),
    "mia-loss": ("mia-loss.auc",),
    "mia-entropy": ("mia-entropy.auc",),
    "mia-nn": ("mia-nn.gap",),
    "relearn": ("relearn.benign_gap", "relearn.samples_gap"),
    "lira": ("lira.auc",),
    "u-lira": ("u-lira.auc",),
    "rmia": ("rmia.auc",),
    "apollo": ("apollo.under_auc", "apollo.over_auc"),
    "epsilon": ("epsilon.score",),
}


def _audit_params(items: list[str]) -> dict[str, dict[str, object]]:
    """SCALE, overridden by ``--set AUDIT.KEY=VALUE`` (the CLI's ``--audit-set`` parser; the
    strings are coerced to each audit's field types when the runner builds it)."""
    out: dict[str, dict[str, object]] = {k: dict(v) for k, v in SCALE.items()}
    for audit, kv in _parse_audit_sets(items).items():
        out.setdefault(audit, {}).update(kv)
    return out


def _audit_times(trs: list) -> list[str]:
    """Mean wall-clock seconds of each audit per row (over its runs)."""
    audits = [a for a in HEADLINE if any(a in (r.manifest.get("timings", {}).get("audit_s") or {})
                                         for tr in trs for r in tr.rows)]  # fmt: skip
    out = ["| method | " + " | ".join(audits) + " |", "|---|" + "---:|" * len(audits)]
    for tr in trs:
        cells = []
        for a in audits:
            t = [r.manifest.get("timings", {}).get("audit_s", {}).get(a) for r in tr.rows]
            t = [x for x in t if x is not None]
            cells.append(f"{np.mean(t):.1f}" if t else "")
        name = f"*{tr.label}*" if tr.is_reference else tr.label
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="fmnist12k-class")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(CLASSIFIER_METHODS))
    ap.add_argument("--audits", default=None, help="comma-separated (default: every audit)")
    ap.add_argument("--set", action="append", default=[], metavar="AUDIT.KEY=VALUE")
    ap.add_argument("--out", default="runs-audits")
    ap.add_argument("--executor", default="processes", choices=("local", "processes", "ray"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    is_class = "class" in args.bench
    audits = tuple(args.audits.split(",")) if args.audits else (
        CLASS_AUDITS if is_class else RANDOM_AUDITS
    )  # fmt: skip
    audit_params = {a: p for a, p in _audit_params(args.set).items() if a in audits}
    methods = [m for m in args.methods.split(",") if is_class or m not in CLASS_ONLY]
    paths = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:
            r = obliviate.run(
                RunSpec(args.bench, method, seed=seed, audits=audits, audit_params=audit_params),
                runs_dir=out / "runs", cache_dir=out / "cache", exist="reuse", progress=False,
                executor=args.executor,
            )  # fmt: skip
            paths.append(r.path)
            t = r.manifest["timings"]
            logging.info(
                "seed %d %-16s unlearn %.1f s, audits %s", seed, method, t["unlearn_s"],
                {k: round(v, 1) for k, v in t.get("audit_s", {}).items()},
            )  # fmt: skip
    write_report(paths, html=out / "report.html", markdown=out / "report.md")
    trs = table(collect(paths))
    keys = [k for a in audits for k in HEADLINE.get(a, ()) if any(k in tr.metrics for tr in trs)]
    print(f"\n### {args.bench}: headline number per audit\n")
    print("\n".join(_md_table(trs, keys)))
    print(f"\n### {args.bench}: seconds per audit (mean over seeds)\n")
    print("\n".join(_audit_times(trs)))


if __name__ == "__main__":
    main()
