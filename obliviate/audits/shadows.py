"""The shadow-model bank shared by LiRA, U-LiRA, RMIA, Apollo and the epsilon score.

K models are trained by the benchmark's own recipe on random halves of a pool of training
examples. The membership matrix is balanced: every pool example is IN for exactly half of the
models (Carlini et al. 2022's protocol), so per-example IN and OUT distributions have K/2 samples
each. Each model is cached on its own (key: benchmark, indices, seed), so an interrupted sweep
resumes from the models already trained, and every audit and method of a benchmark shares them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch import nn

from obliviate.loop import derive_seed

log = logging.getLogger(__name__)

__all__ = ["ShadowBank", "balanced_membership", "shadow_bank"]


def balanced_membership(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """(K, P) bool, each column with exactly K//2 True (K even), rows random halves."""
    if n_models < 2 or n_models % 2:
        raise ValueError(f"a shadow bank needs an even number of models >= 2, got {n_models}")
    rng = np.random.default_rng(seed)
    # rank of a uniform key per column: the K/2 smallest are IN, so each column is balanced
    keys = rng.random((n_models, n_examples))
    order = keys.argsort(axis=0).argsort(axis=0)
    return order < n_models // 2


@dataclass
class ShadowBank:
    pool_idx: np.ndarray  # (P,) training-set indices the shadows were drawn from
    members: np.ndarray  # (K, P) bool: model k trained on pool example p
    models: list[nn.Module]
    seeds: list[int]

    def train_idx(self, k: int) -> np.ndarray:
        return self.pool_idx[self.members[k]]


def shadow_bank(
    ctx, *, n_models: int, pool_idx: np.ndarray | None = None, tag: str = "shadow"
) -> ShadowBank:
    """Train (or load from the cache) ``n_models`` shadow models on balanced random halves of
    ``pool_idx`` (default: the whole training set). ``tag`` separates independent banks."""
    n_train = len(ctx.dataset.train) if hasattr(ctx.dataset, "train") else None
    pool = np.arange(n_train) if pool_idx is None else np.asarray(pool_idx, dtype=np.int64)
    base = derive_seed(ctx.seed, "shadow-bank", tag, len(pool))
    members = balanced_membership(n_models, len(pool), base)
    seeds = [derive_seed(base, k) for k in range(n_models)]
    models = []
    for k in range(n_models):
        log.info("shadow model %d/%d", k + 1, n_models)
        models.append(ctx.train_on(pool[members[k]], seed=seeds[k], kind="shadow"))
    return ShadowBank(pool, members, models, seeds)
