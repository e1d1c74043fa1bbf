"""The shadow bank: balanced membership, plans, population indices (test examples in the pool),
the pool shared by LiRA, U-LiRA and RMIA, the runner's cache entries, cached signals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from obliviate.audits.shadows import (
    balanced_membership,
    bank_plan,
    cached_arrays,
    population_data,
    shadow_bank,
    target_pool,
)


def test_balanced_membership():
    m = balanced_membership(8, 50, seed=3)
    assert m.shape == (8, 50) and m.dtype == bool
    assert (m.sum(0) == 4).all()  # every example IN for exactly half of the models
    assert len({r.tobytes() for r in m}) == 8  # rows are different halves
    assert (balanced_membership(8, 50, seed=3) == m).all()
    assert not (balanced_membership(8, 50, seed=4) == m).all()
    with pytest.raises(ValueError, match="even"):
        balanced_membership(5, 10, seed=0)


def test_bank_plan_deterministic_with_always_in(tiny):
    pool, core = np.arange(10, 30), np.arange(5)
    a = bank_plan(tiny.ctx, n_models=4, pool_idx=pool, tag="t", always_in=core)
    b = bank_plan(tiny.ctx, n_models=4, pool_idx=pool, tag="t", always_in=core)
    assert a.seeds == b.seeds and (a.members == b.members).all() and a.models == []
    assert a.fingerprint() == b.fingerprint()
    assert bank_plan(tiny.ctx, n_models=4, pool_idx=pool, tag="u").seeds != a.seeds
    t0 = a.train_idx(0)
    np.testing.assert_array_equal(t0[:5], core)  # every model trains on the always-in core
    np.testing.assert_array_equal(t0[5:], pool[a.members[0]])
    with pytest.raises(ValueError, match="overlap"):
        bank_plan(tiny.ctx, n_models=2, pool_idx=pool, always_in=np.array([10]))


def test_train_only_bank_is_what_ctx_train_on_gives(tiny):
    # a pool of training indices keeps the runner's cache entries: the same models as train_on
    bank = shadow_bank(tiny.ctx, n_models=2, pool_idx=np.arange(0, 240, 2), tag="same-as-runner")
    assert len(bank.models) == 2
    for k, model in enumerate(bank.models):
        direct = tiny.ctx.train_on(bank.train_idx(k), seed=bank.seeds[k], kind="shadow")
        for (name, v), w in zip(
            model.state_dict().items(), direct.state_dict().values(), strict=True
        ):
            assert torch.equal(v, w), name


def test_population_data_keeps_order_and_marks_test_examples(tiny):
    n = len(tiny.ds.train)
    pop = np.array([n + 7, 3, n, 11])
    data = population_data(tiny.bench, tiny.ds, pop)
    assert data.idx.tolist() == pop.tolist()  # population indices, in the order asked
    assert torch.equal(data.x[0], tiny.ds.test.x[7]) and torch.equal(data.x[1], tiny.ds.train.x[3])
    assert data.y[2] == tiny.ds.test.y[0] and data.y[3] == tiny.ds.train.y[11]
    only_train = population_data(tiny.bench, tiny.ds, np.array([4, 2]))
    assert only_train.idx.tolist() == [4, 2]
    with pytest.raises(ValueError, match="population indices"):
        population_data(tiny.bench, tiny.ds, np.array([n + len(tiny.ds.test)]))


def test_target_pool_random_request(tiny_random):
    ctx, n = tiny_random.ctx, len(tiny_random.ds.train)
    p = target_pool(ctx, n_targets=50, n_reference=30, n_background=100)
    assert len(p.forget) == len(p.heldout) == 50 and len(p.reference) == 30
    assert len(p.background) == 100
    assert np.isin(p.forget, ctx.splits.forget_idx).all()
    assert np.isin(p.background, ctx.splits.retain_idx).all()
    assert (p.heldout >= n).all() and (p.reference >= n).all()  # test examples
    assert not np.intersect1d(p.heldout, p.reference).size
    assert len(np.unique(np.r_[p.pool, p.background])) == 50 + 50 + 30 + 100
    np.testing.assert_array_equal(p.pool[p.target_cols], p.targets)
    np.testing.assert_array_equal(p.pool[p.reference_cols], p.reference)
    assert p.is_member.tolist() == [1] * 50 + [0] * 50
    again = target_pool(ctx, n_targets=50, n_reference=30, n_background=100)
    np.testing.assert_array_equal(again.pool, p.pool)
    # more targets than the forget set holds: as many as there are, on both sides
    big = target_pool(ctx, n_targets=10_000, n_reference=0, n_background=0)
    assert len(big.forget) == len(big.heldout) == len(ctx.splits.forget_idx)


def test_target_pool_class_request_stays_in_the_class(tiny):
    ctx, n = tiny.ctx, len(tiny.ds.train)
    p = target_pool(ctx, n_targets=1000, n_reference=40, n_background=100)
    cls = ctx.splits.info["class"]
    data = population_data(tiny.bench, tiny.ds, p.targets)
    assert (data.y == cls).all()  # held-out targets are test examples of the forgotten class
    assert len(p.heldout) == len(ctx.splits.extra["forget_test"])
    ref = population_data(tiny.bench, tiny.ds, p.reference)
    assert (ref.y != cls).all()  # the population z comes from the rest of the test set
    assert (p.heldout >= n).all()


def test_cached_arrays_computes_once(tiny, tmp_path):
    ctx = copy.copy(tiny.ctx)
    ctx.cache = type(tiny.ctx.cache)(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3.0)}

    req = {"what": "x", "n": 1}
    np.testing.assert_array_equal(cached_arrays(ctx, "test", req, compute)["a"], np.arange(3.0))
    cached_arrays(ctx, "test", req, compute)
    assert len(calls) == 1
    cached_arrays(ctx, "test", {"what": "x", "n": 2}, compute)  # another request: recomputed
    assert len(calls) == 2
    for f in (tmp_path / "signals" / "test").glob("*.npz"):
        f.write_bytes(b"not an npz")  # a corrupted file is recomputed, not trusted
    cached_arrays(ctx, "test", req, compute)
    assert len(calls) == 3
