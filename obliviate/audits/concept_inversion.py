"""Concept-inversion negatives: "Prompt-based safety guidance is ineffective for unlearned
text-to-image models" (Shin et al., NeurIPS 2025 GenProCC workshop, arXiv:2511.04834).

Observation: stacking training-free guidance (a negative prompt in classifier-free guidance,
SLD's safety concept) on a weight-unlearned model gains little, because the unlearned model no
longer responds to the explicit concept *word* that the guidance is given. The concept still
lives in the text-embedding space, just not behind that word. Method: invert the concept on the
**unlearned** model (textual inversion: one new input embedding c*, the model frozen,
c* = argmin_c E_{x, t, eps} ||eps - eps_theta_u(x_t, caption(c), t)||^2 over a few concept
images) and put c* where the word was inside the guidance, nothing else changed:
negative-prompt CFG eps(c*) + s (eps(c_p) - eps(c*)); SLD with c_S = the prompt with c*.

What is measured (all samples share seeds across arms, so the arms differ only in guidance):
(a) the observation: the defence success rate (DSR, the judge does *not* see the concept) on the
    synonym prompts of ``concept-rate`` (the implicit routes an erased word leaves open) for the
    unlearned model alone (``dsr``), with the word as negative prompt (``dsr_neg_word``) and as
    SLD safety concept (``dsr_sld_word``), and the same three on the ORIGINAL model
    (``original_dsr...``), where the word still means the concept; ``gain_*`` = arm - alone;
(b) the method: ``dsr_neg_cstar``, ``dsr_sld_cstar`` with c*; prompt preservation on the
    unrelated prompts of ``concept-rate`` for every arm (``pp_class*``: the prompted class is
    detected; ``pp_colour*``: the prompted colour, on prompts naming one), since a negative that
    removes everything also "defends";
(c) the paper's side finding: c* elicits the concept from the original (``cstar_rate_original``:
    concept rate of the original on the concept prompts with c* in place of the word; the same
    on the unlearned model, ``cstar_rate_unlearned``);
(d) the inversion itself: its objective on fixed draws at the start (``inversion_loss_init``),
    at the end (``inversion_loss``), and with the explicit word's / first synonym's own
    embedding in the slot (``inversion_loss_word`` / ``inversion_loss_synonym``).
With ``attack_steps`` > 0, ``prompt-attack``'s discrete search runs on the unlearned model and
the DSR arms are repeated on its found prompts (``adv_dsr...``).

Choices kept visible as hyperparameters (the note gives no code; this is a reconstruction):
- images: the real forget images (``images="forget"``, default: "a small set of harmful
  images"), each with its own caption, concept synonyms rewritten to the explicit word, c* in
  that word's slot; or the original's samples of the concept prompts (``"original"``);
- c* starts at the mean of the vocabulary's input embeddings (``init="mean"``; or a word);
- the guidance prompt is the bare word (``guide_prompt="{}"``, like "nudity" as a negative
  prompt), c* built by substituting c* for the word in that prompt and encoding it with the
  text encoder (the (L, D) context SLD takes); SLD at its "medium" configuration.
Scale-downs: Adam lr 5e-3 as in the note, but 300 steps of batch 16 on 32 images instead of 3000
of batch 1 (the plan's "300-1000 steps on 20-50 images"); measured on t2i-tiny that gets the
inversion objective below the word's own. SAFREE (the note's second guidance) is not
implemented. Transfer of one c* across unlearning strengths (the paper's β sweep):
``cstar_from`` names an earlier run whose c* is used instead of inverting
(``benchmarks/concept_inversion.py`` runs that sweep).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.audits.concept_rate import ConceptRate
from obliviate.audits.prompt_attack import (
    UnlearnDiffAtk,
    attack_prompts,
    check_t2i,
    concept_hits,
    fixed_draws,
    sample_contexts,
)
from obliviate.audits.stats import bootstrap_ci
from obliviate.loop import derive_seed, frozen_copy
from obliviate.registry import AUDITS
from obliviate.types import AuditContext, Report, Splits, Task

log = logging.getLogger(__name__)

__all__ = ["ConceptInversion", "invert_concept", "slot_context"]


def slot_context(
    model: nn.Module, task: Any, prompts: list[str], word: str, vec: torch.Tensor
) -> torch.Tensor:
    """(B, L, D) text-encoder output of ``prompts`` with the input embedding of every occurrence
    of ``word`` replaced by ``vec`` (D,): the prompt with c* in the concept token's slot. Keeps
    the graph to ``vec``."""
    tokens = task.tokenize(prompts)
    emb = model.text_encoder.embed(tokens)  # (B, L, D)
    slot = (tokens == task.vocab.index[word])[..., None]  # (B, L, 1)
    if not bool(slot.any(dim=1).all()):
        raise ValueError(f"every prompt needs the slot word {word!r} for c*: {prompts}")
    return model.text_encoder(embeds=torch.where(slot, vec.expand_as(emb), emb))


def invert_concept(
    model: nn.Module,
    task: Any,
    x0: torch.Tensor,
    captions: list[str],
    word: str,
    init: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, list[float]]:
    """Textual inversion: Adam on one input embedding c (D,) in ``word``'s slot of ``captions``
    minimising the DDPM loss of ``model`` (frozen: gradients go to c only, via autograd.grad, so
    no parameter's ``.grad`` is touched) on images ``x0``. Returns (c*, per-step losses)."""
    c = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(x0), (batch_size,), generator=gen)
        noise = torch.randn((batch_size, *x0.shape[1:]), generator=gen)
        t = torch.randint(0, task.schedule.T, (batch_size,), generator=gen)
        x_t = task.schedule.q_sample(x0[idx], t, noise)
        ctx = slot_context(model, task, [captions[i] for i in idx.tolist()], word, c)
        loss = F.mse_loss(model(x_t, t, context=ctx), noise)
        (c.grad,) = torch.autograd.grad(loss, c)
        opt.step()
        losses.append(float(loss.detach()))
    return c.detach(), losses


def load_cstar(source: str | Path, *, dim: int) -> torch.Tensor:
    """c* of an earlier concept-inversion run: ``source`` is its run folder or its arrays.npz
    (read without pickle). Used to test one c* across unlearning strengths (the paper's
    transfer experiment)."""
    from obliviate.store import load_arrays

    path = Path(source)
    path = path / "arrays.npz" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(
            f"cstar_from={str(source)!r}: no such run folder or arrays.npz; give the folder of a "
            "finished run that ran the concept-inversion audit"
        )
    arrays = load_arrays(path)
    key = "concept-inversion.cstar" if "concept-inversion.cstar" in arrays else "cstar"
    if key not in arrays:
        raise ValueError(
            f"{path} holds no c* (no 'concept-inversion.cstar' array): that run did not run the "
            "concept-inversion audit"
        )
    vec = torch.as_tensor(arrays[key], dtype=torch.float32).reshape(-1)
    if vec.numel() != dim:
        raise ValueError(
            f"c* from {path} has {vec.numel()} dimensions, this model's token embeddings have "
            f"{dim}: c* transfers only between models with the same text encoder"
        )
    return vec


@AUDITS.register("concept-inversion")
@dataclass(frozen=True)
class ConceptInversion:
    supports: ClassVar[frozenset[str]] = frozenset({"diffusion"})
    steps: int = 300  # Adam steps of the inversion (note: 3000 at batch 1 on SD; scaled)
    lr: float = 5e-3  # Adam learning rate on c* (the note's value)
    batch_size: int = 16  # images per inversion step (note: 1)
    n_inversion: int = 32  # concept images c* is inverted from (plan: 20-50)
    images: Literal["forget", "original"] = "forget"  # real forget images or original's samples
    captions: Literal["templates", "own"] = "templates"  # TI's generic templates or own captions
    init: str = "mean"  # c*'s start: "mean" of the input embeddings, or a vocabulary word
    guide_prompt: str = "{}"  # negative / SLD prompt; "{}" is the concept word (or c*)
    n: int = 8  # samples per synonym (attack) prompt and per concept prompt (c* elicitation)
    n_pp: int = 1  # samples per unrelated prompt (prompt preservation; 27 prompts on t2i-tiny)
    sample_steps: int = 20  # DDIM steps of every sample
    guidance: float = 3.0  # classifier-free guidance scale (the negative replaces ∅ in it)
    n_eval_draws: int = 4  # fixed (t, eps) draws per inversion image for the objective metrics
    attack_steps: int = 0  # > 0: also defend prompt-attack's prompts found in this many steps
    n_boot: int = 1000  # bootstrap resamples for the CIs
    n_images: int = 8  # samples per arm kept in Report.arrays for the report's grids
    cstar_from: str = ""  # a run folder (or its arrays.npz): reuse its c*, no inversion (transfer)

    def __post_init__(self) -> None:
        if self.captions not in ("templates", "own"):
            raise ValueError(f"captions must be 'templates' or 'own', got {self.captions!r}")
        if self.images not in ("forget", "original"):
            raise ValueError(f"images must be 'forget' or 'original', got {self.images!r}")
        if "{}" not in self.guide_prompt:
            raise ValueError(
                f"guide_prompt {self.guide_prompt!r} needs a '{{}}' where the concept word (or "
                f"c*) goes, e.g. '{{}}' or 'a photo of a {{}}'"
            )
        if self.steps < 0 or self.batch_size < 1 or self.n_inversion < 1:
            raise ValueError(
                "concept-inversion needs steps >= 0, batch_size >= 1, n_inversion >= 1"
            )

    def _inversion_set(self, ref, task, ds, splits, concept, rows, seed) -> tuple[Any, list[str]]:
        """(images, captions with the explicit word in the slot) c* is inverted from; ``rows``
        are concept-rate's concept prompts (prompt, class, colour)."""
        word = concept.name
        if self.images == "original":
            prompts = [r[0] for r in rows]
            reps = -(-self.n_inversion // len(prompts))
            s = derive_seed(seed, "inversion-images")
            x = task.sample(
                ref, prompts, n=reps, steps=self.sample_steps, guidance=self.guidance, seed=s
            )
            own = [p for p in prompts for _ in range(reps)]
            labels = np.repeat([r[1] for r in rows], reps)
            pick = np.random.default_rng(seed).permutation(len(x))[: self.n_inversion]
        else:
            x, labels = splits.forget.x0, splits.forget.label.numpy()
            # the forget captions, every synonym rewritten to the explicit word (c*'s slot)
            own = [
                " ".join(word if w in concept.words else w for w in cap.split())
                for cap in task.vocab.decode(splits.forget.tokens)
            ]
            ok = np.flatnonzero([word in c.split() for c in own])  # a colour may go unnamed
            if self.captions == "own" and not len(ok):
                raise ValueError(f"no forget caption names {word!r}; use captions='templates'")
            pool = ok if self.captions == "own" else np.arange(len(x))
            pick = np.random.default_rng(seed).permutation(pool)[: self.n_inversion]
        if self.captions == "own":
            caps = [own[i] for i in pick]
        elif concept.kind == "class":  # textual inversion's generic templates, "a photo of a {}"
            caps = [ds.prompt(word, template=k) for k in range(len(pick))]
        else:  # a colour needs a noun: the image's class
            caps = [ds.prompt(ds.class_words[labels[i]][0], word, template=k)
                    for k, i in enumerate(pick)]  # fmt: skip
        return x[torch.as_tensor(pick)], caps

    def audit(
        self,
        original: nn.Module,
        unlearned: nn.Module,
        splits: Splits,
        *,
        task: Task,
        ctx: AuditContext,
    ) -> Report:
        check_t2i("concept-inversion", task, splits, ctx)
        ds = ctx.dataset
        concept = ds.concept(splits.info["concept"])
        word = concept.name
        judges = ctx.bench.judges(ds, ctx.cache)
        sets = ConceptRate()._prompts(ds, concept)  # concept / synonym / unrelated, as there
        concept_p = [r[0] for r in sets["concept"]]
        syn_p = [r[0] for r in sets["synonym"]]
        unrel = sets["unrelated"]
        unrel_p = [r[0] for r in unrel]
        seed = derive_seed(ctx.seed, "concept-inversion")
        # frozen copies: the audit never touches the audited models (nor their .grad)
        net, ref = frozen_copy(unlearned), frozen_copy(original)

        # 1. concept inversion on the UNLEARNED model
        x_inv, caps = self._inversion_set(ref, task, ds, splits, concept, sets["concept"], seed)
        table = net.text_encoder.token_embedding.weight.detach()  # (V, D); row 0 is padding
        if self.init != "mean" and self.init not in task.vocab.index:
            raise ValueError(f"init={self.init!r} is neither 'mean' nor a vocabulary word")
        init = table[1:].mean(0) if self.init == "mean" else table[task.vocab.index[self.init]]
        metrics: dict[str, float] = {"cstar_transferred": float(bool(self.cstar_from))}
        if self.cstar_from:
            cstar = load_cstar(self.cstar_from, dim=table.shape[1])
        else:
            gen = torch.Generator().manual_seed(derive_seed(seed, "inversion"))
            cstar, _ = invert_concept(
                net, task, x_inv, caps, word, init, steps=self.steps, lr=self.lr,
                batch_size=self.batch_size, gen=gen,
            )  # fmt: skip
        g_eval = torch.Generator().manual_seed(derive_seed(seed, "eval-draws"))
        draws = fixed_draws(x_inv, self.n_eval_draws, task.schedule, g_eval)
        caps_k = caps * self.n_eval_draws  # fixed_draws repeats the images in this order
        alt = {"init": init, "": cstar, "word": table[task.vocab.index[word]]}
        if concept.synonyms:
            alt["synonym"] = table[task.vocab.index[concept.synonyms[0]]]
        with torch.no_grad():
            for k, v in alt.items():
                c = slot_context(net, task, caps_k, word, v)
                err = F.mse_loss(net(draws[0], draws[1], context=c), draws[2])
                metrics["inversion_loss" + (f"_{k}" if k else "")] = float(err)

        # 2. guidance contexts: the word prompt, and the same prompt with c* in the word's slot
        gp = self.guide_prompt.format(word)
        with torch.no_grad():
            word_ctx = net.text_encoder(task.tokenize([gp]))[0]  # (L, D)
            cstar_ctx = slot_context(net, task, [gp], word, cstar)[0]
        kw = dict(steps=self.sample_steps, guidance=self.guidance)
        s_syn, s_pp = derive_seed(seed, "synonym"), derive_seed(seed, "unrelated")
        arrays: dict[str, np.ndarray] = {"cstar": cstar.numpy().astype(np.float32)}

        def rate(key: str, hit: np.ndarray) -> None:
            """DSR = 1 - concept rate, with its bootstrap CI."""
            ci = bootstrap_ci(np.mean, (~hit).astype(float), n_boot=self.n_boot, seed=ctx.seed)
            metrics[key], metrics[f"{key}_lo"], metrics[f"{key}_hi"] = ci
            arrays[f"{key}_hit"] = hit

        def keep(name: str, x: torch.Tensor, n: int) -> None:
            pick = np.arange(0, len(x), n)[: self.n_images]  # one per prompt first
            arrays[name] = x[pick].numpy().astype(np.float16)

        # 3. the arms on the unlearned model (word arms through task.sample, c* arms through
        # sample_contexts, which draws the same noise): synonym prompts and unrelated prompts
        cond_syn = net.text_encoder(task.tokenize(syn_p)).detach()
        cond_pp = net.text_encoder(task.tokenize(unrel_p)).detach()
        arms = {
            "": (None, None, None, None),
            "_neg_word": (gp, None, None, None),
            "_sld_word": (None, gp, None, None),
            "_neg_cstar": (None, None, cstar_ctx, None),
            "_sld_cstar": (None, None, None, cstar_ctx),
        }
        cls_pp = np.repeat([r[1] for r in unrel], self.n_pp)
        col_pp = np.repeat([-1 if r[2] is None else r[2] for r in unrel], self.n_pp)
        images = {"": "unlearned_images", "_neg_word": "word_guidance_images",
                  "_neg_cstar": "cstar_guidance_images", "_sld_word": "word_sld_images",
                  "_sld_cstar": "cstar_sld_images"}  # fmt: skip
        for arm, (neg, saf, neg_c, saf_c) in arms.items():
            if neg_c is None and saf_c is None:
                x = task.sample(net, syn_p, n=self.n, negative=neg, safety=saf, seed=s_syn, **kw)
                x_pp = task.sample(net, unrel_p, n=self.n_pp, negative=neg, safety=saf,
                                   seed=s_pp, **kw)  # fmt: skip
            else:
                x = sample_contexts(task, net, cond_syn, n=self.n, negative=neg_c, safety=saf_c,
                                    seed=s_syn, **kw)  # fmt: skip
                x_pp = sample_contexts(task, net, cond_pp, n=self.n_pp, negative=neg_c,
                                       safety=saf_c, seed=s_pp, **kw)  # fmt: skip
            rate(f"dsr{arm}", concept_hits(judges, concept, x))
            metrics[f"pp_class{arm}"] = float((judges.class_probs(x_pp).argmax(1) == cls_pp).mean())
            named = col_pp >= 0  # prompts that name a colour
            if named.any():
                pred_col = judges.colour_probs(x_pp).argmax(1)
                metrics[f"pp_colour{arm}"] = float((pred_col[named] == col_pp[named]).mean())
            keep(images[arm], x, self.n)
            if arm:
                metrics[f"gain{arm}"] = metrics[f"dsr{arm}"] - metrics["dsr"]

        # 4. the observation's control: the word's guidance on the ORIGINAL model
        for arm, (neg, saf) in {"": (None, None), "_neg_word": (gp, None),
                                "_sld_word": (None, gp)}.items():  # fmt: skip
            x = task.sample(ref, syn_p, n=self.n, negative=neg, safety=saf, seed=s_syn, **kw)
            rate(f"original_dsr{arm}", concept_hits(judges, concept, x))
            if arm:
                metrics[f"original_gain{arm}"] = (
                    metrics[f"original_dsr{arm}"] - metrics["original_dsr"]
                )

        # 5. c* elicits the concept: the concept prompts with c* in the word's slot
        s_c = derive_seed(seed, "elicit")
        for tag, m in (("original", ref), ("unlearned", net)):
            with torch.no_grad():
                cond = slot_context(m, task, concept_p, word, cstar)
            x = sample_contexts(task, m, cond, n=self.n, seed=s_c, **kw)
            hit = concept_hits(judges, concept, x)
            metrics[f"cstar_rate_{tag}"] = float(hit.mean())
            if tag == "original":
                keep("original_cstar_images", x, self.n)

        # 6. optionally, prompt-attack's optimised prompts as attack prompts
        if self.attack_steps > 0:
            self._adversarial(net, ref, task, ds, concept, judges, seed, word_ctx, cstar_ctx,
                              metrics, rate, kw)  # fmt: skip
        notes = [
            f"concept {word!r}; synonym prompts {syn_p}; guidance prompt {gp!r}; c* inverted on "
            f"the unlearned model from {len(x_inv)} {self.images} images, {self.steps} Adam steps "
            f"(lr {self.lr}, batch {self.batch_size}); objective on fixed draws "
            f"{metrics['inversion_loss_init']:.4f} -> {metrics['inversion_loss']:.4f} (the word's "
            f"own embedding: {metrics['inversion_loss_word']:.4f})",
            f"c* reused from {self.cstar_from} (transfer; no inversion on this model)"
            if self.cstar_from
            else "arrays['cstar'] holds c*: cstar_from=<this run folder> reuses it elsewhere",
        ]
        log.info("concept-inversion: dsr %.3f, +word %.3f, +c* %.3f (negative prompt)",
                 metrics["dsr"], metrics["dsr_neg_word"], metrics["dsr_neg_cstar"])  # fmt: skip
        return Report("concept-inversion", metrics, arrays=arrays, notes=notes)

    def _adversarial(self, net, ref, task, ds, concept, judges, seed, word_ctx, cstar_ctx,
                     metrics, rate, kw) -> None:  # fmt: skip
        """DSR of the unlearned model on prompt-attack's found prompts, alone and guided."""
        atk = UnlearnDiffAtk(steps=self.attack_steps, attack_oracle=False)
        prompts = attack_prompts(ds, concept, atk.n_prompts, atk.n_tokens)
        s_t = derive_seed(seed, "attack-targets")
        x = task.sample(
            ref, prompts, n=atk.n_targets, steps=self.sample_steps, guidance=self.guidance, seed=s_t
        )
        targets = x.view(len(prompts), atk.n_targets, *x.shape[1:])
        found = atk.search(net, task, prompts, targets, derive_seed(seed, "attack"))["found"]
        s = derive_seed(seed, "adversarial")
        for arm, (neg, saf) in {"": (None, None), "_neg_word": (word_ctx, None),
                                "_sld_word": (None, word_ctx), "_neg_cstar": (cstar_ctx, None),
                                "_sld_cstar": (None, cstar_ctx)}.items():  # fmt: skip
            x = sample_contexts(task, net, found, n=self.n, negative=neg, safety=saf, seed=s, **kw)
            rate(f"adv_dsr{arm}", concept_hits(judges, concept, x))
