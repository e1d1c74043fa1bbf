"""Scoring for membership audits, in numpy only: ROC, AUC, TPR at a fixed FPR.

Conventions: a higher score means "member"; ``is_member`` is 1 for members (e.g. the forget
set on the original model), 0 for non-members (held-out test data).
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "roc", "tpr_at"]


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every threshold, from (0, 0) to (1, 1); ties are one step."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member).astype(bool)
    if scores.shape != y.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and is_member {y.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs members and non-members (got {n_pos} and {n_neg})")
    if not np.isfinite(scores).all():
        raise ValueError("ROC scores must be finite (got NaN or inf)")
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp = np.cumsum(yy)[distinct]
    fp = np.cumsum(~yy)[distinct]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count one half)."""
    return float(np.trapezoid(tpr, fpr))


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at the last ROC point with FPR strictly below ``target`` (LiRA's convention)."""
    ok = np.flatnonzero(fpr < target)
    return float(tpr[ok[-1]]) if ok.size else 0.0
