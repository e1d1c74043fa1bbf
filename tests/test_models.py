from __future__ import annotations

import pytest
import torch

from obliviate.loop import seeded
from obliviate.vision.models import build_model


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("cnn", {}, (1, 28, 28)),
        ("cnn", {"width": 8}, (3, 32, 32)),
        ("mlp", {"hidden": (32,)}, (1, 8, 8)),
        ("resnet18", {"width": 4}, (3, 32, 32)),
    ],
)
def test_models_forward_backward_and_embed(name, options, shape):
    with seeded(0):
        m = build_model(name, in_shape=shape, num_classes=7, options=options)
    x = torch.randn(5, *shape)
    out = m(x)
    assert out.shape == (5, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert m.head(m.embed(x)).shape == (5, 7)


def test_resnet_width_scales_parameters_and_init_is_seeded():
    small = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, options={"width": 4})
    big = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, options={"width": 8})
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 3.5 < n(big) / n(small) < 4.1  # conv weights scale with width squared
    with seeded(1):
        a = build_model("cnn", in_shape=(1, 28, 28), num_classes=10)
    with seeded(1):
        b = build_model("cnn", in_shape=(1, 28, 28), num_classes=10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
