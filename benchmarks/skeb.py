"""SKeB's persuasion findings across model size: the tiny Llama and SmolLM2-135M on lm-world.

    python benchmarks/skeb.py --out /tmp/skeb [--threads 2] [--seed 0]
        [--tiny-steps 10,15,20] [--smol-steps 5,10,20] [--smol-lr 1e-4]

"The Limits of Obliviate" (Shah and Le; methods.md section 6) at small scale. The same
generator of fictitious people is fine-tuned into two bases, `lm-world` (a 4-layer tiny Llama
trained from scratch, 200 people) and `lm-world-smollm2` (SmolLM2-135M-Instruct, 50 people);
the same 20 people (100 questions) are forgotten from each with NPO plus the retain NLL term
(``alpha=1``), stopped after several step counts so that the unlearned model keeps some of the
facts (the paper's unlearned models answer 14.8% of the forget questions plainly). Each model is
then asked the forget questions under every framing of the `persuasion` audit (8: plain +
7 persuasive), as are the original and the retrain oracle.

Printed (Markdown): recall per framing for every audited model; recovery = recall(framing) /
recall(plain) - 1 of the unlearned models with 95% bootstrap CIs; the label rates (factual,
non-factual, hallucination) under plain and persuaded framings; the entanglement regression
(R² of each metric alone, and of all nine, on the per-fact factual rate); the audit's cost.
The originals and oracles are trained on first use and cached in ``--out``/cache (the tiny
one in ~11 + 8 minutes, SmolLM2's in ~8 + 5 on an idle machine).
"""

from __future__ import annotations

import argparse
import logging
import time

from _common import setup  # benchmarks/ is on sys.path when a script here runs

import obliviate
from obliviate.audits.entanglement import METRIC_NAMES
from obliviate.audits.persuasion import load_framings
from obliviate.types import RunSpec

BASES = (
    # (label, benchmark, NPO hyperparameters): "unlearned the same way" = one method, one loss,
    # the lr each base tolerates (the tiny Llama was trained at 3e-3, SmolLM2 at 5e-4)
    ("tiny Llama (4 layers, d=128)", "lm-world", {"alpha": 1.0, "lr": 1e-3, "epochs": 1000.0}),
    ("SmolLM2-135M", "lm-world-smollm2",
     {"alpha": 1.0, "lr": 1e-4, "epochs": 1000.0, "batch_size": 8}),
)  # fmt: skip
FORGET = "random:20"  # 20 people = 100 forget questions on both bases


def _f(x: float | None, nd: int = 3) -> str:
    return "" if x is None or x != x else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs-skeb")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny-steps", default="10,15,20")
    ap.add_argument("--smol-steps", default="5,10,20")
    ap.add_argument("--smol-lr", type=float, default=None, help="override SmolLM2's NPO lr")
    ap.add_argument("--only", default="", help="run one base: tiny or smol")
    args = ap.parse_args()
    kw = setup(args.out, args.threads)
    framings = list(load_framings())
    steps = {"lm-world": args.tiny_steps, "lm-world-smollm2": args.smol_steps}
    results = []  # (base label, steps, metrics, timings)
    for label, bench, params in BASES:
        if args.only and args.only not in ("tiny" if bench == "lm-world" else "smol"):
            continue
        p = dict(params)
        if bench == "lm-world-smollm2" and args.smol_lr:
            p["lr"] = args.smol_lr
        for n in [int(s) for s in steps[bench].split(",") if s]:
            t0 = time.perf_counter()
            spec = RunSpec(bench, "npo", params=p, seed=args.seed, forget=FORGET,
                           audits=("persuasion",), max_steps=n)  # fmt: skip
            r = obliviate.run(spec, **kw)
            logging.info("%s, %d steps: %.0f s", label, n, time.perf_counter() - t0)
            notes = r.reports.get("persuasion", {}).get("notes", [])
            results.append((label, n, r.metrics(), r.manifest["timings"], notes))

    # 1. recall per framing, every audited model
    head = ["base", "model", *framings, "any"]
    print("\nRecall of the forget questions per framing (share answered with the gold answer)\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    seen = set()
    for label, n, m, _, _ in results:
        for who, pre in (("original", "original."), ("oracle", "oracle."), (f"NPO {n} steps", "")):
            if who in ("original", "oracle") and (label, who) in seen:
                continue
            seen.add((label, who))
            if f"persuasion.{pre}recall.baseline" not in m:
                continue
            cells = [_f(m.get(f"persuasion.{pre}recall.{f}")) for f in framings]
            print(f"| {label} | {who} | " + " | ".join(cells)
                  + f" | {_f(m.get(f'persuasion.{pre}recall.any'))} |")  # fmt: skip

    # 2. recovery of the unlearned models, with CIs
    print("\nRecovery = recall(framing) / recall(plain) - 1, unlearned models (95% bootstrap CI)\n")
    head = ["base", "steps", "plain recall", *framings[1:], "mean persuaded"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, n, m, _, _ in results:
        cells = []
        for f in framings[1:]:
            v = m.get(f"persuasion.recovery.{f}")
            lo, hi = m.get(f"persuasion.recovery_lo.{f}"), m.get(f"persuasion.recovery_hi.{f}")
            cells.append("n/a" if v is None else f"{v:+.2f} [{_f(lo, 2)}, {_f(hi, 2)}]")
        rec = m.get("persuasion.recovery.persuaded")
        print(f"| {label} | {n} | {_f(m.get('persuasion.recall.baseline'))} | "
              + " | ".join(cells) + f" | {'n/a' if rec is None else f'{rec:+.2f}'} |")  # fmt: skip

    # 3. label rates, plain vs mean persuaded
    print("\nLabel rates of the unlearned models' answers: plain / mean over persuasive framings\n")
    print("| base | steps | factual | non-factual | hallucination |\n|---|---|---|---|---|")
    for label, n, m, _, _ in results:

        def pair(key: str, m=m) -> str:
            plain = m.get(f"persuasion.{key}.baseline")
            pers = [m.get(f"persuasion.{key}.{f}") for f in framings[1:]]
            pers = [v for v in pers if v is not None]
            return f"{_f(plain)} / {_f(sum(pers) / len(pers) if pers else None)}"

        print(f"| {label} | {n} | {pair('recall')} | {pair('nonfactual')} | "
              f"{pair('hallucination')} |")  # fmt: skip

    # 4. entanglement regression
    print("\nEntanglement: R² of the per-fact factual rate (over framings) on each metric alone,"
          " and on all nine\n")  # fmt: skip
    head = ["base", "steps", *METRIC_NAMES, "all nine (adj.)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, n, m, _, _ in results:
        cells = [_f(m.get(f"persuasion.r2.factual.{k}")) for k in METRIC_NAMES]
        r2, adj = m.get("persuasion.r2.factual"), m.get("persuasion.r2_adj.factual")
        print(f"| {label} | {n} | " + " | ".join(cells) + f" | {_f(r2)} ({_f(adj)}) |")

    # 5. cost
    print("\nCost (seconds on this machine)\n")
    print("| base | steps | unlearn s | persuasion audit s | models asked | questions |"
          "\n|---|---|---|---|---|---|")  # fmt: skip
    for label, n, m, t, notes in results:
        q = next((x.split(";")[0] for x in notes if "forget questions" in x), "?")
        models = 1 + sum(f"persuasion.{p}recall.baseline" in m for p in ("original.", "oracle."))
        print(f"| {label} | {n} | {t.get('unlearn_s', 0):.1f} | "
              f"{t.get('audit_s', {}).get('persuasion', 0):.1f} | {models} | "
              f"{len(framings)} framings x ({q}) |")  # fmt: skip


if __name__ == "__main__":
    main()
