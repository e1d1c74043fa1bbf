"""Captioned images for the text-to-image substrate: real Fashion-MNIST (or sklearn digits)
tinted in a few colours and captioned from templates, with synonyms for every concept.

Every class has several words ("sandal", "flip-flop", "slipper"): the first is the *explicit*
name a deletion request targets, the others are *implicit* routes to the same concept (the
setting of "prompt-based safety guidance is ineffective", methods.md section 5). Colours have
synonyms too ("red", "crimson", "scarlet"), so a colour is a concept of its own. Captions come
from a handful of templates ("a photo of a red sandal", "a sandal", ...) and are tokenised with
a small word-level vocabulary; the empty prompt is all padding (the unconditional branch of
classifier-free guidance), as Stable Diffusion pads with end tokens and attends to all of them.

Deletion requests: ``concept:<word>`` where the word is any name or synonym of a class or a
colour; the forget set is every training image of that class (or colour).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "Concept",
    "T2IData",
    "T2IDataset",
    "Vocabulary",
    "build_dataset",
    "caption_tokens",
]

# Colour name -> (synonyms, RGB multiplier). "white" is the untinted grey-level image.
COLOURS: dict[str, tuple[tuple[str, ...], tuple[float, float, float]]] = {
    "white": (("white", "plain", "colourless"), (1.0, 1.0, 1.0)),
    "red": (("red", "crimson", "scarlet"), (1.0, 0.15, 0.15)),
    "green": (("green", "emerald", "lime"), (0.15, 1.0, 0.15)),
    "blue": (("blue", "azure", "navy"), (0.2, 0.35, 1.0)),
}

# Fashion-MNIST classes in label order: explicit name first, then the synonyms.
FASHION_WORDS: tuple[tuple[str, ...], ...] = (
    ("tshirt", "tee", "top"),
    ("trousers", "pants", "jeans"),
    ("pullover", "sweater", "jumper"),
    ("dress", "gown", "frock"),
    ("coat", "jacket", "parka"),
    ("sandal", "flip-flop", "slipper"),
    ("shirt", "blouse", "button-down"),
    ("sneaker", "trainer", "plimsoll"),
    ("bag", "handbag", "purse"),
    ("boot", "ankle-boot", "bootee"),
)
DIGIT_WORDS: tuple[tuple[str, ...], ...] = (
    ("zero", "nought"), ("one", "ace"), ("two", "pair"), ("three", "trio"),
    ("four", "quartet"), ("five", "quintet"), ("six", "sextet"), ("seven", "septet"),
    ("eight", "octet"), ("nine", "nonet"),
)  # fmt: skip

# "{c}" is a colour word (dropped with its template when the caption names no colour), "{n}" a
# class word. Every template has at most 6 words, so 8 tokens hold every caption.
TEMPLATES_COLOUR = ("a photo of a {c} {n}", "a {c} {n}", "a picture of a {c} {n}")
TEMPLATES_PLAIN = ("a photo of a {n}", "a {n}", "an image of a {n}")
FILLER = ("a", "an", "photo", "picture", "image", "of", "the")
PAD = "<pad>"


@dataclass(frozen=True)
class Vocabulary:
    """A word-level vocabulary: id 0 is padding; ``encode`` checks every word and the length."""

    words: tuple[str, ...]
    max_len: int = 8  # tokens per prompt the text encoder takes (position embeddings)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, max_len) token ids, right-padded with 0. Raises ValueError on an unknown word or
        a prompt longer than ``max_len`` words."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt in a list")
        out = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for i, p in enumerate(prompts):
            toks = p.lower().split()
            if len(toks) > self.max_len:
                raise ValueError(
                    f"prompt {p!r} has {len(toks)} words but the text encoder takes at most "
                    f"{self.max_len}; shorten it"
                )
            for j, w in enumerate(toks):
                if w not in self.index:
                    raise ValueError(
                        f"word {w!r} in prompt {p!r} is not in the vocabulary; known words: "
                        f"{', '.join(self.words[1:])}"
                    )
                out[i, j] = self.index[w]
        return out

    def decode(self, tokens: torch.Tensor) -> list[str]:
        return [" ".join(self.words[int(t)] for t in row if int(t) != 0) for row in tokens]


@dataclass(frozen=True)
class Concept:
    """A concept a request can erase: a class or a colour, with its explicit word and synonyms."""

    kind: str  # "class" | "colour"
    index: int  # class label or colour index
    words: tuple[str, ...]  # words[0] is the explicit name, the rest are synonyms

    @property
    def name(self) -> str:
        return self.words[0]

    @property
    def synonyms(self) -> tuple[str, ...]:
        return self.words[1:]


@dataclass(frozen=True)
class T2IData:
    """Images ``x0`` (N, C, H, W) in [-1, 1], caption ``tokens`` (N, L), class ``label`` (N,),
    ``colour`` index (N,) and ``idx`` (position in the source set, kept through ``subset``)."""

    x0: torch.Tensor
    tokens: torch.Tensor
    label: torch.Tensor
    colour: torch.Tensor
    idx: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.x0)
        if not all(len(t) == n for t in (self.tokens, self.label, self.colour, self.idx)):
            raise ValueError("T2IData: x0, tokens, label, colour and idx must have one length")

    def __len__(self) -> int:
        return len(self.x0)

    def subset(self, idx: np.ndarray) -> T2IData:
        t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return T2IData(self.x0[t], self.tokens[t], self.label[t], self.colour[t], self.idx[t])

    @property
    def y(self) -> torch.Tensor:
        """The class labels (the name vision code expects)."""
        return self.label


@dataclass(frozen=True)
class T2IDataset:
    """Train and test captioned images, the vocabulary, the class and colour words."""

    name: str
    train: T2IData
    test: T2IData
    vocab: Vocabulary
    class_words: tuple[tuple[str, ...], ...]
    colour_words: tuple[tuple[str, ...], ...]
    source: str
    colour_rgb: tuple[tuple[float, float, float], ...] = field(default=())

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(w[0] for w in self.class_words)

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(w[0] for w in self.colour_words)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x0.shape[1:])  # type: ignore[return-value]

    def concepts(self) -> list[Concept]:
        return [Concept("class", i, w) for i, w in enumerate(self.class_words)] + [
            Concept("colour", i, w) for i, w in enumerate(self.colour_words)
        ]

    def concept(self, word: str) -> Concept:
        """The concept named by ``word`` (any of its words). ValueError lists the known ones."""
        w = word.strip().lower()
        for c in self.concepts():
            if w in c.words:
                return c
        known = ", ".join(f"{c.name} ({'/'.join(c.synonyms)})" for c in self.concepts())
        raise ValueError(f"unknown concept {word!r}; this dataset's concepts are: {known}")

    def prompt(self, noun: str, colour: str | None = None, template: int = 0) -> str:
        """A caption from the templates, e.g. prompt("sandal", "red") -> "a photo of a red
        sandal"; checked against the vocabulary."""
        if colour is None:
            text = TEMPLATES_PLAIN[template % len(TEMPLATES_PLAIN)].format(n=noun)
        else:
            text = TEMPLATES_COLOUR[template % len(TEMPLATES_COLOUR)].format(c=colour, n=noun)
        self.vocab.encode([text])  # raises a clear error on a word missing from the vocabulary
        return text


def caption_tokens(
    labels: np.ndarray,
    colours: np.ndarray,
    vocab: Vocabulary,
    class_words: Sequence[Sequence[str]],
    colour_words: Sequence[Sequence[str]],
    *,
    seed: int,
    p_colour: float = 0.8,
) -> torch.Tensor:
    """(N, L) caption ids: a random synonym of the class, a random template, and (with
    probability ``p_colour``) a random synonym of the colour. Seeded."""
    rng = np.random.default_rng(seed)
    prompts = []
    for y, c in zip(labels.tolist(), colours.tolist(), strict=True):
        noun = class_words[y][rng.integers(len(class_words[y]))]
        if rng.random() < p_colour:
            col = colour_words[c][rng.integers(len(colour_words[c]))]
            prompts.append(TEMPLATES_COLOUR[rng.integers(3)].format(c=col, n=noun))
        else:
            prompts.append(TEMPLATES_PLAIN[rng.integers(3)].format(n=noun))
    return vocab.encode(prompts)


def make_vocab(
    class_words: Sequence[Sequence[str]], colour_words: Sequence[Sequence[str]], max_len: int = 8
) -> Vocabulary:
    words = [PAD, *FILLER]
    for group in (*class_words, *colour_words):
        words += [w for w in group if w not in words]
    return Vocabulary(tuple(words), max_len)


def _tint(gray01: torch.Tensor, colours: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] and colour ids (N,) -> (N, 3, H, W) in [-1, 1]."""
    img = gray01 * rgb[colours][:, :, None, None]
    return (img * 2 - 1).contiguous()


def build_dataset(
    *,
    source: str,
    size: int,
    colours: Sequence[str] = ("white", "red", "green", "blue"),
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> T2IDataset:
    """Load ``source`` ("fashion-mnist" or "digits"), resize to ``size`` x ``size``, tint every
    image with a colour drawn uniformly from ``colours``, caption it (all seeded by ``seed``).
    ``n_train``/``n_test`` take a stratified subset (None: everything)."""
    return _build(source, size, tuple(colours), n_train, n_test, seed, data_dir)


@functools.lru_cache(maxsize=4)
def _build(
    source: str,
    size: int,
    colours: tuple[str, ...],
    n_train: int | None,
    n_test: int | None,
    seed: int,
    data_dir: str | None,
) -> T2IDataset:
    from obliviate.vision.data import load_dataset

    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown colours {unknown}; choose from {list(COLOURS)}")
    if source == "fashion-mnist":
        ds, words = load_dataset("fashion-mnist", data_dir), FASHION_WORDS
    elif source == "digits":
        ds, words = load_dataset("digits"), DIGIT_WORDS
    else:
        raise ValueError(f"unknown image source {source!r}; use 'fashion-mnist' or 'digits'")
    colour_words = tuple(COLOURS[c][0] for c in colours)
    rgb = torch.tensor([COLOURS[c][1] for c in colours])
    vocab = make_vocab(words, colour_words)
    rng = np.random.default_rng(seed)

    def prepare(x: torch.Tensor, y: torch.Tensor, n: int | None, tag: int) -> T2IData:
        y_np = y.numpy()
        if n is not None and n < len(y_np):
            per = n // len(words)
            keep = [rng.permutation(np.flatnonzero(y_np == c))[:per] for c in range(len(words))]
            sel = np.sort(np.concatenate(keep))
        else:
            sel = np.arange(len(y_np))
        # min-max per image to [0, 1]: the vision loaders normalise with dataset statistics
        g = x[torch.as_tensor(sel)]
        lo = g.amin(dim=(1, 2, 3), keepdim=True)
        hi = g.amax(dim=(1, 2, 3), keepdim=True)
        g = (g - lo) / (hi - lo).clamp_min(1e-6)
        if g.shape[-1] != size:
            g = F.interpolate(
                g, size=(size, size), mode="area" if g.shape[-1] > size else "bilinear"
            )
        col = rng.integers(0, len(colours), len(sel))
        toks = caption_tokens(
            y_np[sel], col, vocab, words, colour_words, seed=int(rng.integers(2**31)) + tag
        )
        return T2IData(
            _tint(g, torch.from_numpy(col), rgb), toks, y[torch.as_tensor(sel)].clone(),
            torch.from_numpy(col).long(), torch.arange(len(sel)),
        )  # fmt: skip

    train = prepare(ds.train.x, ds.train.y, n_train, 0)
    test = prepare(ds.test.x, ds.test.y, n_test, 1)
    name = f"t2i-{source}-{size}px"
    log.info("%s: %d train, %d test images, %d words", name, len(train), len(test), len(vocab))
    return T2IDataset(
        name, train, test, vocab, words, colour_words, ds.source,
        tuple(tuple(COLOURS[c][1]) for c in colours),
    )  # fmt: skip
