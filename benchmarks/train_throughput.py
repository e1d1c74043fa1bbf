"""Training throughput of the default CNN on Fashion-MNIST, and original + oracle wall time.

    python benchmarks/train_throughput.py [--epochs 10] [--threads 2]

Prints a Markdown table: images/s in training and inference, FLOP/s as a fraction of this
machine's measured fp32 matmul peak, the wall time of training the original (60k images) and the
retrain oracle (54k, class Shirt forgotten) with the fmnist-class recipe in a fresh cache, and
their test accuracy. Run it on an idle machine: throughput is shared with anything else running.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import obliviate
from obliviate.registry import BENCHMARKS
from obliviate.types import RunSpec


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 GFLOP/s of a square matmul, best of ``reps``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_image(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """(training, inference) FLOPs per image, counted by torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), y).backward()
    train = fc.get_total_flops() / len(x)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return train, fc.get_total_flops() / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench = BENCHMARKS.get("fmnist-class")
    ds = bench.load()
    model = bench.make_model(ds)
    x, y = ds.train.x[:128], ds.train.y[:128]
    train_flops, infer_flops = flops_per_image(model, x, y)
    peak = matmul_peak()

    # Steady-state training speed: 200 steps of batch 128 after 20 warm-up steps.
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(220):
        if i == 20:
            t0 = time.perf_counter()
        b = slice((i * 128) % 59_000, (i * 128) % 59_000 + 128)
        loss = F.cross_entropy(model(ds.train.x[b]), ds.train.y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_ips = 200 * 128 / (time.perf_counter() - t0)
    with torch.no_grad():
        model(ds.test.x[:2048])
        t0 = time.perf_counter()
        for _ in range(5):
            model(ds.test.x)
        infer_ips = 5 * len(ds.test) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for method in ("original", "oracle"):
            r = obliviate.run(
                RunSpec("fmnist-class", method, audits=("accuracy",)),
                runs_dir=f"{tmp}/runs", cache_dir=f"{tmp}/cache", progress=False,
            )  # fmt: skip
            rows[method] = r
    t = rows["original"].manifest["timings"]
    orig_s, oracle_s = t["original_train_s"], t["oracle_train_s"]
    params = sum(p.numel() for p in model.parameters())
    print("| quantity | value |\n|---|---|")
    print(f"| model | stride CNN, {params:,} parameters |")
    print(f"| threads | {args.threads} |")
    print(f"| fp32 matmul peak (2048^2) | {peak:.0f} GFLOP/s |")
    print(
        f"| FLOPs per image (train / inference) | {train_flops / 1e6:.1f} M / {infer_flops / 1e6:.1f} M |"  # noqa: E501
    )
    print(f"| training throughput | {train_ips:,.0f} img/s = {train_ips * train_flops / 1e9:.0f} GFLOP/s "  # noqa: E501
          f"= {train_ips * train_flops / 1e9 / peak:.0%} of peak |")  # fmt: skip
    print(
        f"| inference throughput | {infer_ips:,.0f} img/s = {infer_ips * infer_flops / 1e9 / peak:.0%} of peak |"  # noqa: E501
    )
    print(f"| original + oracle training (10 epochs each) | {orig_s + oracle_s:.0f} s (original "
          f"{orig_s:.0f} s, oracle {oracle_s:.0f} s) |")  # fmt: skip
    print(f"| original test accuracy | {rows['original'].metrics()['accuracy.test_acc']:.4f} |")
    print(
        f"| oracle test accuracy (Shirt never seen) | {rows['oracle'].metrics()['accuracy.test_acc']:.4f} |"  # noqa: E501
    )


if __name__ == "__main__":
    main()
