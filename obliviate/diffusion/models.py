"""The text-to-image model: a tiny text encoder and a UNet with cross-attention on its output.

``T2IModel`` is ONE ``nn.Module`` holding ``text_encoder`` and ``unet``, so a method's
``model.parameters()`` covers both and ESD-x / UCE find their targets by name. Two UNets:

- ``"lean"`` (default): a small conv UNet written here. Its transformer blocks carry Stable
  Diffusion's module names (``down_blocks.1.attentions.0.transformer_blocks.0.attn1`` self-
  attention, ``...attn2.to_q / to_k / to_v / to_out.0`` cross-attention onto the text), so a
  method written against SD's names runs unchanged. Needs only torch.
- ``"diffusers"``: diffusers' ``UNet2DConditionModel`` configured at about 1 M parameters
  (block channels 32/64, one cross-attention down/up block). The import is lazy, so the rest
  of the package works without diffusers.

The text encoder is SD's shape at toy size: token + position embeddings, a pre-norm
transformer encoder, a final LayerNorm; its (B, L, D) output is the cross-attention context.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["T2IModel", "TextEncoder", "LeanUNet", "build_t2i_model", "count_params"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TextEncoder(nn.Module):
    """Token embeddings + a small transformer (trained jointly with the UNet)."""

    def __init__(
        self, vocab_size: int, max_len: int, dim: int = 64, layers: int = 2, heads: int = 4
    ):
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_layer_norm = nn.LayerNorm(dim)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) input embeddings (what concept inversion optimises)."""
        return self.token_embedding(tokens)

    def forward(self, tokens: torch.Tensor | None = None, *, embeds: torch.Tensor | None = None):
        """(B, L) ids, or (B, L, D) input embeddings -> (B, L, D) context."""
        h = self.embed(tokens) if embeds is None else embeds
        if h.shape[1] > self.max_len:
            raise ValueError(f"{h.shape[1]} tokens given; the text encoder takes {self.max_len}")
        h = h + self.position_embedding[: h.shape[1]]
        return self.final_layer_norm(self.encoder(h))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), as in DDPM / diffusers."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0)."""

    def __init__(self, dim: int, context_dim: int | None, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        b, n, d = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d/h)
        k = self.to_k(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.to_out[1](self.to_out[0](out))


class BasicTransformerBlock(nn.Module):
    """Self-attention (attn1), cross-attention on the text (attn2), feed-forward: SD's block."""

    def __init__(self, dim: int, context_dim: int, heads: int, self_attention: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if self_attention else None
        self.attn1 = Attention(dim, None, heads) if self_attention else None
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.attn1 is not None:
            x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """GroupNorm, 1x1 in-projection, one transformer block over the H*W tokens, out-projection,
    residual (diffusers' Transformer2DModel, one layer)."""

    def __init__(self, ch: int, context_dim: int, heads: int, groups: int, self_attention: bool):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(ch, context_dim, heads, self_attention)]
        )
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        for blk in self.transformer_blocks:
            t = blk(t, context)
        return x + self.proj_out(t.transpose(1, 2).reshape(b, c, h, w))


class _Block(nn.Module):
    """One resolution level: resnets, optional attentions, optional down/up-sampler."""

    def __init__(self) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()


class LeanUNet(nn.Module):
    """A lean conv UNet with cross-attention at the lower resolution(s), SD's module names.

    ``block_out_channels`` (c0, c1, ...): level i works at H / 2**i with one resnet on the way
    down and one on the way up (a skip per level); ``attention_levels`` name the levels with a
    transformer (attn1 self-attention, attn2 cross-attention) after each resnet, and the mid
    block (one resnet + one transformer) always has one. Down-sampling is a stride-2 conv that
    changes the width; up-sampling a 1x1 conv at the low resolution then nearest up-sampling,
    so no 3x3 conv runs on wide maps at full resolution (the cost that dominates on a CPU).
    """

    def __init__(
        self,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64),
        attention_levels: tuple[int, ...] = (1,),
        context_dim: int = 64,
        heads: int = 4,
        groups: int = 8,
        self_attention: bool = True,
    ):
        super().__init__()
        ch = block_out_channels
        temb = 4 * ch[0]
        self.in_channels = in_channels
        self._temb_dim = ch[0]
        self.time_embedding = nn.Sequential(
            nn.Linear(ch[0], temb), nn.SiLU(), nn.Linear(temb, temb)
        )
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        xf = dict(
            context_dim=context_dim, heads=heads, groups=groups, self_attention=self_attention
        )
        self.down_blocks = nn.ModuleList()
        for i, c in enumerate(ch):
            blk = _Block()
            blk.resnets.append(ResnetBlock(c, c, temb, groups))
            if i in attention_levels:
                blk.attentions.append(Transformer2D(c, **xf))
            last = i == len(ch) - 1
            blk.downsamplers = (
                None if last else nn.ModuleList([nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1)])
            )
            self.down_blocks.append(blk)
        self.mid_block = _Block()
        self.mid_block.resnets.append(ResnetBlock(ch[-1], ch[-1], temb, groups))
        self.mid_block.attentions.append(Transformer2D(ch[-1], **xf))
        self.up_blocks = nn.ModuleList()
        for i, c in reversed(list(enumerate(ch))):
            blk = _Block()
            blk.resnets.append(ResnetBlock(2 * c, c, temb, groups))  # input: [h, skip]
            if i in attention_levels:
                blk.attentions.append(Transformer2D(c, **xf))
            blk.upsamplers = nn.ModuleList([nn.Conv2d(c, ch[i - 1], 1)]) if i > 0 else None
            self.up_blocks.append(blk)
        self.conv_norm_out = nn.GroupNorm(groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temb = self.time_embedding(timestep_embedding(t, self._temb_dim))
        h = self.conv_in(x)
        skips = []
        for blk in self.down_blocks:
            h = blk.resnets[0](h, temb)
            for a in blk.attentions:
                h = a(h, context)
            skips.append(h)
            if blk.downsamplers is not None:
                h = blk.downsamplers[0](h)
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h, context)
        for blk in self.up_blocks:
            h = blk.resnets[0](torch.cat([h, skips.pop()], dim=1), temb)
            for a in blk.attentions:
                h = a(h, context)
            if blk.upsamplers is not None:
                h = F.interpolate(blk.upsamplers[0](h), scale_factor=2.0, mode="nearest")
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class _DiffusersUNet(nn.Module):
    """diffusers' UNet2DConditionModel behind the lean UNet's call signature."""

    def __init__(self, in_channels: int, size: int, block_out_channels: tuple[int, ...],
                 context_dim: int, heads: int, groups: int):  # fmt: skip
        super().__init__()
        try:
            from diffusers import UNet2DConditionModel
        except ImportError as e:
            raise ImportError(
                "the 'diffusers' UNet needs diffusers: pip install 'obliviate[diffusion]' "
                "(or use unet='lean', which needs only torch)"
            ) from e
        n = len(block_out_channels)
        self.model = UNet2DConditionModel(
            sample_size=size,
            in_channels=in_channels,
            out_channels=in_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
            layers_per_block=1,
            cross_attention_dim=context_dim,
            attention_head_dim=max(1, block_out_channels[-1] // heads),
            norm_num_groups=groups,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, encoder_hidden_states=context).sample


class T2IModel(nn.Module):
    """The whole text-to-image model: ``text_encoder`` + ``unet``.

    ``model(x_t, t, tokens)`` predicts the noise; ``context=`` bypasses the text encoder (UCE,
    concept inversion and guidance reuse an encoded context).
    """

    def __init__(self, text_encoder: TextEncoder, unet: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(tokens)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        tokens: torch.Tensor | None = None,
        *,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if context is None:
            if tokens is None:
                raise TypeError("T2IModel needs tokens or a context")
            context = self.text_encoder(tokens)
        if t.ndim == 0:
            t = t.expand(len(x))
        return self.unet(x, t, context)


def build_t2i_model(
    *,
    vocab_size: int,
    max_len: int,
    image_shape: tuple[int, int, int],
    unet: str = "lean",
    block_out_channels: tuple[int, ...] = (32, 64),
    text_dim: int = 64,
    text_layers: int = 2,
    heads: int = 4,
    groups: int = 8,
    options: dict[str, Any] | None = None,
) -> T2IModel:
    """A T2IModel with the named UNet ("lean" or "diffusers")."""
    c, h, w = image_shape
    if h != w or h % 2 ** (len(block_out_channels) - 1):
        raise ValueError(
            f"image shape {image_shape}: need square images divisible by "
            f"{2 ** (len(block_out_channels) - 1)} for {len(block_out_channels)} UNet levels"
        )
    te = TextEncoder(vocab_size, max_len, text_dim, text_layers, heads)
    opts = dict(options or {})
    if unet == "lean":
        net: nn.Module = LeanUNet(
            c, tuple(block_out_channels), context_dim=text_dim, heads=heads, groups=groups, **opts
        )
    elif unet == "diffusers":
        net = _DiffusersUNet(c, h, tuple(block_out_channels), text_dim, heads, groups)
    else:
        raise ValueError(f"unknown unet {unet!r}; use 'lean' or 'diffusers'")
    return T2IModel(te, net)
