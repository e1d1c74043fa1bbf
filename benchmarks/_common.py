"""What the benchmark scripts share: logging, threads, and where their runs and models go."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch


def setup(out: str | Path, threads: int) -> dict[str, Any]:
    """Log to stderr, set torch's threads, and return ``obliviate.run`` keyword arguments that
    keep runs and cached models under ``out`` and reuse finished runs (no reference rows)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    out = Path(out)
    return dict(runs_dir=out / "runs", cache_dir=out / "cache", exist="reuse", progress=False,
                references=False)  # fmt: skip
