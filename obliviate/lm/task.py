"""The causal-LM Task (``kind = "lm"``): how methods and audits see a language model.

API (every method and audit of the LM track goes through this):

- **Data** is :class:`~obliviate.lm.data.TokenData`: raw ``prompts`` (questions; "" for plain
  text) and ``targets`` (answers; passages), their token ids, ``idx`` and per-example ``meta``.
  ``LMTask.encode(prompts, targets, meta=...)`` builds one from texts (e.g. the paraphrased or
  perturbed answers of the truth ratio); ``data.subset(idx)`` selects rows.
- **Encoding.** A QA prompt is ``prompt_template.format(question=...)`` (default
  ``"Question: {question}\\nAnswer:"``) and the target is ``answer_prefix + answer`` (a space)
  followed by EOS; with ``chat=True`` the prompt goes through the tokenizer's chat template
  instead (ValueError when it has none). Prompt and target are tokenised *separately* and
  concatenated, so no answer token is merged into the prompt and lost from the labels
  (OpenUnlearning issue 195). A BOS starts every sequence (when the tokenizer has one and the
  chat template does not already supply a start token); column 0 is never a target.
- **Batches** (``batches(data, batch_size, shuffle=, seed=)``) are dicts of tensors:
  ``input_ids`` (B, T) right-padded, ``attention_mask`` (B, T) built from lengths (never from
  ``input_ids != pad``: OpenUnlearning issue 128), ``labels`` (B, T) with -100 on BOS, prompt
  and padding, ``n_tokens`` (B,) target tokens per example, ``idx`` (B,).
- ``token_nll(model, batch)`` -> (B, T): the NLL of each target token at its label position,
  0 elsewhere. ``loss(model, batch)`` -> (B,): the per-example **sum** over target tokens
  (divide by ``batch["n_tokens"]`` for the per-token mean; the batch token mean of HF's
  ``outputs.loss`` is ``loss.sum() / n_tokens.sum()``). The vocabulary projection is applied
  only at target positions (it dominates the cost: 49k x 576 for SmolLM2).
- ``target_logits(model, batch)`` -> (logits (n, V), rows (n,), labels (n,)): the next-token
  logits at every target position, flattened in row-major order (min-k++ needs them).
- ``divergence(student, teacher, batch)`` -> (B,): KL(teacher || student) summed over target
  tokens, no gradient into the teacher.
- ``sequence_nll(model, data)`` -> (nll_sum (N,), n_tokens (N,)) numpy float64, and
  ``token_nlls(model, data)`` -> list of per-example numpy arrays of target-token NLLs, both in
  eval mode without gradients (for membership attacks).
- ``evaluate(model, data)`` -> {"loss" (token-mean NLL), "ppl" (exp of it), "answer_prob"
  (mean over examples of exp(-mean token NLL), TOFU's "probability"), "nll_sum", "n_tokens"}.
- ``generate(model, prompts, max_new_tokens=...)`` -> list[str]: batched greedy decoding with a
  KV cache, prompts left-padded, formatted like ``encode``; stops at EOS. ``raw=True`` continues
  plain text (BOS + the prompt's tokens, no template).
- ``train_lm(model, data, task=, recipe=, seed=)``: the loop of LM originals and oracles
  (AdamW, warm-up + cosine, batch token-mean NLL, gradient clipping).

Models: any ``transformers`` causal LM (``LlamaForCausalLM``, a peft ``PeftModel``), or any
module whose ``forward(input_ids=, attention_mask=)`` returns ``.logits``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.lm.data import TokenData
from obliviate.loop import (
    TrainRecipe,
    derive_seed,
    epoch_batches,
    make_optimizer,
    preserve_mode,
    seeded,
)

log = logging.getLogger(__name__)

__all__ = ["LMTask", "train_lm"]

Batch = dict[str, torch.Tensor]


def _trunk_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(decoder returning hidden states, vocabulary projection) when the model is a plain
    transformers causal LM (or a peft wrapper of one); None to fall back to ``.logits``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_dec = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    config = getattr(base, "config", None)
    if get_dec is None or get_head is None or config is None:
        return None
    # logit soft-capping / scaling happen after the head in some architectures: use .logits
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    trunk, head = get_dec(), get_head()
    if trunk is None or head is None or trunk is base:
        return None
    return trunk, head


@dataclass(frozen=True, eq=False)
class LMTask:
    """See the module docstring. ``tokenizer`` is a transformers tokenizer."""

    tokenizer: Any
    kind: str = "lm"
    prompt_template: str = "Question: {question}\nAnswer:"  # wraps a non-empty prompt
    answer_prefix: str = " "  # put before a target that follows a prompt (not in chat mode)
    chat: bool = False  # format prompts with the tokenizer's chat template instead
    max_length: int = 256  # tokens per sequence; longer targets are truncated at the end
    eval_batch_size: int = 32  # sequences per inference batch
    add_bos: bool = True  # start every sequence with the tokenizer's BOS token (if it has one)

    # -- encoding -------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return int(pid if pid is not None else self.tokenizer.eos_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees before a target (no BOS); "" stays ""."""
        if not prompt:
            return ""
        if self.chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError(
                    "LMTask(chat=True) needs a tokenizer with a chat template, and this one has "
                    "none (tiny tokenizers trained here have none). Use chat=False, which wraps "
                    f"prompts in prompt_template={self.prompt_template!r}."
                )
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        return self.prompt_template.format(question=prompt)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _prompt_ids(self, prompt: str) -> list[int]:
        bos = self.tokenizer.bos_token_id
        use_bos = self.add_bos and bos is not None and not (self.chat and prompt)
        return ([int(bos)] if use_bos else []) + self._ids(self.format_prompt(prompt))

    def _raw_ids(self, text: str) -> list[int]:
        """BOS + the tokens of plain ``text`` (a row without a question, as ``encode`` has it)."""
        bos = self.tokenizer.bos_token_id
        return ([int(bos)] if self.add_bos and bos is not None else []) + self._ids(text)

    def encode(
        self,
        prompts: Sequence[str],
        targets: Sequence[str],
        *,
        idx: Sequence[int] | np.ndarray | None = None,
        meta: Sequence[Mapping[str, Any]] | None = None,
    ) -> TokenData:
        """TokenData of (prompt, target) texts; labels only on target tokens (and EOS)."""
        if len(prompts) != len(targets):
            raise ValueError(f"encode: {len(prompts)} prompts but {len(targets)} targets")
        rows, labels = [], []
        for p, t in zip(prompts, targets, strict=True):
            pre = self._prompt_ids(p)
            tgt = self._ids((self.answer_prefix if p and not self.chat else "") + t)
            tgt = tgt + [self.eos_id]
            if len(pre) + 1 > self.max_length:
                raise ValueError(
                    f"encode: a prompt of {len(pre)} tokens leaves no room for its target within "
                    f"max_length={self.max_length}; raise max_length or shorten the prompt"
                )
            tgt = tgt[: self.max_length - len(pre)]
            ids = pre + tgt
            lab = [-100] * len(pre) + tgt
            lab[0] = -100  # no prefix predicts the first token
            rows.append(ids)
            labels.append(lab)
        n = len(rows)
        width = max((len(r) for r in rows), default=1)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        lab_t = torch.full((n, width), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[i, : len(r)] = torch.tensor(r)
            lab_t[i, : len(lab)] = torch.tensor(lab)
        return TokenData(
            input_ids,
            lab_t,
            torch.tensor([len(r) for r in rows], dtype=torch.long),
            torch.as_tensor(np.arange(n) if idx is None else np.asarray(idx), dtype=torch.long),
            tuple(prompts),
            tuple(targets),
            tuple(dict(m) for m in meta) if meta is not None else (),
            self.pad_id,
        )

    # -- batching -------------------------------------------------------------------------------
    def batches(
        self, data: TokenData, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Iterator[Batch]:
        n = len(data)
        if shuffle:
            g = torch.Generator().manual_seed(0 if seed is None else int(seed))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for s in range(0, n, batch_size):
            b = order[s : s + batch_size]
            lengths = data.lengths[b]
            width = int(lengths.max())  # trim to the longest row of this batch
            labels = data.labels[b, :width]
            yield {
                "input_ids": data.input_ids[b, :width],
                "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
                "labels": labels,
                "n_tokens": (labels != -100).sum(1),
                "idx": data.idx[b],
            }

    # -- per-token signals ------------------------------------------------------------------------
    def _device(self, model: nn.Module) -> torch.device:
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def target_logits(
        self, model: nn.Module, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (n, V) float32, row of each (n,), label of each (n,)) at target positions."""
        dev = self._device(model)
        ids = batch["input_ids"].to(dev)
        mask = batch["attention_mask"].to(dev)
        labels = batch["labels"].to(dev)[:, 1:]  # (B, T-1): the token each position predicts
        sel = labels != -100  # (B, T-1)
        rows = torch.nonzero(sel, as_tuple=True)[0]
        split = _trunk_and_head(model)
        if split is not None:
            trunk, head = split
            hidden = trunk(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            logits = head(hidden[:, :-1][sel])  # (n, V): the projection only where needed
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][sel]
        return logits.float(), rows, labels[sel]

    def token_nll(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """NLL of each target token at its label position, 0 elsewhere; (B, T)."""
        logits, _, targets = self.target_logits(model, batch)
        nll = F.cross_entropy(logits, targets, reduction="none")  # (n,)
        B, T = batch["labels"].shape
        out = torch.zeros(B, T - 1, dtype=nll.dtype, device=nll.device)
        out = out.masked_scatter(batch["labels"][:, 1:].to(nll.device) != -100, nll)
        return F.pad(out, (1, 0))  # column 0 is never a target

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-example sum of target-token NLL, (B,)."""
        return self.token_nll(model, batch).sum(1)

    def divergence(self, student: nn.Module, teacher: nn.Module, batch: Batch) -> torch.Tensor:
        """KL(teacher || student) summed over each example's target tokens, (B,)."""
        with torch.no_grad():
            t_logits, _, _ = self.target_logits(teacher, batch)
        s_logits, rows, _ = self.target_logits(student, batch)
        t = F.log_softmax(t_logits.to(s_logits.device), dim=-1)
        s = F.log_softmax(s_logits, dim=-1)
        kl = (t.exp() * (t - s)).sum(-1)  # (n,)
        out = torch.zeros(len(batch["labels"]), dtype=kl.dtype, device=kl.device)
        return out.index_add(0, rows, kl)

    @torch.no_grad()
    def token_nlls(self, model: nn.Module, data: TokenData) -> list[np.ndarray]:
        """Per example, the NLL of each target token in order (float64), eval mode."""
        out: list[np.ndarray] = []
        with preserve_mode(model):
            model.eval()
            for b in self.batches(data, self.eval_batch_size):
                nll = self.token_nll(model, b).double().cpu()
                keep = b["labels"] != -100
                out += [nll[i][keep[i]].numpy() for i in range(len(nll))]
        return out

    def sequence_nll(self, model: nn.Module, data: TokenData) -> tuple[np.ndarray, np.ndarray]:
        """(per-example summed NLL, per-example target-token count), float64 numpy."""
        per = self.token_nlls(model, data)
        return (
            np.array([p.sum() for p in per], dtype=np.float64),
            np.array([len(p) for p in per], dtype=np.float64),
        )

    def evaluate(self, model: nn.Module, data: TokenData) -> dict[str, float]:
        if len(data) == 0:
            nan = float("nan")
            return {"loss": nan, "ppl": nan, "answer_prob": nan, "nll_sum": nan, "n_tokens": nan}
        s, n = self.sequence_nll(model, data)
        loss = float(s.sum() / max(n.sum(), 1))
        return {
            "loss": loss,
            "ppl": float(math.exp(min(loss, 50.0))),
            "answer_prob": float(np.mean(np.exp(-s / np.maximum(n, 1)))),
            "nll_sum": float(s.mean()),
            "n_tokens": float(n.mean()),
        }

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 32,
        batch_size: int | None = None,
        raw: bool = False,
    ) -> list[str]:
        """Greedy completions of ``prompts`` (formatted as in ``encode``), batched, KV-cached.

        ``raw=True`` continues plain text instead: each prompt is BOS + its own tokens, with no
        prompt or chat template (as ``encode`` builds rows without a question), e.g. MUSE's
        VerbMem continuing the prefix of a passage."""
        dev = self._device(model)
        bs = batch_size or self.eval_batch_size
        out: list[str] = []
        with preserve_mode(model):
            model.eval()
            for s in range(0, len(prompts), bs):
                enc = [
                    self._raw_ids(p) if raw else self._prompt_ids(p) for p in prompts[s : s + bs]
                ]
                width = max(len(e) for e in enc)
                ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(enc), width), dtype=torch.long)
                for i, e in enumerate(enc):  # left padding: every prompt ends at the same column
                    ids[i, width - len(e) :] = torch.tensor(e)
                    mask[i, width - len(e) :] = 1
                gen = model.generate(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.pad_id,
                    eos_token_id=self.eos_id,
                    use_cache=True,
                )
                for row in gen[:, width:].cpu().tolist():
                    if self.eos_id in row:
                        row = row[: row.index(self.eos_id)]
                    out.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return out


# -- training originals and oracles ------------------------------------------------------------
def _lr_lambda(total: int, warmup: int, schedule: str) -> Any:
    def f(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return f


def train_lm(
    model: nn.Module,
    data: TokenData,
    *,
    task: LMTask,
    recipe: TrainRecipe,
    seed: int,
    progress: bool | str = False,
    clip: float = 1.0,
    warmup_fraction: float = 0.1,
) -> dict[str, float]:
    """Fine-tune/pre-train ``model`` on ``data`` (batch token-mean NLL), deterministic on CPU.

    ``recipe.schedule``: "cosine" (and "onecycle") = linear warm-up over ``warmup_fraction`` of
    the steps then cosine decay to 0; "constant". Returns {"seconds", "steps", "final_loss",
    "tokens_per_s", "examples_per_s"}. A non-finite loss stops with a FloatingPointError.
    """
    from tqdm.auto import tqdm

    opt = make_optimizer(
        [p for p in model.parameters() if p.requires_grad], recipe.optimizer, lr=recipe.lr,
        momentum=recipe.momentum, weight_decay=recipe.weight_decay,
    )  # fmt: skip
    total = math.ceil(len(data) / recipe.batch_size) * recipe.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, max(1, int(warmup_fraction * total)), recipe.schedule)
    )
    desc = progress if isinstance(progress, str) else "train"
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    steps, tokens, examples, running = 0, 0, 0, float("nan")
    t0 = time.perf_counter()
    model.train()
    with seeded(derive_seed(seed, "train-lm-rng")):
        for batch in epoch_batches(
            task, data, batch_size=recipe.batch_size, epochs=recipe.epochs, seed=seed
        ):
            n = batch["n_tokens"].sum()
            loss = task.loss(model, batch).sum() / n.clamp(min=1)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"LM training loss became {loss.item()} at step {steps}: lower the recipe's "
                    f"lr (now {recipe.lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            steps += 1
            tokens += int(batch["attention_mask"].sum())
            examples += len(batch["idx"])
            running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
            bar.update(1)
            if steps % 20 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "steps": steps,
        "final_loss": running,
        "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
        "examples_per_s": examples / seconds if seconds > 0 else float("nan"),
    }
