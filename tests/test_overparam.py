"""The overparam benchmark family: the regression Task, the poison data as the paper's code draws
it, the tinted Fashion-MNIST data, and the benchmark protocol through the runner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from obliviate.bench.overparam import (
    COLLAPSE_PALETTE,
    RegressionTask,
    SinMLP,
    _fmnist_subset,
    gray_error,
)
from obliviate.bench.runner import run, trained_model
from obliviate.registry import BENCHMARKS
from obliviate.store import ModelCache
from obliviate.types import RunSpec
from obliviate.vision.data import DEBIAN_DIR, TensorData

needs_fmnist = pytest.mark.skipif(
    not DEBIAN_DIR.exists(), reason="Fashion-MNIST is not installed in " + str(DEBIAN_DIR)
)


def test_regression_task_losses():
    task = RegressionTask()
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(0.0)
    data = TensorData.of(torch.tensor([[1.0], [-1.0], [0.5]]), torch.tensor([[1.0], [0.0], [1.0]]))
    batch = next(task.batches(data, 3))
    assert torch.allclose(task.loss(model, batch), torch.tensor([1.0, 4.0, 0.0]))
    ev = task.evaluate(model, data)
    assert ev["sup_error"] == pytest.approx(2.0) and ev["mse"] == pytest.approx(5 / 3)
    zero = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(zero.weight), torch.nn.init.zeros_(zero.bias)
    assert torch.allclose(task.divergence(model, zero, batch), 0.5 * torch.tensor([4.0, 4, 1]))


def test_poison_draws_follow_the_papers_code():
    bench = dataclasses.replace(BENCHMARKS.get("overparam-poison"), data_seed=4)
    ds, model = bench.trial()
    # experiments/sin/data_module.py: set_seed(s); rand retain x; rand forget x; ShallowNet(300)
    torch.manual_seed(4)
    xr = torch.rand(50, 1) * 31.416 - 15.708
    xf = torch.rand(5, 1) * 31.416 - 15.708
    ref = SinMLP(300)
    assert torch.allclose(ds.train.x, torch.cat([xr, xf]))
    assert torch.equal(ds.train.y[:50], torch.sin(ds.train.x[:50]))
    assert (ds.train.y[50:] == 1.5).all()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    sp = bench.splits(ds, "poison", 0)
    assert sp.forget_idx.tolist() == [50, 51, 52, 53, 54] and len(sp.retain) == 50
    assert len(sp.test) == 1000 and sp.test.x.min() == pytest.approx(-15.708)
    with pytest.raises(ValueError, match="poison"):
        bench.resolve_forget(ds, "random:10%")


def test_poison_runs_through_the_runner(tmp_path, monkeypatch):
    # A small variant (width 32, 300 steps) registered for this test only.
    bench = dataclasses.replace(
        BENCHMARKS.get("overparam-poison"), name="overparam-poison-test", width=32,
        train_steps=300, lr=3e-3,
    )  # fmt: skip
    BENCHMARKS.names()  # discovery first, so the patched entry is not overwritten
    monkeypatch.setitem(BENCHMARKS._entries, "overparam-poison-test", bench)
    res = run(
        RunSpec("overparam-poison-test", "minnorm-og", params={"retain_access": 1.0}),
        runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False,
        keep_model=True,
    )  # fmt: skip
    assert res.manifest["status"] == "done" and res.manifest["kind"] == "regression"
    assert res.manifest["steps"] == 5  # 5 epochs x 1 forget batch
    ds = bench.load()
    ev = bench.task(ds).evaluate(res.model, ds.test)
    assert np.isfinite(ev["sup_error"])


def test_gray_error():
    logits = np.full((2, 30), -50.0)
    logits[0, 3] = 10.0  # certain "gray, class 3"
    logits[1, 13] = 10.0  # certain "red, class 3"
    assert gray_error(logits) == pytest.approx([0.0, 1.0], abs=1e-12)


@needs_fmnist
def test_erase_data():
    bench = dataclasses.replace(BENCHMARKS.get("overparam-erase"), n_train=500, n_test=100)
    ds = bench.load()
    sp = bench.splits(ds, "tinted", 0)
    assert len(sp.retain) == 500 and len(sp.forget) == 10 and ds.num_classes == 30
    r, f = sp.retain.x, sp.forget.x
    assert (sp.retain.y < 10).all() and (sp.forget.y >= 10).all()
    assert torch.equal(r[:, 0], r[:, 1]) and torch.equal(r[:, 1], r[:, 2])  # gray
    red = sp.forget.y < 20
    assert (f[red][:, 1:] == -1).all() and (f[~red][:, [0, 2]] == -1).all()  # dark channels
    ft = sp.extra["forget_test"]
    assert len(ft) == 200 and (ft.y >= 10).all() and len(sp.test) == 100
    assert torch.equal(ds.train.y % 10, _fmnist_subset(None, 500, 100, 1)[1][ds.origin])
    assert torch.equal(ds.train.y // 10, ds.tint)


@needs_fmnist
def test_collapse_data():
    bench = dataclasses.replace(BENCHMARKS.get("overparam-collapse"), n_train=1000, n_test=50)
    ds = bench.load()
    sp = bench.splits(ds, "tinted", 0)
    assert len(sp.forget) == 10 and len(sp.retain) == 1000
    # every training row is its source image tinted with the recorded palette colour
    palette = torch.tensor(COLLAPSE_PALETTE, dtype=torch.float32) / 255
    base = _fmnist_subset(None, 1000, 50, bench.data_seed)[0]
    expect = (base[ds.origin] * palette[ds.tint][:, :, None, None] - 0.5) / 0.5
    assert torch.allclose(ds.train.x, expect)
    assert torch.equal(ds.tint[:1000], sp.retain.y)  # D_r: the class's own colour
    assert (ds.tint[1000:] != sp.forget.y).all()  # D_f: another colour, content label kept
    assert len(sp.test) == 500 and torch.equal(sp.test.y, torch.arange(10).repeat_interleave(50))
    assert torch.equal(sp.extra["content_test"].x, sp.test.x)
    # the original's data repeats D_f so that D_f and D_r carry equal loss
    data = bench.train_data(ds, bench.all_train_indices(ds))
    assert len(data) == 2000 and (data.idx >= 1000).sum() == 1000
    assert len(bench.train_data(ds, sp.retain_idx)) == 1000


@needs_fmnist
@pytest.mark.slow
def test_tinted_originals_learn_the_tint(tmp_path):
    # Measured (seed 0, 10k images): erase original gray error 0.62 vs oracle 0.0000.
    bench = BENCHMARKS.get("overparam-erase")
    ds = bench.load()
    task, sp = bench.task(ds), bench.splits(ds, "tinted", 0)
    cache = ModelCache(tmp_path)
    models = [
        trained_model(bench, ds, task, cache, train_idx=idx, seed=0, kind=k, progress=False)[0]
        for idx, k in ((bench.all_train_indices(ds), "original"), (sp.retain_idx, "oracle"))
    ]
    tests = (sp.test, sp.extra["forget_test"])
    errs = [gray_error(np.concatenate([task.predict(m, t) for t in tests])).mean() for m in models]
    assert errs[0] > 0.3 and errs[1] < 0.01
