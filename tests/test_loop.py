"""train_model's per-epoch hook: called once per epoch, invisible to the training itself."""

from __future__ import annotations

import numpy as np
import torch

from obliviate.loop import TrainRecipe, seeded, train_model
from obliviate.vision.models import MLP


class NoisyTask:
    """The tiny task with input noise from the global RNG (as diffusion's loss draws its
    noise), so that a hook drawing from that RNG would change the training."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model, batch):
        return self.task.loss(
            model, {**batch, "x": batch["x"] + 0.1 * torch.randn_like(batch["x"])}
        )


def test_on_epoch_hook_sees_every_epoch_and_changes_nothing(tiny):
    data = tiny.ds.train.subset(np.arange(200))
    task = NoisyTask(tiny.task)
    recipe = TrainRecipe(lr=0.05, epochs=3, batch_size=64, weight_decay=0.0, schedule="onecycle")
    seen = []

    def fit(with_hook: bool):
        with seeded(0):
            model = MLP(tiny.ds.in_shape, 10, hidden=(32,))

        def hook(k: int) -> None:
            seen.append((k, model.training))
            model.eval()  # an evaluation may switch modes ...
            torch.randn(1000)  # ... and draw from the global RNG

        hook_fn = hook if with_hook else None
        info = train_model(model, data, task=task, recipe=recipe, seed=0, on_epoch=hook_fn)
        return model, info

    plain, _ = fit(False)
    hooked, info = fit(True)
    assert [k for k, _ in seen] == [1, 2, 3] and all(training for _, training in seen)
    assert info["steps"] == 3 * 4
    for a, b in zip(plain.state_dict().values(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b)
