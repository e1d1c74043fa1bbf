"""Text-to-image concept-erasure benchmarks on a diffusion model trained here.

``t2i-fmnist``: real Fashion-MNIST at 16x16, tinted white/red/green/blue, captioned with class
synonyms; the original is trained on every image, the retrain oracle without the concept's
images; the default request is ``concept:sandal``. ``t2i-tiny``: sklearn's 8x8 digits in the
same form, the seconds-long fixture of the tests (``concept:three``).

A deletion request is ``concept:<word>``: a class or a colour named by any of its words
("concept:flip-flop" resolves to "concept:sandal"). Judges (detector and colour classifier)
come from ``bench.judges(ds, cache)``, trained on the real images and cached. Nothing here
imports diffusers; the model builder imports it only for ``unet="diffusers"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from obliviate.diffusion.data import Concept, T2IData, T2IDataset, build_dataset
from obliviate.diffusion.models import build_t2i_model
from obliviate.diffusion.schedule import NoiseSchedule
from obliviate.diffusion.task import DiffusionTask
from obliviate.loop import TrainRecipe, train_model
from obliviate.registry import BENCHMARKS
from obliviate.types import Budget, Splits

__all__ = ["DiffusionBenchmark", "parse_concept_rule"]


def parse_concept_rule(text: str, ds: T2IDataset) -> Concept:
    kind, _, word = text.partition(":")
    if kind.strip().lower() != "concept" or not word.strip():
        raise ValueError(
            f"bad deletion request {text!r} for a text-to-image benchmark: write "
            f"concept:<word>, e.g. concept:{ds.classes[0]} or concept:{ds.colours[-1]}"
        )
    return ds.concept(word)


@dataclass(frozen=True)
class DiffusionBenchmark:
    """A concept-erasure benchmark: captioned images, a T2I model, its recipe, the request."""

    name: str  # registry key
    source: str = "fashion-mnist"  # image source: "fashion-mnist" or "digits"
    size: int = 16  # image side after resizing
    colours: tuple[str, ...] = ("white", "red", "green", "blue")  # tints (data.COLOURS keys)
    n_train: int | None = 20_000  # stratified training images (None: all)
    n_test: int | None = 2_000  # stratified test images (None: all)
    data_seed: int = 0  # tints, captions and subsets
    unet: str = "lean"  # "lean" (conv UNet written here) or "diffusers" (UNet2DConditionModel)
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # UNet widths per resolution level
    attention_levels: tuple[int, ...] = (1, 2)  # levels with self+cross attention (lean UNet)
    text_dim: int = 64  # text-encoder width = cross-attention context dim
    T: int = 1000  # DDPM training timesteps (linear betas 1e-4..0.02)
    cond_dropout: float = 0.1  # P(empty caption) while training: classifier-free guidance
    # Original and oracle. Measured on t2i-fmnist with benchmarks/diffusion_throughput.py (idle,
    # 2026-12-07): 6 epochs with OneCycle (942 steps, 149 s) gave detector accuracy 0.14-0.22 on
    # the model's own generations; these 30 epochs at constant lr (4,710 steps, 740 s) 0.45 /
    # 0.59 / 0.42 at guidance 1 / 3 / 5 (the detector's own accuracy on real test images: 0.84).
    recipe: TrainRecipe = TrainRecipe(
        optimizer="adamw", lr=3e-3, weight_decay=0.0, epochs=30, batch_size=128,
        schedule="constant",
    )  # fmt: skip
    judge_epochs: int = 6  # training epochs of the detector and the colour classifier
    sample_eta: float = 0.0  # DDIM eta of generations from noise (0: DDIM, 1: ancestral)
    forget: str = "concept:sandal"  # the default deletion request
    audits: tuple[str, ...] = ("concept-rate",)  # audits run by default
    max_steps: int | None = None  # unlearning budget in optimizer steps (None: method's plan)
    description: str = ""  # one line for `obliviate list`
    kind: str = "diffusion"  # the Task kind

    def load(self, data_dir: str | None = None) -> T2IDataset:
        return build_dataset(
            source=self.source, size=self.size, colours=self.colours, n_train=self.n_train,
            n_test=self.n_test, seed=self.data_seed, data_dir=str(data_dir) if data_dir else None,
        )  # fmt: skip

    def task(self, ds: T2IDataset) -> DiffusionTask:
        return DiffusionTask(
            ds.vocab, ds.image_shape, NoiseSchedule(self.T), sample_eta=self.sample_eta
        )

    def make_model(self, ds: T2IDataset) -> nn.Module:
        return build_t2i_model(
            vocab_size=len(ds.vocab), max_len=ds.vocab.max_len, image_shape=ds.image_shape,
            unet=self.unet, block_out_channels=self.block_out_channels, text_dim=self.text_dim,
            options={"attention_levels": self.attention_levels} if self.unet == "lean" else None,
        )  # fmt: skip

    def resolve_forget(self, ds: T2IDataset, forget: str | None) -> str:
        """The canonical request: "concept:flip-flop" -> "concept:sandal"."""
        return f"concept:{parse_concept_rule(forget or self.forget, ds).name}"

    def splits(self, ds: T2IDataset, forget: str, seed: int) -> Splits:
        """Forget = every training image of the concept (class or colour); deterministic."""
        c = parse_concept_rule(forget, ds)

        def mask(d: T2IData) -> np.ndarray:
            return (d.label if c.kind == "class" else d.colour).numpy() == c.index

        m, mt = mask(ds.train), mask(ds.test)
        forget_idx, retain_idx = np.flatnonzero(m), np.flatnonzero(~m)
        return Splits(
            forget=ds.train.subset(forget_idx),
            retain=ds.train.subset(retain_idx),
            test=ds.test,
            forget_idx=forget_idx,
            retain_idx=retain_idx,
            extra={
                "forget_test": ds.test.subset(np.flatnonzero(mt)),
                "retain_test": ds.test.subset(np.flatnonzero(~mt)),
            },
            info={
                "rule": f"concept:{c.name}",
                "kind": "concept",
                "concept_kind": c.kind,
                "concept": c.name,
                "synonyms": list(c.synonyms),
                "class": c.index if c.kind == "class" else None,
                "colour": c.index if c.kind == "colour" else None,
                "n_forget": int(len(forget_idx)),
            },
        )

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def data_identity(self) -> dict[str, Any]:
        keys = ("source", "size", "colours", "n_train", "n_test", "data_seed")
        return {k: getattr(self, k) for k in keys}

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        # what does not change the trained model (the sampler is chosen at generation time)
        for k in ("name", "forget", "audits", "max_steps", "description", "kind", "judge_epochs",
                  "sample_eta"):  # fmt: skip
            d.pop(k)
        return {"family": "t2i", **d}

    def all_train_indices(self, ds: T2IDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: T2IDataset, idx: np.ndarray) -> T2IData:
        return ds.train.subset(idx)

    def train(
        self,
        model: nn.Module,
        data: T2IData,
        *,
        task: DiffusionTask,
        seed: int,
        progress: bool | str = False,
        on_epoch: Any = None,
    ) -> dict[str, float]:
        """The recipe on the DDPM loss with caption dropout (classifier-free guidance);
        ``on_epoch(k)`` as in ``loop.train_model`` (a learning curve)."""
        train_task = dataclasses.replace(task, cond_dropout=self.cond_dropout)
        return train_model(model, data, task=train_task, recipe=self.recipe, seed=seed,
                           progress=progress, on_epoch=on_epoch)  # fmt: skip

    def judges(self, ds: T2IDataset, cache: Any) -> Any:
        """The detector and colour classifier of this benchmark's data (cached)."""
        from obliviate.diffusion.judges import load_judges

        return load_judges(ds, cache=cache, identity=self.data_identity(), epochs=self.judge_epochs)


BENCHMARKS.register("t2i-fmnist")(
    DiffusionBenchmark(
        "t2i-fmnist",
        # Measured on the original (benchmarks/diffusion_throughput.py, 2026-12-07): the
        # detector recognises 0.59 of its DDIM generations (20 steps, guidance 3; fewer with
        # more steps: 50 -> 0.42, 100 -> 0.33) and 0.918 of its ancestral ones (eta 1, 20
        # steps, guidance 3)
        sample_eta=1.0,
        description="text-to-image on tinted 16x16 Fashion-MNIST with synonyms; erase 'sandal'",
    )
)
BENCHMARKS.register("t2i-tiny")(
    DiffusionBenchmark(
        "t2i-tiny",
        source="digits",
        size=8,
        colours=("white", "red"),
        n_train=600,
        n_test=200,
        block_out_channels=(16, 32),
        attention_levels=(1,),
        text_dim=32,
        T=200,
        # Measured with the concept-rate audit (one thread, 2026-12-07): 4 epochs of batch 64
        # (40 steps) left pure noise (concept rate 0, class accuracy of its own generations
        # 0.09, chance); 100 epochs of 64 at this lr with OneCycle 0.05 / 0.21, constant lr
        # 0.35 / 0.54; 60 epochs of batch 32 0.25 / 0.57; 100 epochs of 32 (1,900 steps,
        # 76 s) 0.60 / 0.80: a model that draws its concept, so erasing it can be measured.
        recipe=TrainRecipe(
            optimizer="adamw",
            lr=3e-3,
            weight_decay=0.0,
            epochs=100,
            batch_size=32,
            schedule="constant",
        ),
        judge_epochs=15,
        forget="concept:three",
        description="8x8 sklearn digits as captioned images, tiny T2I model: the tests' fixture",
    )
)
