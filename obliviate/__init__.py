"""obliviate: make a trained model forget, then prove under attack whether it did.

Python API::

    import obliviate
    result = obliviate.run(obliviate.RunSpec("fmnist-class", "finetune", seed=0))
    print(result.metrics())

``obliviate.METHODS``, ``AUDITS`` and ``BENCHMARKS`` list what is registered.
"""

from __future__ import annotations

import logging
from typing import Any

from obliviate.registry import AUDITS, BENCHMARKS, METHODS
from obliviate.types import Budget, Report, RunSpec, Splits

__version__ = "0.1.0"
__all__ = ["AUDITS", "BENCHMARKS", "METHODS", "Budget", "Report", "RunSpec", "Splits", "run"]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def run(spec: RunSpec, **kwargs: Any) -> Any:
    """Run one spec (see ``obliviate.bench.runner.run`` for the keyword options)."""
    from obliviate.bench.runner import run as _run

    return _run(spec, **kwargs)
