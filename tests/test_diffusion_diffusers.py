"""The optional diffusers UNet behind the same T2IModel: SD module names, shapes, a training
step, and a DDPM loss through the DiffusionTask (skipped without diffusers)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from obliviate.diffusion.data import DIGIT_WORDS, make_vocab  # noqa: E402
from obliviate.diffusion.models import build_t2i_model  # noqa: E402
from obliviate.diffusion.task import DiffusionTask  # noqa: E402
from obliviate.loop import seeded  # noqa: E402


def test_diffusers_unet_names_and_loss():
    vocab = make_vocab(DIGIT_WORDS, [("white",), ("red",)])
    torch.manual_seed(0)
    model = build_t2i_model(
        vocab_size=len(vocab), max_len=8, image_shape=(3, 8, 8), unet="diffusers",
        block_out_channels=(16, 32), text_dim=32,
    )  # fmt: skip
    names = [n for n, _ in model.named_modules()]
    for suffix in ("attn2.to_k", "attn2.to_v", "attn2.to_q", "attn1.to_q"):
        assert any(n.endswith(suffix) for n in names), suffix
    task = DiffusionTask(vocab, (3, 8, 8), cond_dropout=0.1)
    batch = {"x0": torch.rand(4, 3, 8, 8) * 2 - 1, "tokens": vocab.encode(["a three"] * 4)}
    with seeded(0):
        a = task.loss(model, batch)
    with seeded(0):
        b = task.loss(model, batch)
    assert a.shape == (4,) and torch.equal(a, b)
    a.mean().backward()
    assert model.text_encoder.token_embedding.weight.grad is not None
    x = task.sample(model, ["a red three"], n=2, steps=3, guidance=2.0)
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()
