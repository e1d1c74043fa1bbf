"""Causal language models: the ``"lm"`` Task, tokenizers, models and the LM worlds.

The only package that imports transformers, peft, tokenizers, faker, gensim and countryinfo
(the ``obliviate[lm]`` extra). The core reaches it lazily (``obliviate/bench/lm.py`` imports it
inside functions), so ``import obliviate`` never pays for transformers.

- ``lm.task``: :class:`~obliviate.lm.task.LMTask` (batches, per-example summed NLL, KL, greedy
  generation with a KV cache) and the training loop of LM originals and oracles.
- ``lm.data``: :class:`~obliviate.lm.data.TokenData`, the fictitious-people world (lm-world),
  the countryinfo facts (lm-capitals) and the Wikipedia articles (lm-wiki).
- ``lm.models``: tiny Llamas from a config, SmolLM2-135M-Instruct (offline, converted once and
  cached), any Hugging Face causal LM by name or path, and ``apply_lora``.
- ``lm.tokenizer``: the byte-level BPE trained here on the bundled Wikipedia sample (cached).
"""
