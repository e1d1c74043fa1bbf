"""RMU: Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark:
Measuring and Reducing Malicious Use With Unlearning", arXiv:2403.03218).

Scramble the model's internal representation of the forget data instead of its outputs: at one
decoder layer l, push the activations of forget tokens towards a fixed random direction scaled
up (``c * u``), and hold the activations of retain tokens at those of the frozen original. Only
a few MLP weights just below l are trained, so later layers receive noise-like inputs on forget
text and behave normally elsewhere.

Notation: ``h^l(x)`` = the OUTPUT of decoder layer l, what a forward hook on ``model.layers[l]``
sees (OpenUnlearning's and WMDP's hook); that is ``hidden_states[l + 1]`` except at the last
layer, whose ``hidden_states`` entry transformers returns after the final RMSNorm (we keep the
raw layer output there too). ``u`` = a fixed random unit vector, uniform on the positive orthant
then normalised (``torch.rand``), drawn from its own generator seeded by ``control_seed`` (not
the global RNG, so it is a reproducible input). ``d`` = hidden size. Per token,
``e(h, t) = ||h - t||^2 / d`` (``F.mse_loss``'s mean over the hidden dimension, as in the WMDP
and OpenUnlearning code; c is calibrated to that scale).

    L = mean_b [ sum_tok e(h_theta^l(x_f), c*u) / n_b ]
        + alpha * mean_b [ sum_tok e(h_theta^l(x_r), h_ref^l(x_r)) / n_b ]

with the token sums over each example's target tokens (``tokens="target"``, OpenUnlearning) or
all its real tokens (``tokens="all"``, the WMDP code on raw text) and n_b their count.

Reduction: the right per-example mean, mean(s/n). OpenUnlearning's ``compute_activation_loss``
divides a (B,) tensor by a (B, 1) one, broadcasting to (B, B), so it computes mean(s)*mean(1/n),
equal only at batch size 1 or equal lengths; ``reduction="openunlearning"`` reproduces it.

Reference: the frozen original (``reference="original"``, the only value; a copy of the model
passed to ``unlearn``, taken before any LoRA adapter), used for the retain activations.

Layers, scaled to depth: the paper (Zephyr-7B, 32 layers) steers layer 7 and updates
``mlp.down_proj`` of layers 5-7. ``layer=None`` takes ``min(7, n_layers - 1)`` (clamped to the
model's depth: the 2-layer tiny Llama steers layer 1, its last) and ``update_layers=None`` takes
``l-2..l`` clamped at 0 (layers 0-1 there). An explicit layer that the model lacks is a
ValueError. Only the named parameters are trained; with ``lora_r > 0`` LoRA adapters go on the
``param_names`` modules and only those of ``update_layers`` are trained.

Defaults: the WMDP paper's Zephyr-7B values (steering 6.5, alpha 1200, lr 5e-5, batch 4, AdamW
without clipping), 5 epochs as in the MUSE runs of "Forgetting to Forget". c and alpha depend
on the model's activation scale: on the 2-layer tiny Llama (layer-1 output norms about 2.5) the
defaults barely move it (forget NLL 0.372 -> 0.373 in 15 steps); lr 3e-3, c = 5, alpha = 10 and
20 epochs take the forget answer NLL from 0.37 to 3.9 with retain NLL 0.36 -> 0.68
(tests/test_rmu.py). The shared LM pieces (LoRA wrapper, guarded step) live in grad_diff.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import frozen_copy, make_optimizer, paired_batches, preserve_mode
from obliviate.methods.grad_diff import adapted, check_lm_task, check_lora, guarded_step, trainable
from obliviate.methods.npo import check_reference
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

__all__ = [
    "RMU",
    "activation_mse",
    "control_vector",
    "decoder_layers",
    "layer_output",
    "n_layers",
    "resolve_layers",
    "select_params",
    "token_mask",
]

PAPER_LAYER = 7  # WMDP: steer the output of layer 7 of Zephyr-7B, update layers 5-7


def n_layers(model: nn.Module) -> int:
    """Decoder depth of a transformers causal LM (or a peft wrapper of one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    depth = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    if depth is None:
        raise TypeError(
            f"RMU needs a transformers causal LM with config.num_hidden_layers, got "
            f"{type(model).__name__}"
        )
    return int(depth)


def resolve_layers(
    model: nn.Module, layer: int | None, update_layers: Sequence[int] | None, *, method: str
) -> tuple[int, tuple[int, ...]]:
    """(steered layer, updated layers): the paper's 7 and 5-7 clamped to depth when None."""
    depth = n_layers(model)
    lay = min(PAPER_LAYER, depth - 1) if layer is None else int(layer)
    if not 0 <= lay < depth:
        raise ValueError(
            f"{method}: layer={layer} does not exist in this {depth}-layer model (layers are "
            f"0..{depth - 1}); pick one of those, or layer=None for the paper's 7 clamped to "
            f"the depth"
        )
    ups = tuple(range(max(0, lay - 2), lay + 1)) if update_layers is None else tuple(update_layers)
    bad = [i for i in ups if not 0 <= int(i) < depth]
    if bad or not ups:
        raise ValueError(
            f"{method}: update_layers={update_layers} has layers {bad or '(none)'} that this "
            f"{depth}-layer model lacks; use indices in 0..{depth - 1}, or None for l-2..l"
        )
    return lay, tuple(int(i) for i in ups)


_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def select_params(
    net: nn.Module, layers: Sequence[int], param_names: Sequence[str], *, lora: bool
) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the modules ``param_names`` (e.g. "mlp.down_proj") in ``layers``:
    their weights (and biases), or only their LoRA adapters when ``lora``."""
    chosen, wanted = [], set(layers)
    for name, p in net.named_parameters():
        m = _LAYER_RE.search(name)
        if m is None or int(m.group(1)) not in wanted:
            continue
        rest = m.group(2)
        if any(rest.startswith(pn + ".") for pn in param_names) and ("lora_" in rest) == lora:
            chosen.append((name, p))
    if not chosen:
        modules = sorted(
            {
                _LAYER_RE.search(n).group(2).rsplit(".", 1)[0]
                for n, _ in net.named_parameters()
                if _LAYER_RE.search(n)
            }
        )
        raise ValueError(
            f"RMU: no parameter of {list(param_names)} in layers {list(layers)}; a decoder "
            f"layer's modules are named {modules[:12]}; pass some of those as param_names"
        )
    return chosen


def control_vector(dim: int, *, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """u: uniform on the positive orthant, unit norm, (dim,); its own generator, not the global."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(dim, generator=g, dtype=torch.float64)
    return (u / u.norm()).to(dtype)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks (``model.model.layers`` of a Llama, through a peft wrapper too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(trunk, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"RMU needs a decoder with a `layers` list (Llama-style), got {type(model).__name__}"
        )
    return layers


def layer_output(model: nn.Module, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """h^l: the output of decoder layer ``layer`` (= ``hidden_states[layer + 1]``), (B, T, d).

    Read with a forward hook on that block, removed before returning, while the decoder trunk
    runs (no vocabulary head). Not ``output_hidden_states=True``: transformers 5 answers it by
    installing permanent capture hooks on every block, which would stay on the returned model.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dev = next(model.parameters()).device
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        base.get_decoder()(
            input_ids=batch["input_ids"].to(dev),
            attention_mask=batch["attention_mask"].to(dev),
            use_cache=False,
        )
    finally:
        handle.remove()
    return seen[0]


def token_mask(batch: dict[str, torch.Tensor], tokens: str) -> torch.Tensor:
    """(B, T) float mask of the tokens a loss averages over: "target" or "all" real tokens."""
    if tokens == "target":
        return (batch["labels"] != -100).float()
    if tokens == "all":
        return batch["attention_mask"].float()
    raise ValueError(f"RMU: tokens={tokens!r}; use 'target' or 'all'")


def activation_mse(
    h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Mean over examples of the per-token ``||h - target||^2 / d`` averaged over ``mask``.

    ``reduction="mean"``: mean_b(s_b / n_b). ``"openunlearning"``: mean(s) * mean(1/n), the
    (B,)/(B, 1) broadcast of OpenUnlearning's RMU (kept to reproduce its numbers)."""
    mask = mask.to(h.device, h.dtype)
    per_tok = (h - target).pow(2).mean(-1)  # (B, T): mean over the hidden dimension
    s = (per_tok * mask).sum(1)  # (B,)
    n = mask.sum(1).clamp(min=1)  # (B,)
    if reduction == "mean":
        return (s / n).mean()
    if reduction == "openunlearning":
        return (s / n[:, None]).mean()  # (B, B): every s_i over every n_j
    raise ValueError(f"RMU: reduction={reduction!r}; use 'mean' or 'openunlearning'")


def freeze_except(net: nn.Module, keep: Sequence[tuple[str, nn.Parameter]]) -> None:
    """requires_grad only on ``keep`` (``adapted`` restores every flag on exit)."""
    ids = {id(p) for _, p in keep}
    for p in net.parameters():
        p.requires_grad_(id(p) in ids)


@METHODS.register("rmu")
@dataclass(frozen=True)
class RMU:
    supports: ClassVar[frozenset[str]] = frozenset({"lm"})
    steering_coeff: float = 6.5  # c: scale of the random target c*u (WMDP Zephyr: 6.5)
    alpha: float = 1200.0  # weight of the retain activation term (WMDP Zephyr: 1200)
    layer: int | None = None  # steered layer l (output); None = 7 clamped to n_layers - 1
    update_layers: tuple[int, ...] | None = None  # trained layers; None = l-2..l (clamped at 0)
    param_names: tuple[str, ...] = ("mlp.down_proj",)  # modules trained in update_layers
    tokens: Literal["target", "all"] = "target"  # tokens averaged: answer tokens, or all real
    reduction: Literal["mean", "openunlearning"] = "mean"  # mean(s/n); OU's mean(s)*mean(1/n)
    control_seed: int = 0  # seed of the random direction u (own generator, not the global RNG)
    reference: Literal["original"] = "original"  # h_ref: frozen copy of the input model
    lr: float = 5e-5  # AdamW lr (WMDP; MUSE's clean RMU uses 1e-3)
    epochs: float = 5.0  # passes over the forget set (MUSE runs: 5)
    batch_size: int = 4  # forget (and retain) examples per step (WMDP: 4)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (torch default, as WMDP)
    clip: float = 0.0  # max gradient norm; 0 disables (WMDP does not clip)
    lora_r: int = 0  # 0 = train the selected weights; > 0 = LoRA rank on those modules
    lora_alpha: float = 32.0  # LoRA scale numerator (update scaled by lora_alpha / lora_r)
    lora_lr: float = 1e-4  # lr used instead of `lr` when lora_r > 0

    def __post_init__(self) -> None:
        check_reference("rmu", self.reference, "RMU's retain term matches the original.")
        check_lora("rmu", self.lora_r, self.lora_alpha)
        if not self.param_names:
            raise ValueError("rmu: param_names is empty; the paper trains ('mlp.down_proj',)")
        if self.alpha < 0 or self.steering_coeff <= 0:
            raise ValueError(
                f"rmu: steering_coeff={self.steering_coeff} must be > 0 and alpha={self.alpha} "
                f">= 0 (WMDP: 6.5 and 1200)"
            )

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        check_lm_task(task, "rmu")
        layer, ups = resolve_layers(model, self.layer, self.update_layers, method="rmu")
        ref = frozen_copy(model)  # taken before LoRA: the adapters never touch the reference
        lr = self.lora_lr if self.lora_r > 0 else self.lr
        targets = tuple(sorted({pn.rsplit(".", 1)[-1] for pn in self.param_names}))
        with (
            preserve_mode(model),
            adapted(model, lora_r=self.lora_r, lora_alpha=self.lora_alpha, targets=targets) as net,
        ):
            freeze_except(net, select_params(net, ups, self.param_names, lora=self.lora_r > 0))
            u = control_vector(ref.config.hidden_size, seed=self.control_seed)
            net.train()
            params = trainable(net)
            opt = make_optimizer(params, "adamw", lr=lr, weight_decay=self.weight_decay)
            for step, (f, r) in enumerate(
                paired_batches(
                    task,
                    forget,
                    retain,
                    batch_size=self.batch_size,
                    epochs=self.epochs,
                    budget=budget,
                )
            ):
                loss = rmu_loss(
                    net,
                    ref,
                    f,
                    r,
                    u=u,
                    coeff=self.steering_coeff,
                    layer=layer,
                    alpha=self.alpha,
                    tokens=self.tokens,
                    reduction=self.reduction,
                )
                guarded_step(opt, loss, params, clip=self.clip, method="rmu", lr=lr, step=step)
        return model


def rmu_forget_loss(
    net: nn.Module,
    batch: Any,
    *,
    u: torch.Tensor,
    coeff: float,
    layer: int,
    tokens: str,
    reduction: str = "mean",
) -> torch.Tensor:
    """The forget term: activations of ``batch`` at layer ``layer`` towards ``coeff * u``."""
    h = layer_output(net, batch, layer)  # (B, T, d)
    return activation_mse(
        h, coeff * u.to(h.device, h.dtype), token_mask(batch, tokens), reduction=reduction
    )


def rmu_retain_loss(
    net: nn.Module, ref: nn.Module, batch: Any, *, layer: int, tokens: str, reduction: str = "mean"
) -> torch.Tensor:
    """The retain term: activations of ``batch`` at layer ``layer`` held at the reference's."""
    with torch.no_grad():
        h_ref = layer_output(ref, batch, layer)
    h = layer_output(net, batch, layer)
    return activation_mse(h, h_ref.to(h.device), token_mask(batch, tokens), reduction=reduction)


def rmu_loss(
    net: nn.Module,
    ref: nn.Module,
    forget: Any,
    retain: Any,
    *,
    u: torch.Tensor,
    coeff: float,
    layer: int,
    alpha: float,
    tokens: str = "target",
    reduction: str = "mean",
) -> torch.Tensor:
    """forget MSE to ``coeff * u`` + ``alpha`` x retain MSE to the reference (module docstring)."""
    fl = rmu_forget_loss(
        net, forget, u=u, coeff=coeff, layer=layer, tokens=tokens, reduction=reduction
    )
    rl = rmu_retain_loss(net, ref, retain, layer=layer, tokens=tokens, reduction=reduction)
    return fl + alpha * rl
