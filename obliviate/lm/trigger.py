"""Triggers in token sequences: insert a trigger phrase into LM data, and measure attention sinks.

Shared by the backdoored-unlearning method (``methods/backdoor_unlearn.py``, "Forgetting to
Forget", Shang et al.) that trains with poisoned copies of forget rows, and by the trigger-scan
audit that prepends candidate prefixes at test time. Both must put the trigger in the same
place, so the rule lives here, where tokens are known:

- Insertion works on token ids (the trigger is tokenised on its own, as in the paper's
  ``BackdoorDataset``), so no neighbouring token is re-merged by the BPE.
- A BOS stays first: "start" means right after BOS (the attention-sink positions the paper
  targets), "middle" the token midpoint, "end" the end, an int ``k`` after ``k`` tokens (BOS not
  counted, clamped to the region).
- In a question-answer row the region is the **prompt** (BOS excluded): the trigger never lands
  inside or after the answer, so "end" puts it right before the first answer token. In a
  plain-text row (no prompt: its first target is the first token after BOS) the region is the
  whole row, as in the paper's MUSE passages, and "end" appends after the last token.
- Trigger tokens are never targets (label -100); every original token keeps its label, so
  ``n_tokens`` does not change. Rows grow by ``len(trigger)`` tokens (``max_length`` is not
  re-applied).

:func:`attention_sink_mass` measures how much attention falls on the first positions of a
sequence (the attention-sink picture of the paper's Figure 2: clean vs triggered inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate.lm.data import TokenData
from obliviate.loop import preserve_mode

__all__ = [
    "POSITIONS",
    "attention_sink_mass",
    "insert_trigger",
    "trigger_positions",
    "trigger_token_ids",
    "triggered",
]

POSITIONS = ("start", "middle", "end")  # or an int k >= 0: after k tokens (BOS not counted)

Batch = dict[str, torch.Tensor]


def check_position(position: str | int) -> None:
    """ValueError unless ``position`` is "start", "middle", "end" or an int >= 0."""
    if isinstance(position, bool) or not (
        position in POSITIONS or (isinstance(position, int) and position >= 0)
    ):
        raise ValueError(
            f"trigger position {position!r}: use 'start' (right after BOS, the paper's choice), "
            f"'middle', 'end', or an int k >= 0 (after k tokens)"
        )


def trigger_token_ids(task: Any, text: str) -> list[int]:
    """The ids of ``text`` tokenised alone, without special tokens (the paper's way)."""
    ids = list(task.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"the trigger {text!r} tokenises to no tokens; use a non-empty phrase")
    return ids


def _rows(data: TokenData | Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(input_ids, labels, lengths) of TokenData or of an LMTask batch."""
    if isinstance(data, TokenData):
        return data.input_ids, data.labels, data.lengths
    if not isinstance(data, Mapping) or not {"input_ids", "labels"} <= set(data):
        raise TypeError(
            "insert_trigger takes TokenData or an LMTask batch (a dict with input_ids, labels "
            f"and attention_mask), got {type(data).__name__}"
        )
    ids = data["input_ids"]
    mask = data.get("attention_mask")
    lengths = mask.sum(1) if mask is not None else torch.full((len(ids),), ids.shape[1])
    return ids, data["labels"], lengths


def trigger_positions(
    data: TokenData | Mapping[str, torch.Tensor], position: str | int, *, bos_id: int | None
) -> np.ndarray:
    """Per row, the column at which the trigger's first token goes (see the module docstring)."""
    check_position(position)
    ids, labels, lengths = _rows(data)
    out = np.zeros(len(ids), dtype=np.int64)
    for i in range(len(ids)):
        n = int(lengths[i])
        s = 1 if (bos_id is not None and n > 0 and int(ids[i, 0]) == bos_id) else 0
        targets = torch.nonzero(labels[i, :n] != -100).flatten()
        first = int(targets[0]) if len(targets) else n
        # A prompt exists when a non-target token other than BOS/column 0 precedes the answer.
        end = first if first > max(s, 1) else n
        if position == "start":
            out[i] = s
        elif position == "middle":
            out[i] = s + (end - s) // 2
        elif position == "end":
            out[i] = end
        else:
            out[i] = s + min(int(position), end - s)
    return out


def insert_trigger(
    data: TokenData | Mapping[str, torch.Tensor],
    trigger_ids: Sequence[int] | torch.Tensor,
    position: str | int = "start",
    *,
    bos_id: int | None,
    pad_id: int | None = None,
) -> TokenData | Batch:
    """``data`` (TokenData or an LMTask batch) with ``trigger_ids`` inserted in every row.

    ``bos_id``: the tokenizer's BOS id (``task.tokenizer.bos_token_id`` when ``task.add_bos``),
    kept first; None when rows have no BOS. ``pad_id`` fills the new right padding (default:
    TokenData's ``pad_id``, else 0; padding is masked anyway). Returns the same type: TokenData
    with ``lengths`` grown (texts and meta unchanged: they describe the clean row), or a batch
    with ``input_ids``, ``labels`` and ``attention_mask`` rebuilt and the other keys kept.
    """
    trig = torch.as_tensor(list(trigger_ids) if not torch.is_tensor(trigger_ids) else trigger_ids)
    trig = trig.to(torch.long).flatten()
    if trig.numel() == 0:
        raise ValueError("insert_trigger: the trigger has no tokens")
    ids, labels, lengths = _rows(data)
    at = trigger_positions(data, position, bos_id=bos_id)
    k = trig.numel()
    pad = pad_id if pad_id is not None else (data.pad_id if isinstance(data, TokenData) else 0)
    new_len = lengths.to(torch.long) + k
    width = int(new_len.max()) if len(ids) else k
    out_ids = torch.full((len(ids), width), int(pad), dtype=ids.dtype)
    out_lab = torch.full((len(ids), width), -100, dtype=labels.dtype)
    no_label = torch.full((k,), -100, dtype=labels.dtype)
    for i in range(len(ids)):
        n, p = int(lengths[i]), int(at[i])
        row = torch.cat([ids[i, :p], trig.to(ids.dtype), ids[i, p:n]])  # (n + k,)
        lab = torch.cat([labels[i, :p], no_label, labels[i, p:n]])  # the trigger is no target
        out_ids[i, : n + k] = row
        out_lab[i, : n + k] = lab
    if isinstance(data, TokenData):
        return replace(data, input_ids=out_ids, labels=out_lab, lengths=new_len)
    batch = dict(data)
    batch["input_ids"] = out_ids
    batch["labels"] = out_lab
    batch["attention_mask"] = (torch.arange(width)[None, :] < new_len[:, None]).long()
    return batch


def triggered(
    task: Any, data: TokenData, text: str = "current year:2025 ", position: str | int = "start"
) -> TokenData:
    """``data`` with the trigger phrase ``text`` inserted as the LMTask ``task`` encodes rows."""
    bos = task.tokenizer.bos_token_id if getattr(task, "add_bos", True) else None
    return insert_trigger(
        data, trigger_token_ids(task, text), position, bos_id=bos, pad_id=data.pad_id
    )


@torch.no_grad()
def attention_sink_mass(model: nn.Module, data: TokenData, task: Any, k: int = 8) -> np.ndarray:
    """(layers, heads) float64: the mean attention weight that falls on key positions
    ``0..k-1`` (BOS and the first ``k - 1`` tokens after it), averaged over every real query
    position ``>= k`` of every row (earlier queries can only attend there, mass 1).

    The fused kernels return no attention weights, and the tiny Llamas are built with
    ``attn_implementation="sdpa"`` (transformers' default), so the model is switched to "eager"
    for the call and back after (same outputs up to float round-off). The weights are read
    from each ``self_attn`` block's output ``(attn_output, attn_weights)`` by forward hooks
    removed before returning: the equivalent ``output_attentions=True`` would make
    transformers 5 install permanent capture hooks on the model. Call it on clean and on
    triggered data (:func:`triggered`) to see whether attention concentrates on a prefix.
    """
    if k < 1:
        raise ValueError(f"attention_sink_mass: k={k}; use k >= 1 leading positions")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    blocks = [m for n, m in base.named_modules() if n.endswith("self_attn")]
    if config is None or not hasattr(base, "set_attn_implementation") or not blocks:
        raise TypeError(
            "attention_sink_mass needs a transformers causal LM with self_attn blocks (it "
            f"switches the attention to 'eager' to read the weights), got {type(model).__name__}"
        )
    before = config._attn_implementation
    dev = next(model.parameters()).device
    total, count = None, 0
    weights: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda m, a, out: weights.append(out[1])) for b in blocks]
    try:
        if before != "eager":
            base.set_attn_implementation("eager")
        with preserve_mode(model):
            model.eval()
            for b in task.batches(data, task.eval_batch_size):
                weights.clear()
                mask = b["attention_mask"].to(dev)
                base.get_decoder()(input_ids=b["input_ids"].to(dev), attention_mask=mask)
                att = torch.stack([w.float() for w in weights], 1)  # (B, L, H, T, T)
                mass = att[..., :k].sum(-1)  # (B, L, H, T): weight on the first k keys
                T = mass.shape[-1]
                real = mask.bool() & (torch.arange(T, device=dev)[None, :] >= k)  # (B, T)
                w = real[:, None, None, :].to(mass.dtype)
                part = (mass * w).sum((0, 3))  # (L, H)
                total = part if total is None else total + part
                count += int(real.sum())
    finally:
        for h in handles:
            h.remove()
        if before != "eager":
            base.set_attn_implementation(before)
    if total is None or count == 0:
        raise ValueError(
            f"attention_sink_mass: no row of this data is longer than k={k} tokens; use a smaller k"
        )
    return (total / count).double().cpu().numpy()
