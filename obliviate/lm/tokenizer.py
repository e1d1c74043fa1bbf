"""The byte-level BPE of the LMs trained here, and where LM assets are cached.

Tiny Llamas need a small vocabulary (the vocabulary projection dominates their cost on a CPU:
RESOURCES.md measured 5.5k tokens/s at 2k tokens against 1.4k at 50k). We train a byte-level
BPE (GPT-2 style pre-tokenisation, so every string is encodable) with ``tokenizers`` on the
Wikipedia sample that ships with gensim. Training is deterministic for a given corpus and
vocabulary size, and the result is cached as ``tokenizer.json`` under :func:`lm_cache_dir`, so
it takes ~3 s once and ~10 ms after.

Special tokens: ``<|pad|>`` (id 0) pads, ``<|endoftext|>`` (id 1) is both the BOS prepended to
every sequence and the EOS appended to every target. Padding has its own id on purpose: a pad
equal to EOS makes ``input_ids != pad`` masks drop real EOS tokens (OpenUnlearning issue 128);
the LM Task builds masks from lengths, never from ids.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from obliviate.store import atomic_write, cache_key

log = logging.getLogger(__name__)

__all__ = ["PAD", "EOS", "lm_cache_dir", "train_bpe", "wrap_tokenizer"]

PAD = "<|pad|>"
EOS = "<|endoftext|>"


def lm_cache_dir() -> Path:
    """Where derived LM assets live (tokenizers, the converted SmolLM2, filtered fact lists).

    ``$OBLIVIATE_LM_CACHE`` if set, else ``$OBLIVIATE_CACHE/lm`` if set, else
    ``~/.cache/obliviate/lm``. These assets depend on no run seed, so every project shares them
    (the converted SmolLM2 alone is 540 MB); trained originals and oracles stay in the run's
    model cache (``store.ModelCache``).
    """
    if os.environ.get("OBLIVIATE_LM_CACHE"):
        return Path(os.environ["OBLIVIATE_LM_CACHE"])
    if os.environ.get("OBLIVIATE_CACHE"):
        return Path(os.environ["OBLIVIATE_CACHE"]) / "lm"
    return Path.home() / ".cache" / "obliviate" / "lm"


def wrap_tokenizer(tok: Any) -> Any:
    """A ``tokenizers.Tokenizer`` as a transformers fast tokenizer with our special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, padding_side="right"
    )


def train_bpe(
    *,
    vocab_size: int = 2048,
    max_chars_per_article: int | None = None,
    cache_dir: Path | None = None,
) -> Any:
    """The byte-level BPE trained on gensim's Wikipedia sample, cached; a transformers tokenizer.

    ``max_chars_per_article`` trains on the first characters of each article only (None: all
    5.9 M characters, ~3 s for a 4k vocabulary).
    """
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from obliviate.lm.data import wiki_articles

    if not 256 + 2 <= vocab_size <= 65536:
        raise ValueError(
            f"vocab_size={vocab_size}: a byte-level BPE needs at least 258 tokens (256 bytes and "
            f"2 special tokens) and this tokenizer is meant to stay small (<= 65536)"
        )
    request = {
        "corpus": "gensim-enwiki-sample",
        "vocab_size": vocab_size,
        "max_chars_per_article": max_chars_per_article,
        "tokenizers": tokenizers.__version__,
    }
    root = Path(cache_dir) if cache_dir is not None else lm_cache_dir()
    path = root / "tokenizers" / f"bpe-{cache_key(request)}.json"
    if path.exists():
        return wrap_tokenizer(Tokenizer.from_file(str(path)))

    texts = [text[:max_chars_per_article] for _, text in wiki_articles()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],  # ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    with atomic_write(path, "w") as f:
        f.write(tok.to_str())
    with atomic_write(path.with_suffix(".meta.json"), "w") as f:
        json.dump(request, f, indent=2, sort_keys=True)
    log.info("trained a %d-token byte-level BPE on the Wikipedia sample: %s", vocab_size, path)
    return wrap_tokenizer(tok)
