"""Safety guidance on erased text-to-image models, with the concept word and with c*
(Shin et al., "Prompt-based safety guidance is ineffective for unlearned text-to-image models").

    python benchmarks/concept_inversion.py [--bench t2i-tiny] [--seed 0]
        [--methods esd,uce,salun,ga-distill] [--strengths 50,100] [--out runs-ci]
        [--cache-dir DIR] [--threads 2]

Rows, each an ``obliviate.run`` with the ``concept-inversion`` audit at its defaults (finished
runs are reused): the retrain oracle, every erasure method at its defaults, and ESD stopped
after each of ``--strengths`` iterations (weaker erasures; its default is 200). Each row inverts
its own c* on its own unlearned model. Then the transfer rows: the c* of ESD at its defaults
reused (``cstar_from``) on the weaker ESD models, the paper's "one c* across unlearning
strengths".

Printed: DSR (1 - concept rate on the synonym prompts, the implicit route an erased word leaves
open) for the unlearned model alone, with the word as negative prompt and as SLD safety concept,
and with c* in both; prompt preservation (class accuracy on the unrelated prompts) alone and
with c*; the same word guidance on the original model (the observation's control); c*'s
concept rate on the original (the side finding); the audit's seconds. The HTML report of the
own-c* rows (DSR vs PP scatter, sample grids) goes to OUT/report.html.
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

AUDIT = "concept-inversion"
COLUMNS = (
    ("DSR", "dsr"),
    ("+neg word", "dsr_neg_word"),
    ("+SLD word", "dsr_sld_word"),
    ("+neg c*", "dsr_neg_cstar"),
    ("+SLD c*", "dsr_sld_cstar"),
    ("PP", "pp_class"),
    ("PP neg c*", "pp_class_neg_cstar"),
    ("PP SLD c*", "pp_class_sld_cstar"),
    ("original DSR", "original_dsr"),
    ("original +SLD word", "original_dsr_sld_word"),
    ("c* on original", "cstar_rate_original"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="t2i-tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="esd,uce,salun,ga-distill")
    ap.add_argument("--strengths", default="50,100", help="ESD iterations of the weaker rows")
    ap.add_argument("--out", default="runs-ci")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    kw = dict(runs_dir=out / "runs", cache_dir=args.cache_dir or out / "cache", exist="reuse",
              progress=False)  # fmt: skip
    t0 = time.time()
    own = [("oracle", {}, "own")] + [(m, {}, "own") for m in args.methods.split(",")]
    weaker = [("esd", {"iterations": int(s)}) for s in args.strengths.split(",") if s]
    own += [(m, p, "own") for m, p in weaker]
    results = []
    for method, params, source in own:
        spec = RunSpec(args.bench, method, params=params, seed=args.seed, audits=(AUDIT,))
        results.append((method, params, source, obliviate.run(spec, **kw)))
    donor = next(r for m, p, _, r in results if m == "esd" and not p)
    for method, params in weaker:  # the transfer rows: ESD's default c*, no inversion
        spec = RunSpec(
            args.bench, method, params=params, seed=args.seed, audits=(AUDIT,),
            audit_params={AUDIT: {"cstar_from": str(donor.path)}},
        )  # fmt: skip
        results.append((method, params, "esd (200 it.)", obliviate.run(spec, **kw)))
    head = ["row", "c* from"] + [c for c, _ in COLUMNS] + ["unlearn s", "audit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, params, source, r in results:
        m, t = r.metrics(), r.manifest["timings"]
        label = method + "".join(f" {k}={v}" for k, v in params.items())
        cells = [label, source] + [f"{m.get(f'{AUDIT}.{k}', float('nan')):.3f}" for _, k in COLUMNS]
        cells += [f"{t.get('unlearn_s', 0.0):.0f}", f"{t.get('audit_s', {}).get(AUDIT, 0.0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    # the report aggregates runs by (method, params): the transfer rows would merge with the
    # own-c* rows of the same model, so the page shows the own-c* rows only
    write_report([r.path for _, _, src, r in results if src == "own"], html=out / "report.html",
                 markdown=out / "report.md")  # fmt: skip
    load = os.getloadavg()
    print(f"\n{time.time() - t0:.0f} s wall; load average {load[0]:.1f}, {load[1]:.1f}, "
          f"{load[2]:.1f}; report: {out / 'report.html'}")  # fmt: skip


if __name__ == "__main__":
    main()
