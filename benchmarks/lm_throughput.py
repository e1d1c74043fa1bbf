"""LM training throughput: tokens/s and the fraction of this machine's fp32 matmul peak.

    python benchmarks/lm_throughput.py [--threads 2] [--steps 20] [--smol-steps 3] [--no-smol]

Trains on lm-world QA batches (batch 16, the benchmark's sequences) with AdamW through the LM
Task (``task.loss``: summed target NLL, vocabulary projection at target positions only), for:
the lm-world-tiny Llama (2 layers, d 64), the lm-world Llama (4 layers, d 128), and
SmolLM2-135M-Instruct, full fine-tuning and LoRA r=8 on q_proj/v_proj. Model FLOPs are the
usual 6 x parameters x tokens (tokens = every non-pad input token; the target-only projection
does less work than that, so the fraction is an upper-bound convention, as in PaLM's MFU; for
LoRA, 6 x all parameters is the standard convention although the frozen weights need no weight
gradient). Prints a Markdown table. Run it on an idle machine: throughput is shared.
"""

from __future__ import annotations

import argparse
import time

import torch

from obliviate.registry import BENCHMARKS


def matmul_peak(n: int = 2048, reps: int = 8) -> float:
    """fp32 GFLOP/s of a square matmul, best of ``reps``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def measure(model: torch.nn.Module, task, data, *, steps: int, batch_size: int = 16) -> dict:
    """Tokens/s over ``steps`` AdamW steps after one warm-up step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    model.train()
    batches = list(task.batches(data, batch_size, shuffle=True, seed=0))
    tokens, t0 = 0, 0.0
    for k in range(steps + 1):
        b = batches[k % len(batches)]
        if k == 1:  # step 0 is the warm-up (allocations, first-call overheads)
            t0 = time.perf_counter()
        loss = task.loss(model, b).sum() / b["n_tokens"].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= 1:
            tokens += int(b["attention_mask"].sum())
    seconds = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "params": n_params,
        "trainable": sum(p.numel() for p in params),
        "tokens_per_s": tokens / seconds,
        "gflops": 6 * n_params * tokens / seconds / 1e9,
        "s_per_step": seconds / steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed steps for the tiny Llamas")
    ap.add_argument("--smol-steps", type=int, default=3, help="timed steps for SmolLM2")
    ap.add_argument("--no-smol", action="store_true", help="skip SmolLM2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from obliviate.lm.models import apply_lora

    peak = matmul_peak()
    rows = []
    for name in ("lm-world-tiny", "lm-world"):
        bench = BENCHMARKS.get(name)
        ds = bench.load()
        task = bench.task(ds)
        torch.manual_seed(0)
        model = bench.make_model(ds)
        rows.append(
            (f"tiny Llama ({name})", "full", measure(model, task, ds.train, steps=args.steps))
        )
    if not args.no_smol:
        bench = BENCHMARKS.get("lm-world-smollm2")
        ds = bench.load()
        task = bench.task(ds)
        for mode in ("full", "LoRA r=8 q,v"):
            model = bench.make_model(ds)
            if mode != "full":
                model = apply_lora(model, r=8, alpha=16)
            rows.append(
                ("SmolLM2-135M", mode, measure(model, task, ds.train, steps=args.smol_steps))
            )
            del model
    # a loaded machine moves the peak: take the best of a measurement before and after
    peak = max(peak, matmul_peak())
    print(f"\nfp32 matmul peak: {peak:.0f} GFLOP/s ({args.threads} threads)\n")
    print("| model | training | params | trainable | tokens/s | s/step | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for label, mode, r in rows:
        print(
            f"| {label} | {mode} | {r['params'] / 1e6:.2f} M | {r['trainable'] / 1e6:.2f} M | "
            f"{r['tokens_per_s']:.0f} | {r['s_per_step']:.2f} | {r['gflops']:.1f} | "
            f"{r['gflops'] / peak:.1%} |"
        )


if __name__ == "__main__":
    main()
