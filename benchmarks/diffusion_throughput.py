"""Diffusion substrate throughput and the t2i-fmnist original (numbers for BENCHMARKS.md).

1. Train and sampling throughput (images/s) of the lean conv UNet and of diffusers'
   UNet2DConditionModel at 16x16, batch 128 (each with the text encoder).
2. Train (or load from the cache) the ``t2i-fmnist`` original exactly as ``obliviate.run`` does
   for seed 0, then report the detector's accuracy on real test images and on the original's
   own generations (10 classes x N samples, 20 DDIM steps, several guidance scales).

    python benchmarks/diffusion_throughput.py --cache-dir /tmp/cache --out result.json
    python benchmarks/diffusion_throughput.py --skip-throughput --curve 5 --out curve.json

3. ``--curve K``: train the same original again (same seeds: its final weights are checked
   against the cached one) and measure the detector's accuracy on its generations every K
   epochs (guidance 3, the benchmark's sampler): the learning curve.

Uses the threads torch gives it (both cores); run it on an idle machine and say so.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from obliviate.bench.runner import trained_model
from obliviate.diffusion.models import build_t2i_model, count_params
from obliviate.diffusion.task import DiffusionTask
from obliviate.loop import derive_seed, seeded
from obliviate.registry import BENCHMARKS
from obliviate.store import ModelCache

log = logging.getLogger("diffusion_throughput")


def throughput(ds, unet: str, *, batch: int = 128, steps: int = 6) -> dict[str, float]:
    """Train and forward images/s of one UNet build (the first 2 steps are warm-up)."""
    bench = BENCHMARKS.get("t2i-fmnist")
    torch.manual_seed(0)
    opts = {"attention_levels": bench.attention_levels} if unet == "lean" else None
    chans = bench.block_out_channels if unet == "lean" else (32, 64)
    m = build_t2i_model(
        vocab_size=len(ds.vocab), max_len=ds.vocab.max_len, image_shape=ds.image_shape,
        unet=unet, block_out_channels=chans, text_dim=bench.text_dim, options=opts,
    )  # fmt: skip
    task = DiffusionTask(ds.vocab, ds.image_shape)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    b = {"x0": ds.train.x0[:batch], "tokens": ds.train.tokens[:batch]}
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = task.loss(m, b).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    train = steps * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    x = task.sample(m, [ds.prompt("sandal")], n=batch, steps=10, guidance=3.0)
    sample = len(x) / (time.perf_counter() - t0)
    return {
        "params": count_params(m), "unet_params": count_params(m.unet),
        "train_img_s": train, "sample_img_s_10steps_cfg": sample,
    }  # fmt: skip


def per_class_accuracy(task, judges, model, prompts, n: int, guidance: float) -> np.ndarray:
    """The detector's accuracy on ``n`` generations of each class prompt (20 steps, seed 1)."""
    x = task.sample(model, prompts, n=n, steps=20, guidance=guidance, seed=1)
    pred = judges.class_probs(x).argmax(1).reshape(len(prompts), n)
    return (pred == np.arange(len(prompts))[:, None]).mean(1)


def learning_curve(bench, ds, task, judges, prompts, cached, args) -> list[dict[str, float]]:
    """Retrain the original as ``trained_model`` does, measuring every ``args.curve`` epochs."""
    seed = derive_seed(0, "train")
    with seeded(derive_seed(seed, "init")):
        model = bench.make_model(ds)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()

    def measure(epoch: int) -> None:
        if epoch % args.curve and epoch != bench.recipe.epochs:
            return
        acc = float(per_class_accuracy(task, judges, model, prompts, args.n, 3.0).mean())
        curve.append({"epoch": epoch, "gen_acc_g3": acc, "wall_s": time.perf_counter() - t0})
        log.info("epoch %d: detector accuracy on generations %.3f", epoch, acc)

    data = bench.train_data(ds, bench.all_train_indices(ds))
    info = bench.train(model, data, task=task, seed=derive_seed(seed, "order"),
                       progress="curve", on_epoch=measure)  # fmt: skip
    pairs = zip(model.state_dict().values(), cached.state_dict().values(), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    log.info("curve run: %s; identical to the cached original: %s", info, same)
    return curve + [{"train_s": info["seconds"], "identical_to_cached": same}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default="/tmp/obliviate-diffusion-cache")
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=50, help="samples per class prompt")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--curve", type=int, default=0, help="learning curve every K epochs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        # on a machine shared with other jobs, 2 spinning threads run slower than 1
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bench = BENCHMARKS.get("t2i-fmnist")
    ds = bench.load()
    task = bench.task(ds)
    result: dict = {"threads": torch.get_num_threads()}
    if not args.skip_throughput:
        for unet in ("lean", "diffusers"):
            result[f"throughput_{unet}"] = throughput(ds, unet)
            log.info("%s: %s", unet, result[f"throughput_{unet}"])
    cache = ModelCache(args.cache_dir)
    t0 = time.perf_counter()
    judges = bench.judges(ds, cache)
    result["judges_s"] = time.perf_counter() - t0
    result["judges_real_test"] = judges.accuracy(ds.test)
    log.info("judges on real test images: %s", result["judges_real_test"])
    original, manifest = trained_model(
        bench, ds, task, cache, train_idx=bench.all_train_indices(ds),
        seed=derive_seed(0, "train"), kind="original", progress="original",
    )  # fmt: skip
    result["original_train"] = manifest.get("train")
    log.info("original: %s", manifest.get("train"))
    prompts = [ds.prompt(w[0]) for w in ds.class_words]
    if args.curve:
        result["curve"] = learning_curve(bench, ds, task, judges, prompts, original, args)
    for g in (1.0, 3.0, 5.0):
        t0 = time.perf_counter()
        per_class = per_class_accuracy(task, judges, original, prompts, args.n, g)
        img_s = len(prompts) * args.n / (time.perf_counter() - t0)  # sampling and judging
        result[f"gen_acc_g{g:g}"] = float(per_class.mean())
        result[f"gen_acc_per_class_g{g:g}"] = per_class.round(3).tolist()
        result[f"sample_img_s_g{g:g}"] = img_s
        log.info("guidance %g: detector accuracy on generations %.3f (%.0f img/s)",
                 g, per_class.mean(), img_s)  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
