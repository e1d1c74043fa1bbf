"""Slow LM checks: SmolLM2 conversion and loading, lm-capitals, lm-wiki-tiny's original/oracle."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from obliviate.bench.runner import reference_models  # noqa: E402
from obliviate.loop import derive_seed  # noqa: E402
from obliviate.registry import BENCHMARKS  # noqa: E402
from obliviate.store import ModelCache  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_smollm2_loads_from_cache_and_answers():
    pytest.importorskip("gguf")
    from obliviate.lm.models import load_pretrained, smollm2_dir
    from obliviate.lm.task import LMTask

    folder = smollm2_dir()  # converts once (about a minute), then cached
    assert (folder / "model.safetensors").exists() and (folder / "done.json").exists()
    t = time.perf_counter()
    model, tok = load_pretrained("smollm2")
    assert time.perf_counter() - t < 30  # measured 0.8 s warm
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    task = LMTask(tok, chat=True)
    out = task.generate(model, ["What is the capital of France?"], max_new_tokens=10)
    assert "Paris" in out[0]
    data = task.encode(
        ["What is the capital of France?"] * 2, ["The capital of France is Paris."] * 2
    )
    # measured: 0.35 nats/token for the statement (a bare "Paris" + end-of-turn: 9.3)
    assert task.evaluate(model, data)["loss"] < 1.0
    # the target-only projection equals the full logits on a real model
    batch = next(task.batches(data, 2))
    with torch.no_grad():
        logp = torch.log_softmax(
            model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits[:, :-1], -1
        )
        lab = batch["labels"][:, 1:]
        keep = lab != -100
        full = -(logp[keep].gather(1, lab[keep][:, None])).reshape(2, -1).sum(1)
        assert torch.allclose(task.loss(model, batch), full, atol=1e-3)


def test_capitals_known_facts_and_no_oracle():
    bench = BENCHMARKS.get("lm-capitals")
    ds = bench.load()
    assert bench.has_oracle is False
    assert 20 < len(ds.train) < ds.info["n_asked"]  # it knows some capitals, not all
    for m in ds.train.meta:
        assert m["answer"].lower() in m["generated"].lower()
        assert m["statement"] in ds.train.targets
    sp = bench.splits(ds, bench.resolve_forget(ds, None), derive_seed(0, "split"))
    assert len(sp.forget) == 20
    f, r, c = set(sp.forget_idx), set(sp.retain_idx), set(sp.info["control_idx"])
    assert not (f & r or f & c or r & c) and len(f | r | c) == len(ds.train)


def test_wiki_tiny_oracle_has_not_seen_the_article(tmp_path):
    bench = BENCHMARKS.get("lm-wiki-tiny")
    ds = bench.load()
    task = bench.task(ds)
    sp = bench.splits(ds, bench.resolve_forget(ds, None), derive_seed(0, "split"))
    (orig, _), (oracle, _) = reference_models(
        bench, ds, task, ModelCache(tmp_path), splits=sp, seed=0, progress=False
    )
    # measured (seed 0, article "A"): original 5.50 nats/token on it, oracle 7.13
    assert task.evaluate(orig, sp.forget)["loss"] + 1.0 < task.evaluate(oracle, sp.forget)["loss"]
    with pytest.raises(ValueError, match="unknown article"):
        bench.splits(ds, "article:No Such Article", 0)
    with pytest.raises(ValueError, match="empty or whole"):
        bench.resolve_forget(ds, "articles:0")
