"""The ``overparam`` benchmark family: the three experiments of Block, Mokhtari, Shakkottai,
"Machine Unlearning under Overparameterization" (NeurIPS 2025, arXiv:2505.22601), at CPU scale.

``overparam-poison`` (Data Poisoning, as published; code jacob-block/overparameterized-unlearning
``experiments/sin``). A new Task kind, ``"regression"``: 50 retain points x ~ U[-5pi, 5pi] with
y = sin x and 5 poisoned points with y = 1.5, all drawn from one seeded generator, then the model
from the same generator (the code's draw order); a 3-layer SiLU MLP of width 300 trained full
batch with AdamW (lr 1e-3, weight decay 0.01) for 100k steps on the 55 points. Metric: the sup
norm ``max_x |f(x) - sin x|`` on 1,000 evenly spaced points, median over 10 trials (trial = data
seed). ``overparam-poison-fast`` stops the same recipe at 20k steps (methods.md's CPU plan: "cut
to 20k-50k steps if needed"): on this CPU one trial of 100k steps costs about 4 minutes of one
core. At 20k steps the MLP fits D_r to MSE 0.02 and is pulled toward the poisoned labels (trial
1: MSE 0.54 on the poisoned points, against 1.0 at 10k steps and 0.34 at 40k) without yet
interpolating them.

``overparam-erase`` (Multi-Class Label Erasure analogue). Tinted Fashion-MNIST (a 10k-image
stratified subset, 3x28x28): D_r = gray copies of every image; D_f = red copies of 1% of the
images and green copies of another 1%. The paper's two heads (content, colour) become one head
over the 30 joint labels content + 10 * colour (gray 0, red 1, green 2), whose softmax factorises
the same information; "both heads correct" is joint accuracy and P(gray) is the softmax mass on
the 10 gray labels. The retrain oracle never sees a colour, so it predicts gray everywhere.
Metrics: accuracy on gray test images, and mean (P(gray) - 1)^2 over gray, red and green copies
of the test images. ``splits.test`` is the gray test set; ``splits.extra["forget_test"]`` holds
the coloured test copies with their joint labels.

``overparam-collapse`` (Representation Collapse analogue). Every training image is tinted with
its class's colour (the code's 10-colour palette), D_r; D_f adds 1% of the images of every class
tinted with a random other colour, labels kept. As in the code the off-colour examples are
up-weighted so that D_f and D_r carry equal loss (we repeat each D_f example n_r / n_f times in
the original's training data: the same expected gradient as the code's per-example weights).
The oracle, trained on D_r only, is a colour classifier. Metric: colour accuracy, i.e. accuracy
on test images tinted with every colour and labelled by their colour (``splits.test``);
``splits.extra["content_test"]`` is the same images labelled by content.

Scale-down (tinted benchmarks): 10k training images instead of CIFAR-10's 50k, the 34k-parameter
stride CNN instead of ResNet-18, 10 epochs of the project's SGD/OneCycle recipe instead of 100
(erase) or 20 gray warm-start + 50 epochs (collapse; we drop the gray warm start and rely on the
up-weighting alone to make the original a content classifier). Unlearning keeps the paper's
protocol: 1% retain access, batch 256, 2 epochs over D_f for erase, 5-15 for collapse.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.loop import TrainRecipe, preserve_mode, seeded, train_model
from obliviate.registry import BENCHMARKS
from obliviate.types import Budget, Splits
from obliviate.vision.data import TensorData, load_dataset
from obliviate.vision.models import StrideCNN
from obliviate.vision.task import ClassifierTask

log = logging.getLogger(__name__)

__all__ = [
    "COLLAPSE_PALETTE",
    "CollapseBenchmark",
    "EraseBenchmark",
    "PoisonBenchmark",
    "RegressionDataset",
    "RegressionTask",
    "SinMLP",
    "gray_error",
]


# -- the regression Task ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RegressionTask:
    """A real-valued regression model seen by methods and audits.

    Batches are dicts ``{"x": (B, D_in), "y": (B, D_out), "idx": (B,)}`` (TensorData rows).
    ``loss`` is the per-example squared error summed over output dimensions, (B,); its batch
    mean is torch's ``MSELoss`` for one output. ``divergence(student, teacher)`` is
    ``0.5 * ||f_s - f_t||^2``: KL(N(f_t, I) || N(f_s, I)), the Gaussian reading of the outputs.
    """

    kind: str = "regression"
    eval_batch_size: int = 4096

    def batches(
        self, data: TensorData, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        n = len(data)
        if shuffle:
            g = torch.Generator().manual_seed(0 if seed is None else int(seed))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for s in range(0, n, batch_size):
            b = order[s : s + batch_size]
            yield {"x": data.x[b], "y": data.y[b], "idx": data.idx[b]}

    def outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"]).reshape(len(batch["x"]), -1)  # (B, D_out)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example squared error, (B,)."""
        err = self.outputs(model, batch) - batch["y"].reshape(len(batch["y"]), -1)
        return err.square().sum(1)

    def divergence(
        self, student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        with torch.no_grad():
            t = self.outputs(teacher, batch)
        return 0.5 * (self.outputs(student, batch) - t).square().sum(1)

    @torch.no_grad()
    def predict(self, model: nn.Module, data: TensorData) -> np.ndarray:
        """Outputs (N, D_out) as float64 numpy, in eval mode; the model's mode is restored."""
        with preserve_mode(model):
            model.eval()
            out = [
                self.outputs(model, b).double() for b in self.batches(data, self.eval_batch_size)
            ]
        return torch.cat(out).numpy() if out else np.zeros((0, 1))

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        """{"sup_error": max |f - y|, "mse": mean squared error, "loss": same as mse}."""
        if len(data) == 0:
            return {"sup_error": float("nan"), "mse": float("nan"), "loss": float("nan")}
        # float32 as in the code's metric (the model's own precision)
        pred = torch.from_numpy(self.predict(model, data)).float()
        err = pred - data.y.reshape(len(data), -1).float()
        mse = err.square().sum(1).mean().item()
        return {"sup_error": err.abs().max().item(), "mse": mse, "loss": mse}


# -- Data Poisoning ------------------------------------------------------------------------------
class SinMLP(nn.Module):
    """The code's ``ShallowNet``: Linear(1, w) - SiLU - Linear(w, w) - SiLU - Linear(w, 1)."""

    def __init__(self, width: int = 300) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, width)
        self.fc2 = nn.Linear(width, width)
        self.fc_out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.silu(self.fc2(F.silu(self.fc1(x)))))


@dataclass(frozen=True)
class RegressionDataset:
    """Training points (retain first, then the poisoned ones), a dense test grid, the split."""

    name: str
    train: TensorData  # x (N, 1), y (N, 1)
    test: TensorData  # the clean target on a grid
    n_retain: int
    source: str = "generated"


@dataclass(frozen=True)
class PoisonBenchmark:
    """Data Poisoning (sin regression with 5 poisoned labels), as in the paper's code."""

    name: str  # registry key
    data_seed: int = 1  # the trial: seeds the data draw (the code's trials are seeds 1..10)
    n_retain: int = 50  # clean points, y = sin x
    n_forget: int = 5  # poisoned points, y = poison
    poison: float = 1.5  # the poisoned label
    x_max: float = 15.708  # x ~ U[-x_max, x_max]; 5 pi rounded as in the code's script
    width: int = 300  # hidden width of the 3-layer SiLU MLP
    lr: float = 1e-3  # AdamW learning rate of the original's (and oracle's) training
    weight_decay: float = 0.01  # AdamW weight decay (torch's default, as in the code)
    train_steps: int = 100_000  # full-batch steps (the code's epochs_initial)
    schedule: Literal["constant", "cosine"] = "constant"  # lr over training
    n_test: int = 1000  # evenly spaced test points on [-x_max, x_max]
    forget: str = "poison"  # the only deletion request: the poisoned points
    audits: tuple[str, ...] = ()  # no registered audit reads regression tasks yet
    max_steps: int | None = None  # unlearning budget in optimizer steps (None: method's plan)
    description: str = ""  # one line for `obliviate list`
    kind: str = "regression"  # the Task kind

    def load(self, data_dir: str | None = None) -> RegressionDataset:
        return _poison_data(
            self.data_seed, self.n_retain, self.n_forget, self.poison, self.x_max, self.n_test
        )

    def task(self, ds: RegressionDataset) -> RegressionTask:
        return RegressionTask()

    def make_model(self, ds: RegressionDataset) -> nn.Module:
        return SinMLP(self.width)

    def trial(self) -> tuple[RegressionDataset, nn.Module]:
        """The code's draw order: seed, 50 + 5 inputs, then the model, from one generator.

        Use this to reproduce the paper's protocol; the runner initialises models from its own
        derived seeds instead. The global RNG state is restored afterwards.
        """
        with seeded(self.data_seed):
            torch.rand(self.n_retain + self.n_forget, 1)  # the draws load() repeats
            model = self.make_model(self.load())
        return self.load(), model

    def splits(self, ds: RegressionDataset, forget: str, seed: int) -> Splits:
        self.resolve_forget(ds, forget)
        n = len(ds.train)
        forget_idx = np.arange(ds.n_retain, n)
        retain_idx = np.arange(ds.n_retain)
        return Splits(
            forget=ds.train.subset(forget_idx),
            retain=ds.train.subset(retain_idx),
            test=ds.test,
            forget_idx=forget_idx,
            retain_idx=retain_idx,
            info={
                "rule": "poison",
                "kind": "poison",
                "class": None,
                "n_forget": int(n - ds.n_retain),
                "n_retain": int(ds.n_retain),
            },
        )

    def resolve_forget(self, ds: RegressionDataset, forget: str | None) -> str:
        rule = forget or self.forget
        if rule != "poison":
            raise ValueError(
                f"{self.name} has one deletion request, 'poison' (the poisoned points), "
                f"not {rule!r}"
            )
        return rule

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("name", "forget", "audits", "max_steps", "description", "kind"):
            d.pop(k)
        return {"family": "overparam-poison", **d}

    def all_train_indices(self, ds: RegressionDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: RegressionDataset, idx: np.ndarray) -> TensorData:
        return ds.train.subset(idx)

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        *,
        task: RegressionTask,
        seed: int,
        progress: bool | str = False,
    ) -> dict[str, float]:
        """Full-batch AdamW on MSE (deterministic: ``seed`` is unused, no data order)."""
        return train_full_batch(
            model, data, task=task, steps=self.train_steps, lr=self.lr,
            weight_decay=self.weight_decay, schedule=self.schedule, progress=progress,
        )  # fmt: skip


@functools.lru_cache(maxsize=32)
def _poison_data(
    seed: int, n_retain: int, n_forget: int, poison: float, x_max: float, n_test: int
) -> RegressionDataset:
    g = torch.Generator().manual_seed(seed)
    # the code draws retain then forget inputs from torch's generator seeded with the trial seed
    xr = torch.rand(n_retain, 1, generator=g) * (2 * x_max) - x_max
    xf = torch.rand(n_forget, 1, generator=g) * (2 * x_max) - x_max
    x = torch.cat([xr, xf])
    y = torch.cat([torch.sin(xr), torch.full_like(xf, poison)])
    xt = torch.linspace(-x_max, x_max, n_test).unsqueeze(1)
    return RegressionDataset(
        f"sin-poison-{seed}", TensorData.of(x, y), TensorData.of(xt, torch.sin(xt)), n_retain
    )


def train_full_batch(
    model: nn.Module,
    data: TensorData,
    *,
    task: RegressionTask,
    steps: int,
    lr: float,
    weight_decay: float,
    schedule: Literal["constant", "cosine"] = "constant",
    progress: bool | str = False,
) -> dict[str, float]:
    """AdamW on the mean per-example loss of all of ``data`` at once, ``steps`` times."""
    import time

    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    batch = {"x": data.x, "y": data.y, "idx": data.idx}
    desc = progress if isinstance(progress, str) else "train"
    t0 = time.perf_counter()
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=2):
        loss = task.loss(model, batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"training loss became {loss.item()}: lower lr (now {lr})")
    return {"seconds": time.perf_counter() - t0, "steps": steps, "final_loss": loss.item()}


BENCHMARKS.register("overparam-poison")(
    PoisonBenchmark(
        "overparam-poison",
        description="sin regression, forget 5 poisoned points (Block et al. 2025), 100k-step MLP",
    )
)
BENCHMARKS.register("overparam-poison-fast")(
    PoisonBenchmark(
        "overparam-poison-fast",
        train_steps=20_000,
        description="overparam-poison with the published recipe stopped at 20k of its 100k steps",
    )
)


# -- tinted Fashion-MNIST ------------------------------------------------------------------------
# The code's ColorTransform10 palette (RGB in 0..255); index = colour class.
COLLAPSE_PALETTE = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
    (0, 255, 255), (255, 128, 0), (128, 0, 255), (128, 128, 128), (0, 128, 128),
)  # fmt: skip
ERASE_COLOURS = ("gray", "red", "green")  # the code's colour classes 0, 1, 2
_ERASE_RGB = {"gray": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0)}
_FMNIST_MEAN, _FMNIST_STD = 0.2860, 0.3530  # undo vision/data.py's normalisation


def _tint(gray01: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) intensities in [0, 1] and (N, 3) colours in [0, 1] -> (N, 3, H, W),
    normalised with mean 0.5 and std 0.5 per channel as the code's transforms."""
    img = gray01 * rgb[:, :, None, None]  # (N, 3, H, W)
    return ((img - 0.5) / 0.5).contiguous()


@functools.lru_cache(maxsize=2)
def _fmnist_subset(
    data_dir: str | None, n_train: int, n_test: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...], str]:
    """Stratified subsets of Fashion-MNIST as [0, 1] intensities: (x_tr, y_tr, x_te, y_te)."""
    ds = load_dataset("fashion-mnist", data_dir)
    rng = np.random.default_rng(seed)

    def pick(y: np.ndarray, n: int) -> np.ndarray:
        per = n // 10
        idx = [rng.permutation(np.flatnonzero(y == c))[:per] for c in range(10)]
        return np.sort(np.concatenate(idx))

    tr = pick(ds.train.y.numpy(), n_train)
    te = pick(ds.test.y.numpy(), n_test)
    un = lambda x: (x * _FMNIST_STD + _FMNIST_MEAN).clamp(0, 1)  # noqa: E731
    return (
        un(ds.train.x[tr]), ds.train.y[tr], un(ds.test.x[te]), ds.test.y[te], ds.classes, ds.source
    )  # fmt: skip


@dataclass(frozen=True)
class TintedDataset:
    """Tinted images: ``train`` is D_r (first ``n_retain`` rows) then D_f; ``extra`` holds the
    benchmark's additional test sets (they become ``splits.extra``). ``origin`` and ``tint``
    record, per training row, the Fashion-MNIST image (index into the stratified subset) and the
    colour class it was tinted with."""

    name: str
    train: TensorData
    test: TensorData
    classes: tuple[str, ...]
    source: str
    n_retain: int
    origin: torch.Tensor  # (N,) int64
    tint: torch.Tensor  # (N,) int64: erase 0 gray / 1 red / 2 green; collapse palette index
    extra: dict[str, TensorData] = field(default_factory=dict)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _TintedBase:
    """What the two tinted benchmarks share: subset sizes, model, recipe, protocol plumbing."""

    name: str  # registry key
    n_train: int = 10_000  # Fashion-MNIST training images used (stratified)
    n_test: int = 1_000  # test images (each copied in every colour of the metric)
    pct_forget: float = 0.01  # fraction of images tinted off-rule into D_f
    data_seed: int = 1  # the subsets and the D_f draw
    width: int = 16  # StrideCNN width (34k parameters at 16)
    recipe: TrainRecipe = TrainRecipe(lr=0.05, epochs=10, batch_size=128)  # original and oracle
    forget: str = "tinted"  # the only deletion request: the off-rule tinted images
    audits: tuple[str, ...] = ("accuracy",)  # audits run by default
    max_steps: int | None = None  # unlearning budget in optimizer steps (None: method's plan)
    description: str = ""  # one line for `obliviate list`
    kind: str = "vision"  # the Task kind

    def task(self, ds: TintedDataset) -> ClassifierTask:
        return ClassifierTask(num_classes=ds.num_classes)

    def make_model(self, ds: TintedDataset) -> nn.Module:
        return StrideCNN(in_shape=ds.in_shape, num_classes=ds.num_classes, width=self.width)

    def resolve_forget(self, ds: TintedDataset, forget: str | None) -> str:
        rule = forget or self.forget
        if rule != "tinted":
            raise ValueError(
                f"{self.name} has one deletion request, 'tinted' (the off-rule tinted images), "
                f"not {rule!r}"
            )
        return rule

    def budget(self, max_steps: int | None = None) -> Budget:
        return Budget(max_steps=max_steps if max_steps is not None else self.max_steps)

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("name", "forget", "audits", "max_steps", "description", "kind"):
            d.pop(k)
        return {"family": type(self).__name__, **d}

    def all_train_indices(self, ds: TintedDataset) -> np.ndarray:
        return np.arange(len(ds.train))

    def train_data(self, ds: TintedDataset, idx: np.ndarray) -> TensorData:
        return ds.train.subset(idx)

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        *,
        task: ClassifierTask,
        seed: int,
        progress: bool | str = False,
    ) -> dict[str, float]:
        return train_model(model, data, task=task, recipe=self.recipe, seed=seed, progress=progress)

    def splits(self, ds: TintedDataset, forget: str, seed: int) -> Splits:
        """Fixed by the data (``data_seed``), not by the run seed: D_f is the off-rule copies."""
        self.resolve_forget(ds, forget)
        n, n_retain = len(ds.train), ds.n_retain
        forget_idx, retain_idx = np.arange(n_retain, n), np.arange(n_retain)
        return Splits(
            forget=ds.train.subset(forget_idx),
            retain=ds.train.subset(retain_idx),
            test=ds.test,
            forget_idx=forget_idx,
            retain_idx=retain_idx,
            extra=dict(ds.extra),
            info={
                "rule": "tinted",
                "kind": "tinted",
                "class": None,
                "n_forget": int(n - n_retain),
                "n_retain": int(n_retain),
            },
        )


@dataclass(frozen=True)
class EraseBenchmark(_TintedBase):
    """Label erasure: D_r gray, D_f red and green copies of pct_forget of the images each."""

    def load(self, data_dir: str | None = None) -> TintedDataset:
        return _erase_data(
            str(data_dir) if data_dir else None, self.n_train, self.n_test, self.pct_forget,
            self.data_seed,
        )  # fmt: skip


def _colour_rows(colour: str, n: int) -> torch.Tensor:
    return torch.tensor(_ERASE_RGB[colour], dtype=torch.float32).div(255).expand(n, 3)


@functools.lru_cache(maxsize=2)
def _erase_data(
    data_dir: str | None, n_train: int, n_test: int, pct: float, seed: int
) -> TintedDataset:
    xtr, ytr, xte, yte, classes, source = _fmnist_subset(data_dir, n_train, n_test, seed)
    rng = np.random.default_rng([seed, 1])
    k = int(pct * n_train)
    # independent subsets per colour, as the code's get_random_subset on red and on green
    red, green = rng.choice(n_train, k, replace=False), rng.choice(n_train, k, replace=False)
    xs = [_tint(xtr, _colour_rows("gray", n_train)), _tint(xtr[red], _colour_rows("red", k))]
    xs.append(_tint(xtr[green], _colour_rows("green", k)))
    y = torch.cat([ytr, ytr[red] + 10, ytr[green] + 20])  # joint label content + 10 * colour
    train = TensorData.of(torch.cat(xs), y)
    test = TensorData.of(_tint(xte, _colour_rows("gray", len(yte))), yte.clone())
    joint = tuple(classes) + tuple(f"{c} {n}" for c in ERASE_COLOURS[1:] for n in classes)
    # red and green copies of the test images, with their joint labels
    coloured = TensorData.of(
        torch.cat([_tint(xte, _colour_rows(c, len(yte))) for c in ERASE_COLOURS[1:]]),
        torch.cat([yte + 10, yte + 20]),
    )
    origin = torch.from_numpy(np.concatenate([np.arange(n_train), red, green]))
    tint = torch.cat([torch.zeros(n_train), torch.ones(k), torch.full((k,), 2)]).long()
    return TintedDataset(
        f"fashion-mnist-erase-{n_train}", train, test, joint, source, n_train, origin, tint,
        {"forget_test": coloured, "retain_test": test},
    )  # fmt: skip


def gray_error(logits: np.ndarray) -> np.ndarray:
    """(P(gray) - 1)^2 per example from (N, 30) joint logits; P(gray) = softmax mass on 0..9."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    return (p[:, :10].sum(1) - 1.0) ** 2


@dataclass(frozen=True)
class CollapseBenchmark(_TintedBase):
    """Representation collapse: D_r tinted by class colour, D_f tinted by another colour."""

    def load(self, data_dir: str | None = None) -> TintedDataset:
        return _collapse_data(
            str(data_dir) if data_dir else None, self.n_train, self.n_test, self.pct_forget,
            self.data_seed,
        )  # fmt: skip

    def train_data(self, ds: TintedDataset, idx: np.ndarray) -> TensorData:
        """Off-colour examples repeated so that D_f and D_r carry equal loss (the code's
        weights pct/(1+pct) and 1/(1+pct), as repetitions)."""
        idx = np.asarray(idx)
        is_f = idx >= ds.n_retain
        n_f, n_r = int(is_f.sum()), int((~is_f).sum())
        if n_f == 0 or n_r == 0:
            return ds.train.subset(idx)
        reps = max(1, round(n_r / n_f))
        return ds.train.subset(np.concatenate([idx[~is_f], np.repeat(idx[is_f], reps)]))


@functools.lru_cache(maxsize=2)
def _collapse_data(
    data_dir: str | None, n_train: int, n_test: int, pct: float, seed: int
) -> TintedDataset:
    xtr, ytr, xte, yte, classes, source = _fmnist_subset(data_dir, n_train, n_test, seed)
    palette = torch.tensor(COLLAPSE_PALETTE, dtype=torch.float32) / 255  # (10, 3)
    rng = np.random.default_rng([seed, 2])
    # D_f: pct of every class, each tinted with a random colour other than its class's
    per = int(pct * (n_train // 10))
    f_idx = np.concatenate(
        [rng.choice(np.flatnonzero(ytr.numpy() == c), per, replace=False) for c in range(10)]
    )
    f_col = np.array([rng.choice([j for j in range(10) if j != ytr[i].item()]) for i in f_idx])
    x = torch.cat([_tint(xtr, palette[ytr]), _tint(xtr[f_idx], palette[f_col])])
    train = TensorData.of(x, torch.cat([ytr, ytr[f_idx]]))
    # test: every test image in every colour (N * 10), labelled by colour ...
    n_te = len(yte)
    colour = torch.arange(10).repeat_interleave(n_te)  # (10 N,)
    x_test = _tint(xte.repeat(10, 1, 1, 1), palette[colour])
    test = TensorData.of(x_test, colour)
    # ... and the same images labelled by content
    content = TensorData.of(x_test, yte.repeat(10))
    origin = torch.from_numpy(np.concatenate([np.arange(n_train), f_idx]))
    tint = torch.cat([ytr, torch.from_numpy(f_col)]).long()
    return TintedDataset(
        f"fashion-mnist-collapse-{n_train}", train, test, tuple(classes), source, n_train,
        origin, tint, {"content_test": content},
    )  # fmt: skip


BENCHMARKS.register("overparam-erase")(
    EraseBenchmark(
        "overparam-erase",
        description="tinted Fashion-MNIST label erasure: forget red/green copies (D_r gray)",
    )
)
BENCHMARKS.register("overparam-collapse")(
    CollapseBenchmark(
        "overparam-collapse",
        description="tinted Fashion-MNIST representation collapse: forget off-colour copies",
    )
)
