"""UCE: Unified Concept Editing (Gandikota, Orgad, Belinkov, Materzyńska & Bau 2024, "Unified
Concept Editing in Diffusion Models", arXiv:2308.14761).

A closed-form edit of the cross-attention key and value projections, no training: every
``attn2.to_k`` / ``attn2.to_v`` weight W is replaced by the least-squares solution that sends the
concept's text embeddings c_i to the anchor's outputs v*_i = W c_anchor while keeping the outputs
W c_j of preserved concepts (the paper's equation 7, as its code ``uce_sd_erase.py`` computes it):

    W' = (lamb W + s_e sum_i v*_i c_i^T + s_p sum_j W c_j c_j^T)
         (lamb I + s_e sum_i c_i c_i^T + s_p sum_j c_j c_j^T)^-1

lamb is the code's ridge term (it keeps W in directions no prompt spans and makes the matrix
invertible), s_e ``erase_scale``, s_p ``preserve_scale``. Solved in float64 (``linalg.solve``,
not an explicit inverse), cast back to the weight's dtype. No optimizer step is taken, so the
run records 0 steps whatever the budget.

Which embeddings (``positions``): the code takes, per prompt, the text-encoder output at the last
word token (the concept word in "image of {concept}"); ``"token"`` does that: c_i at every
concept-word position of the edit prompts, v*_i the anchor prompt's output at the same position,
and c_j at the last word of each preserved prompt. CLIP is causal, so in SD only positions after
the concept carry it; this substrate's text encoder is bidirectional, so every position of a
concept prompt (padding included) carries the concept, and ``"all"`` (the default here) edits all
of them, aligning edit and anchor prompts position by position.

Prompts: edit prompts are ESD's (the forget captions with the concept words replaced by the
explicit word; see ``esd.concept_prompts``); the anchor prompt of each is the empty prompt
(``anchor=""``, the code's default for objects) or the same caption with the anchor word in
place of the concept. Preserved prompts are the distinct retain captions (the other classes, or
colours, in every template), the brief's "other classes"; the code preserves none by default.

Measured on t2i-tiny (seed 0, 8 samples per prompt, 0.04 s): concept rate 0.88 -> 0.18, synonym
0.85 -> 0.55 (only the explicit word is edited), unrelated class accuracy 0.84 -> 0.85;
``erase_scale=10``: 0.08 / 0.23 / 0.88 but unrelated colour accuracy 0.88 -> 0.63.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from obliviate.methods.esd import check_diffusion, concept_prompts
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["UCE", "uce_edit", "uce_targets"]


def uce_targets(model: nn.Module) -> list[str]:
    """Names of the cross-attention key/value projections (nn.Linear) UCE edits."""
    names = [
        n for n, m in model.named_modules()
        if n.endswith(("attn2.to_k", "attn2.to_v")) and isinstance(m, nn.Linear)
    ]  # fmt: skip
    if not names:
        raise ValueError(
            "UCE found no cross-attention projections: it edits modules named '...attn2.to_k' "
            "and '...attn2.to_v' (Stable Diffusion's names; see diffusion/models.py)"
        )
    return names


@torch.no_grad()
def uce_edit(
    weight: torch.Tensor,
    c_edit: torch.Tensor,
    c_anchor: torch.Tensor,
    c_keep: torch.Tensor,
    *,
    lamb: float,
    erase_scale: float,
    preserve_scale: float,
) -> torch.Tensor:
    """W' for one projection W (out, in): c_edit (N, in) to W c_anchor (N, in), keeping W c_keep
    (M, in); all in float64, returned in the weight's dtype."""
    w = weight.double()
    ce, ca, ck = c_edit.double(), c_anchor.double(), c_keep.double()
    v_star = ca @ w.T  # (N, out): the anchor's outputs under the original W
    mat1 = lamb * w + erase_scale * v_star.T @ ce + preserve_scale * (ck @ w.T).T @ ck
    mat2 = lamb * torch.eye(w.shape[1], dtype=torch.float64)
    mat2 = mat2 + erase_scale * ce.T @ ce + preserve_scale * ck.T @ ck  # (in, in), symmetric
    # W' = mat1 mat2^-1  <=>  mat2 W'^T = mat1^T (mat2 symmetric positive definite)
    return torch.linalg.solve(mat2, mat1.T).T.to(weight.dtype)


@METHODS.register("uce")
@dataclass(frozen=True)
class UCE:
    supports: ClassVar[frozenset[str]] = frozenset({"diffusion"})
    anchor: str = ""  # v* source: "" the empty prompt, or a word that replaces the concept word
    erase_scale: float = 1.0  # s_e: weight of the edit terms (code default 1)
    preserve_scale: float = 1.0  # s_p: weight of the preserved prompts (code default 1)
    lamb: float = 0.5  # ridge: weight of keeping W itself (code default 0.5)
    positions: Literal["all", "token"] = "all"  # which text positions are edited (see doc)
    concept: str = ""  # explicit concept word; "" = read it off the forget captions

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_diffusion("uce", task, forget, retain)
        if self.lamb <= 0:
            raise ValueError(
                f"lamb must be > 0 (the ridge keeps the solve well posed), {self.lamb}"
            )
        explicit, _, prompts = concept_prompts(forget, retain, task, self.concept)
        if self.anchor:
            task.tokenize([self.anchor])  # a clear error for a word outside the vocabulary
            anchors = [" ".join(self.anchor if w == explicit else w for w in p.split())
                       for p in prompts]  # fmt: skip
        else:
            anchors = [""] * len(prompts)
        keep = sorted(set(task.vocab.decode(retain.tokens)))
        # 1. Text-encoder outputs (the encoder is not edited, so once for every layer).
        tok_e, tok_k = task.tokenize(prompts), task.tokenize(keep)
        emb_e = model.text_encoder(tok_e)  # (P, L, D)
        emb_a = model.text_encoder(task.tokenize(anchors))
        emb_k = model.text_encoder(tok_k)  # (K, L, D)
        if self.positions == "all":
            sel_e = torch.ones_like(tok_e, dtype=torch.bool)
            sel_k = torch.ones_like(tok_k, dtype=torch.bool)
        elif self.positions == "token":
            sel_e = tok_e == task.vocab.index[explicit]  # the concept word's positions
            last = (tok_k != 0).sum(1) - 1  # the code's "last word token" of each prompt
            sel_k = torch.zeros_like(tok_k, dtype=torch.bool)
            sel_k[torch.arange(len(tok_k)), last] = True
        else:
            raise ValueError(f"positions must be 'all' or 'token', got {self.positions!r}")
        c_e, c_a, c_k = emb_e[sel_e], emb_a[sel_e], emb_k[sel_k]  # (N, D), (N, D), (M, D)
        log.info("uce: %r -> %r, %d edit and %d preserved embeddings", explicit,
                 self.anchor, len(c_e), len(c_k))  # fmt: skip
        # 2. The closed-form edit of every cross-attention key/value projection.
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in uce_targets(model):
                lin = modules[name]
                lin.weight.copy_(uce_edit(
                    lin.weight, c_e, c_a, c_k, lamb=self.lamb, erase_scale=self.erase_scale,
                    preserve_scale=self.preserve_scale,
                ))  # fmt: skip
        return model
