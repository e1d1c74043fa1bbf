"""Run folders -> tables (mean and 95% CI over seeds, gap to the oracle), plots, one HTML page.

``collect(paths)`` reads run folders (any folder holding a ``manifest.json``); a method's run
brings in the original and oracle rows of its group (same benchmark, request, seed, audits),
found beside it under ``runs/<bench>/{original,oracle}/``. ``table(rows)`` aggregates them per
(benchmark, request, method, hyperparameters): the mean and a 95% Student-t confidence interval
over seeds of every audit metric and of the cost, and the gap to the oracle as the mean and CI
of the *paired* differences (each run minus the oracle of its own group, i.e. of its seed).
``write_report`` writes a self-contained HTML page (inline CSS, plots as base64 PNG), Markdown
and a long-format CSV; ``summary_text`` is the plain-text view of one run (``obliviate show``).

Verdicts: a number is "within the oracle's spread" when it lies in the 95% prediction interval
of a new retrain, mean +- t * s * sqrt(1 + 1/k) over the k oracle seeds found (k >= 2). With a
single oracle seed only sampling noise can be estimated: for proportions over the forget set
(forget accuracy, MIA-Efficacy) the 95% Wilson interval of the oracle's rate on n_forget
examples; the page says which one it used, or that none was available.

matplotlib (``pip install 'obliviate[report]'``) is imported inside the plotting functions only;
without it the page has the tables and says that the plots were left out.
"""

from __future__ import annotations

import base64
import csv as _csv
import datetime as _dt
import functools
import html as _html
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_DOCS",
    "Row",
    "Stat",
    "TableRow",
    "collect",
    "mean_ci",
    "prediction_interval",
    "summary_text",
    "table",
    "wilson_interval",
    "write_report",
]

REFERENCES = ("original", "oracle")
# SalUn's "Avg. Gap": mean |metric - oracle| over UA, RA, TA and MIA-Efficacy (UA = 1 - forget
# accuracy, so |UA gap| = |forget accuracy gap|).
AVG_GAP_KEYS = (
    "accuracy.forget_acc",
    "accuracy.retain_acc",
    "accuracy.test_acc",
    "mia-efficacy.efficacy",
)
# The overview table's columns (those present), before every membership audit's AUC.
OVERVIEW_KEYS = ("summary.avg_gap", *AVG_GAP_KEYS)
COST_KEYS = ("cost.seconds", "cost.ratio", "cost.steps")
# Metrics computed over the forget set, for the single-seed (sampling) spread.
_FORGET_PROPORTIONS = ("accuracy.forget_acc", "accuracy.unlearn_acc", "mia-efficacy.efficacy")


# -- statistics (the t-quantile and the mean CI are audits/stats.py's) ----------------------
@dataclass(frozen=True)
class Stat:
    """Mean of ``values`` and the half-width ``ci`` of its 95% t-interval (NaN when n < 2)."""

    mean: float
    ci: float
    n: int
    values: tuple[float, ...] = ()

    @property
    def low(self) -> float:
        return self.mean - self.ci

    @property
    def high(self) -> float:
        return self.mean + self.ci

    @property
    def excludes_zero(self) -> bool:
        """The CI lies on one side of 0 (for gaps: a significant difference to the oracle)."""
        return self.n >= 2 and math.isfinite(self.ci) and (self.low > 0 or self.high < 0)


def _finite(values: Iterable[float | None]) -> np.ndarray:
    return np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)


def mean_ci(values: Iterable[float], *, level: float = 0.95) -> Stat:
    """Mean and Student-t confidence half-width over seeds; non-finite values are dropped."""
    from obliviate.audits.stats import mean_ci as _mean_ci

    v = _finite(values)
    if v.size == 0:
        return Stat(float("nan"), float("nan"), 0, ())
    ci = _mean_ci(v, level=level)
    return Stat(ci.estimate, ci.high - ci.estimate, int(v.size), tuple(float(x) for x in v))


def prediction_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float]:
    """Where a new draw falls with probability ``level``: mean +- t * s * sqrt(1 + 1/k)."""
    from obliviate.audits.stats import t_quantile

    v = _finite(values)
    if v.size < 2:
        raise ValueError(f"a prediction interval needs at least 2 values, got {v.size}")
    t = t_quantile(0.5 + level / 2, v.size - 1)
    half = t * float(v.std(ddof=1)) * math.sqrt(1 + 1 / v.size)
    return float(v.mean() - half), float(v.mean() + half)


def wilson_interval(p: float, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# -- rows ------------------------------------------------------------------------------------
def _num(v: Any) -> float:
    """A metric value from report.json (the store writes NaN and inf as strings)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return float("nan")
    return float("nan")


def _short_value(v: Any) -> str:
    """A hyperparameter value for a label: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass(frozen=True)
class Row:
    """One run folder: its manifest, its report and where it is."""

    path: Path
    manifest: Mapping[str, Any]
    report: Mapping[str, Any]
    mtime: float = 0.0

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.manifest.get("spec", {})

    @property
    def benchmark(self) -> str:
        return str(self.spec.get("benchmark", "?"))

    @property
    def forget(self) -> str:
        return str(self.spec.get("forget"))

    @property
    def method(self) -> str:
        return str(self.spec.get("method", "?"))

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed", 0))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.spec.get("params", {}))

    @property
    def group(self) -> str:
        return str(self.manifest.get("group", ""))

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "?"))

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCES

    @property
    def label(self) -> str:
        """The method and the hyperparameters it was given (its defaults are not repeated)."""
        if not self.params:
            return self.method
        args = ", ".join(f"{k}={_short_value(v)}" for k, v in sorted(self.params.items()))
        return f"{self.method} ({args})"

    @property
    def config(self) -> tuple:
        """Runs with the same config are seeds of one table row."""
        return (
            self.benchmark,
            self.forget,
            self.method,
            _canon(self.params),
            self.spec.get("max_steps"),
            _canon(self.spec.get("audit_params", {})),
        )

    @functools.cached_property
    def metrics(self) -> dict[str, float]:
        """Every audit metric as "audit.metric", then the cost as "cost.*"."""
        out = {}
        for audit, rep in self.report.items():
            for k, v in (rep.get("metrics") or {}).items() if isinstance(rep, Mapping) else ():
                out[f"{audit}.{k}"] = _num(v)
        out.update(self.cost)
        return out

    @property
    def cost(self) -> dict[str, float]:
        t = self.manifest.get("timings", {})
        ratio = t.get("cost_ratio_to_retrain")
        return {
            "cost.seconds": _num(t.get("unlearn_s", float("nan"))),
            "cost.ratio": _num(ratio) if ratio is not None else float("nan"),
            "cost.steps": _num(self.manifest.get("steps", float("nan"))),
        }

    @property
    def n_forget(self) -> int | None:
        n = self.manifest.get("splits", {}).get("n_forget")
        return int(n) if n is not None else None

    def curves(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        return {
            a: rep["curves"]
            for a, rep in self.report.items()
            if isinstance(rep, Mapping) and rep.get("curves")
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The run's arrays.npz, read once (several plots use the same arrays)."""
        return self._arrays

    @functools.cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        f = self.path / "arrays.npz"
        if not f.exists():
            return {}
        from obliviate.store import load_arrays

        try:
            return load_arrays(f)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable arrays.npz (%s); its plots are left out", self.path, e)
            return {}


def _read_row(path: Path) -> Row | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable manifest.json (%s), skipped", path, e)
        return None
    try:
        report = json.loads((path / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        report = {}
    return Row(path, manifest, report, (path / "manifest.json").stat().st_mtime)


def _run_dirs(path: Path) -> list[Path]:
    if path.is_file() and path.name == "manifest.json":
        return [path.parent]
    if (path / "manifest.json").exists():
        return [path]
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Pass run folders, or folders that contain them (runs/)."
        )
    # Temporary folders of interrupted writes start with "." (see store.write_run): skip them.
    return sorted(
        p.parent
        for p in path.rglob("manifest.json")
        if not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def _references_beside(row: Row) -> list[Path]:
    """The original and oracle run folders of ``row``'s group, under runs/<bench>/."""
    bench_dir = row.path.parent.parent
    out = []
    for ref in REFERENCES:
        for mf in sorted((bench_dir / ref).glob(f"{row.seed}-*/manifest.json")):
            try:
                if json.loads(mf.read_text()).get("group") == row.group:
                    out.append(mf.parent)
            except (OSError, json.JSONDecodeError):
                continue
    return out


def collect(paths: Iterable[Path | str] | Path | str, *, references: bool = True) -> list[Row]:
    """Every run folder under ``paths`` (folders with a manifest.json), deduplicated.

    ``references``: also read the original and oracle rows of each method run's group from
    beside it (runs/<bench>/original|oracle/<seed>-*), so one run folder is a complete report.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    seen: dict[Path, Row] = {}
    for p in paths:
        for d in _run_dirs(Path(p)):
            key = d.resolve()
            if key not in seen and (row := _read_row(d)) is not None:
                seen[key] = row
    if references:
        for row in list(seen.values()):
            if row.is_reference:
                continue
            for d in _references_beside(row):
                if d.resolve() not in seen and (ref := _read_row(d)) is not None:
                    seen[d.resolve()] = ref
    rows = list(seen.values())
    log.info("collected %d run folders", len(rows))
    return rows


# -- the table -------------------------------------------------------------------------------
@dataclass
class TableRow:
    """One (benchmark, request, method, hyperparameters) aggregated over its seeds."""

    benchmark: str
    forget: str
    method: str
    label: str
    params: dict[str, Any]
    seeds: tuple[int, ...]
    paths: tuple[Path, ...]
    metrics: dict[str, Stat]  # "audit.metric", "cost.*", "summary.avg_gap"
    gaps: dict[str, Stat]  # the same keys: this row minus the oracle of the same group
    rows: tuple[Row, ...] = field(default_factory=tuple, repr=False)

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCES


def _merge(runs: Sequence[Row], values: Mapping[Path, Mapping[str, float]]) -> dict[str, float]:
    """Merge per-run dicts of one seed, the newest run winning (e.g. a later run with more
    audits); the unlearning of a seed does not depend on which audits ran."""
    out: dict[str, float] = {}
    for r in sorted(runs, key=lambda r: r.mtime):
        out.update(values.get(r.path, {}))
    return out


def _order_key(tr: TableRow) -> tuple:
    try:
        from obliviate.bench.grid import CLASSIFIER_METHODS

        order = {m: i for i, m in enumerate(CLASSIFIER_METHODS)}
    except ImportError:  # pragma: no cover
        order = {}
    ref = REFERENCES.index(tr.method) if tr.is_reference else len(REFERENCES)
    return (tr.benchmark, tr.forget, ref, order.get(tr.method, 999), tr.method, tr.label)


def table(rows: Sequence[Row]) -> list[TableRow]:
    """Aggregate finished runs per (benchmark, request, method, params) over seeds.

    Every metric becomes a Stat (mean, 95% CI over seeds); ``gaps`` are paired differences to
    the oracle of each run's own group (its seed), then aggregated the same way. Original and
    oracle rows come first in each (benchmark, request) block.
    """
    done = [r for r in rows if r.ok]
    oracles: dict[str, list[Row]] = {}
    for r in done:
        if r.method == "oracle":
            oracles.setdefault(r.group, []).append(r)
    metric_of = {r.path: r.metrics for r in done}
    gap_of: dict[Path, dict[str, float]] = {}
    for r in done:
        refs = sorted(oracles.get(r.group, []), key=lambda o: o.mtime)
        if not refs:
            continue
        om = refs[-1].metrics
        gap_of[r.path] = {
            k: v - om[k]
            for k, v in metric_of[r.path].items()
            if k in om and not k.startswith("cost.")
        }

    configs: dict[tuple, list[Row]] = {}
    for r in done:
        configs.setdefault(r.config, []).append(r)
    out = []
    for runs in configs.values():
        by_seed: dict[int, list[Row]] = {}
        for r in runs:
            by_seed.setdefault(r.seed, []).append(r)
        seeds = tuple(sorted(by_seed))
        per_seed = [_merge(by_seed[s], metric_of) for s in seeds]
        gaps_seed = [_merge(by_seed[s], gap_of) for s in seeds]
        for m, g in zip(per_seed, gaps_seed, strict=True):
            present = [abs(g[k]) for k in AVG_GAP_KEYS if k in g and math.isfinite(g[k])]
            if present:
                m["summary.avg_gap"] = float(np.mean(present))
        keys = _ordered_keys(per_seed)
        first = runs[0]
        out.append(
            TableRow(
                benchmark=first.benchmark,
                forget=first.forget,
                method=first.method,
                label=first.label,
                params=first.params,
                seeds=seeds,
                paths=tuple(r.path for r in sorted(runs, key=lambda r: (r.seed, r.mtime))),
                metrics={k: mean_ci(m[k] for m in per_seed if k in m) for k in keys},
                gaps={
                    k: mean_ci(g[k] for g in gaps_seed if k in g)
                    for k in keys
                    if any(k in g for g in gaps_seed)
                },
                rows=tuple(runs),
            )
        )
    return sorted(out, key=_order_key)


def _ordered_keys(dicts: Iterable[Mapping[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    keys = list(seen)
    first = [k for k in ("summary.avg_gap",) if k in seen]
    cost = [k for k in COST_KEYS if k in seen]
    return first + [k for k in keys if k not in first and k not in cost] + cost


# -- what every metric means -----------------------------------------------------------------
# key -> (one sentence, what "higher than the oracle" means, what "lower" means)
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "summary.avg_gap": (
        "SalUn's Avg. Gap: the mean absolute difference to the retrain oracle over forget, retain "
        "and test accuracy and MIA-Efficacy (those measured); 0 means the same as retraining.",
        "further from retraining on the basic measures",
        "closer to retraining",
    ),
    "accuracy.forget_acc": (
        "Accuracy on the forget set (1 - UA); the target is the oracle's value, which is about 0 "
        "after class forgetting and close to test accuracy after random forgetting.",
        "the model still recognises the forgotten examples better than a retrained model does",
        "the model fails on the forgotten examples more than a retrained model would "
        "(over-forgetting, itself a visible trace of unlearning)",
    ),
    "accuracy.unlearn_acc": (
        "UA, unlearning accuracy: 1 - accuracy on the forget set (SalUn's notation).",
        "more forgotten than retraining gives (over-forgetting)",
        "less forgotten than retraining gives",
    ),
    "accuracy.retain_acc": (
        "RA: accuracy on the retain set (the data the model should keep).",
        "fits the kept training data more tightly than a retrained model",
        "lost some of what it should have kept",
    ),
    "accuracy.test_acc": (
        "TA: accuracy on the whole held-out test set.",
        "generalises better than the retrained model",
        "lost utility on unseen data",
    ),
    "accuracy.forget_test_acc": (
        "Accuracy on the test examples of the forgotten class or sub-class (unseen examples of "
        "what was deleted); the oracle shows how much a model that never saw it still gets.",
        "still recognises the forgotten concept on unseen data more than a retrained model",
        "suppresses the forgotten concept more than a retrained model",
    ),
    "accuracy.retain_test_acc": (
        "Accuracy on the test examples of every other class or sub-class.",
        "generalises better on the kept classes than the retrained model",
        "lost utility on the kept classes",
    ),
    "mia-efficacy.efficacy": (
        "MIA-Efficacy (SalUn): the fraction of the forget set that an SVC on true-class "
        "confidence, trained on retain (members) vs test (non-members), calls non-member; "
        "higher looks more unseen; match the oracle, not 1.",
        "the forget set looks more unseen than after retraining (over-forgetting is detectable)",
        "the forget set still looks like training data: membership leaks",
    ),
    "mia-efficacy.svc_train_acc": (
        "Training accuracy of MIA-Efficacy's SVC on retain vs test: how separable members and "
        "non-members are at all for this model (0.5 = not at all); a diagnostic.",
        "members and non-members are easier to tell apart than on the retrained model",
        "members and non-members are harder to tell apart than on the retrained model",
    ),
    "cost.seconds": (
        "Wall-clock seconds spent unlearning (for the oracle row: seconds to retrain it).",
        "slower",
        "faster",
    ),
    "cost.ratio": (
        "Unlearning time divided by the time to retrain the oracle; below 1 is cheaper than "
        "retraining from scratch.",
        "costlier",
        "cheaper",
    ),
    "cost.steps": (
        "Optimizer steps taken during unlearning (counted by the runner; oracle: training steps).",
        "more steps",
        "fewer steps",
    ),
}
# By metric name alone, for audits without an entry above (membership attacks mostly).
_MIA_AUC = (
    "Area under the ROC curve of the attack telling forget examples (members) from held-out "
    "examples (non-members); 0.5 = cannot tell; compare with the oracle's value, which is not "
    "0.5 after class forgetting.",
    "the attack separates the forget set from unseen data better than on a retrained model: "
    "membership leaks",
    "the forget set looks less like training data than on a retrained model (a detectable "
    "over-forgetting)",
)
_BAL = (
    "the attack tells forget from unseen data better than on a retrained model",
    "the attack does worse than on a retrained model",
)
_NAME_DOCS: dict[str, tuple[str, str, str]] = {
    "auc": _MIA_AUC,
    "balanced_acc": (
        "Balanced accuracy of the attack at its best threshold (mean of TPR and TNR, chosen "
        "in-sample, so slightly optimistic); 0.5 is chance.",
        *_BAL,
    ),
    "yeom_balanced_acc": (
        "Balanced accuracy at Yeom's threshold (the mean signal on retain examples), fixed before "
        "seeing the forget set; 0.5 is chance.",
        *_BAL,
    ),
    "auc_ci_low": ("Lower end of the bootstrap 95% interval of the AUC (sampling noise).", "", ""),
    "auc_ci_high": ("Upper end of the bootstrap 95% interval of the AUC.", "", ""),
    "forget_mean_score": (
        "Mean attack signal on the forget set (higher = more member-like).",
        "the forget set looks more like training data than on a retrained model",
        "the forget set looks less like training data than on a retrained model",
    ),
    "heldout_mean_score": (
        "Mean attack signal on the held-out non-members.",
        "unseen data looks more member-like than on a retrained model",
        "unseen data looks less member-like than on a retrained model",
    ),
    "n_members": ("Number of member examples scored (the forget set).", "", ""),
    "n_nonmembers": ("Number of non-member examples scored (held out).", "", ""),
    "n_models": ("Models in each population.", "", ""),
}
_LEAK = (
    "more forget examples are flagged as members than on a retrained model: membership leaks",
    "fewer forget examples are flagged than on a retrained model",
)
_RELEARN = {
    "forget_acc_start": (
        "forget accuracy before any relearning step (k = 0)",
        "the model knows more of the forget set than a retrained one",
        "the model knows less of the forget set than a retrained one",
    ),
    "forget_acc": (
        "forget accuracy after the largest number of relearning steps",
        "the forgotten behaviour comes back faster than on a retrained model: it was hidden, "
        "not removed",
        "the forgotten behaviour comes back slower than on a retrained model",
    ),
    "oracle_forget_acc": (
        "the retrain oracle's forget accuracy after the same relearning (the target)",
        "",
        "",
    ),
    "gap": (
        "forget accuracy after relearning minus the oracle's under the same fine-tuning "
        "(0 = relearns like a model that never saw the data)",
        "relearns the forget set faster than retraining would: hidden, not removed",
        "relearns slower than the retrained model",
    ),
    "mia_auc": (
        "loss-threshold MIA AUC (forget vs held-out) after relearning",
        "membership comes back after relearning more than on a retrained model",
        "membership comes back less than on a retrained model",
    ),
    "oracle_mia_auc": ("the oracle's MIA AUC after the same relearning (the target)", "", ""),
    "test_acc": (
        "test accuracy after relearning",
        "generalises better after relearning than the retrained model",
        "generalises worse after relearning than the retrained model",
    ),
}
_RELEARN_SETTING = {
    "benign": "benign fine-tuning on retain data only",
    "samples": "fine-tuning on a handful of forget samples (evaluated on the other ones)",
}
_EPSILON = {
    "score": (
        "NeurIPS 2023 Unlearning Challenge score: forget quality F x RA/RA_retrain x "
        "TA/TA_retrain; a perfect unlearner scores about the ceiling, not 1.",
        "closer to retraining than two retrained populations are (rare)",
        "the unlearned population is told apart from retrained models more often",
    ),
    "forget_score": (
        "Forget quality F: mean per-example points (1, 1/2, 1/4... by bins of the per-example "
        "privacy epsilon between unlearned and retrained populations).",
        "harder to tell from retraining",
        "easier to tell from retraining",
    ),
    "ceiling_score": (
        "The same score for two independent retrained populations: the best attainable at this "
        "population size.",
        "",
        "",
    ),
    "ceiling_forget_score": ("F for two retrained populations (the ceiling of F).", "", ""),
    "forget_score_to_ceiling": (
        "F divided by its ceiling: 1 = as good as retraining.",
        "",
        "further from retraining than the ceiling",
    ),
    "median_epsilon": (
        "Median per-example epsilon of the unlearned vs retrained populations (natural log "
        "units; lower = harder to distinguish).",
        "easier to tell from retraining",
        "harder to tell from retraining",
    ),
    "ceiling_median_epsilon": ("Median per-example epsilon of retrained vs retrained.", "", ""),
    "frac_capped": (
        "Fraction of forget examples whose epsilon hit the cap (perfectly separable or peaky).",
        "more examples perfectly separate unlearned from retrained models",
        "fewer capped examples",
    ),
}


_MIA_NN = {
    "gap": (
        "MIA-NN score: |accuracy of a discriminator telling held-out inputs of the forgotten "
        "class from those of its nearest class, on this model - the same on the oracle|; 0 = as "
        "indistinguishable as after retraining (a distance to the oracle: 0 on its own row).",
        "the outputs on the forgotten class differ from retraining's: class membership leaks",
        "closer to retraining",
    ),
    "gap_se": ("Standard error of the MIA-NN gap over the cross-validation folds.", "", ""),
    "acc": (
        "Cross-validated accuracy of MIA-NN's discriminator on this model's outputs (forgotten "
        "class vs its nearest class).",
        "the forgotten class is easier to tell from its neighbour than after retraining",
        "the forgotten class is harder to tell from its neighbour than after retraining",
    ),
    "oracle_acc": ("The same discriminator's accuracy on the oracle's outputs.", "", ""),
    "tv": (
        "Mean total-variation distance between this model's and the oracle's predicted "
        "distributions on the forget set (0 = the same outputs; 0 on the oracle's own row).",
        "outputs on the forget set differ more from retraining",
        "outputs closer to retraining",
    ),
    "tv_test": (
        "The same total-variation distance on held-out inputs of the forgotten class.",
        "outputs on unseen forgotten-class inputs differ more from retraining",
        "outputs closer to retraining",
    ),
    "neighbour": ("The nearest class nn(f) found by the retrained references.", "", ""),
    "neighbour_share": (
        "Share of the retrained references' predictions on the forgotten class that go to nn(f).",
        "",
        "",
    ),
    "unlearned_neighbour_share": (
        "Share of this model's predictions on held-out forgotten-class inputs that go to nn(f) "
        "(compare with neighbour_share, the retrained models').",
        "sends more of the forgotten class to its neighbour than retraining does",
        "sends less of the forgotten class to its neighbour than retraining does",
    ),
}
# Metrics that already are a distance to the oracle (0 on the oracle's own row by construction):
# shown, but not judged against an oracle spread.
_ORACLE_RELATIVE = ("mia-nn.gap", "mia-nn.tv", "mia-nn.tv_test", "relearn.benign_gap",
                    "relearn.samples_gap")  # fmt: skip


def metric_doc(key: str) -> tuple[str, str, str]:
    """(sentence, meaning if higher than the oracle, meaning if lower) for "audit.metric".
    Empty meanings mark bookkeeping numbers (sizes, interval ends) that get no verdict."""
    if key in METRIC_DOCS:
        return METRIC_DOCS[key]
    audit, _, name = key.partition(".")
    if audit == "relearn":
        setting, _, rest = name.partition("_")
        if rest in _RELEARN and setting in _RELEARN_SETTING:
            doc, hi, lo = _RELEARN[rest]
            return (f"Relearning attack, {_RELEARN_SETTING[setting]}: {doc}.", hi, lo)
    if audit == "epsilon":
        if name in _EPSILON:
            return _EPSILON[name]
        if name.startswith("retrain_"):
            return (f"Mean {name[8:].replace('_', ' ')} of the retrained population.", "", "")
        if name.endswith("_acc"):
            return (
                f"Mean {name.replace('_', ' ')} of the unlearned population (the score's ratios).",
                "higher than the retrained models",
                "lower than the retrained models",
            )
    if audit == "mia-nn" and name in _MIA_NN:
        return _MIA_NN[name]
    if name.startswith("loo_"):
        doc, hi, lo = metric_doc(f"{audit}.{name[4:]}")
        return (
            f"Leave-one-out check of the {audit} attack itself (each shadow model as the target, "
            f"pooled): {doc[0].lower()}{doc[1:]}",
            "",
            "",
        )
    if name in _NAME_DOCS:
        return _NAME_DOCS[name]
    if name.startswith("auc_") and not name.startswith("auc_ci"):
        return (
            f"AUC of the {name[4:].replace('_', '-')} variant of the {audit} attack (forget set "
            f"vs held-out); the headline auc is the configured variant.",
            *_MIA_AUC[1:],
        )
    if name.endswith("auc"):
        return _MIA_AUC
    if name.startswith("bal") and "acc" in name:
        return _NAME_DOCS["balanced_acc"]
    if name.startswith("tpr@"):
        fpr = name[4:]
        return (
            f"True-positive rate of the {audit} attack at a false-positive rate of {fpr} (the "
            f"last ROC point below it): confident membership evidence; compare with the oracle.",
            *_LEAK,
        )
    return (f"`{name}` reported by the {audit} audit: {_audit_summary(audit)}", "higher", "lower")


def judged(key: str) -> bool:
    """Whether a metric gets a verdict against the oracle (sizes and interval ends do not)."""
    return not key.startswith("cost.") and bool(metric_doc(key)[1])


def _audit_summary(audit: str) -> str:
    """The first sentence of an audit's docstring (class, else module)."""
    try:
        from obliviate.registry import AUDITS

        cls = AUDITS.get(audit)
        doc = (cls.__doc__ or "").strip()
        if not doc or doc.startswith(getattr(cls, "__name__", type(cls).__name__) + "("):
            import sys

            doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    except (ValueError, ImportError, KeyError, AttributeError):
        doc = ""
    if not doc:
        return "see the audit's documentation (`obliviate list audits -v`)."
    first = " ".join(doc.split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".") + "."


# -- formatting ------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    a = abs(x)
    if a != 0 and a < 0.001:
        return f"{x:.1e}"
    if a < 10:
        return f"{x:.3f}"
    if a < 1000:
        return f"{x:.1f}"
    return f"{x:.0f}"


def _fmt_stat(s: Stat | None, *, signed: bool = False) -> str:
    if s is None or s.n == 0:
        return "—"
    m = _fmt(s.mean)
    if signed and math.isfinite(s.mean) and s.mean >= 0:
        m = "+" + m
    return m if s.n < 2 or not math.isfinite(s.ci) else f"{m} ± {_fmt(s.ci)}"


def _short(key: str, audit: str | None = None) -> str:
    """A column name: a short alias, or the metric without its audit's prefix in its table."""
    if audit is not None and key.startswith(audit + "."):
        return key[len(audit) + 1 :]
    names = {
        "summary.avg_gap": "Avg. Gap",
        "accuracy.forget_acc": "forget acc",
        "accuracy.retain_acc": "retain acc",
        "accuracy.test_acc": "test acc",
        "mia-efficacy.efficacy": "MIA-Efficacy",
        "cost.seconds": "seconds",
        "cost.ratio": "× retrain",
        "cost.steps": "steps",
    }
    return names.get(key, key)


def _sections(trs: Sequence[TableRow]) -> dict[tuple[str, str], list[TableRow]]:
    out: dict[tuple[str, str], list[TableRow]] = {}
    for tr in trs:
        out.setdefault((tr.benchmark, tr.forget), []).append(tr)
    return out


def _reference_copy(key: str) -> bool:
    """A metric an audit computed on the original or the oracle *inside* a method's run
    ("<audit>.original.<m>", "<audit>.oracle.<m>"), so that one run folder reads on its own.
    The tables show those models as their own rows, so these columns would repeat them; they
    stay in the CSV and in the single-run evidence page."""
    return key.partition(".")[2].startswith(("original.", "oracle."))


def _audits_of(trs: Sequence[TableRow]) -> dict[str, list[str]]:
    """audit -> its metric keys, in order of appearance (reference copies left out)."""
    out: dict[str, list[str]] = {}
    for tr in trs:
        for k in tr.metrics:
            audit = k.partition(".")[0]
            if audit in ("summary", "cost") or _reference_copy(k):
                continue
            out.setdefault(audit, [])
            if k not in out[audit]:
                out[audit].append(k)
    return out


def _overview_keys(trs: Sequence[TableRow]) -> list[str]:
    present = {k for tr in trs for k in tr.metrics}
    keys = [k for k in OVERVIEW_KEYS if k in present]
    keys += sorted(
        k for k in present if k.endswith(".auc") and k not in keys and not _reference_copy(k)
    )
    keys += [k for k in _OVERVIEW_EXTRA if k in present]
    return keys + [k for k in COST_KEYS if k in present]


# Headline numbers of the audits that are not membership AUCs, when they ran.
_OVERVIEW_EXTRA = ("mia-nn.gap", "relearn.benign_gap", "relearn.samples_gap", "epsilon.score")


# -- verdicts (one run against the oracle) ---------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    key: str
    original: float
    oracle: float
    value: float
    low: float  # the oracle's spread (NaN when unknown)
    high: float
    source: str  # "seeds (k=..)", "sampling (n=..)" or ""

    @property
    def gap(self) -> float:
        return self.value - self.oracle

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def within(self) -> bool:
        return self.known and self.low - 1e-12 <= self.value <= self.high + 1e-12

    def sentence(self) -> str:
        _, higher, lower = metric_doc(self.key)
        if not math.isfinite(self.value) or not math.isfinite(self.oracle):
            return "not comparable: the oracle row lacks this measure."
        if self.source == "relative":
            return (
                f"already a distance to the oracle ({_fmt(self.value)}; 0 on the oracle's own "
                f"row by construction): lower is closer to retraining; read it beside the "
                f"audit's own noise estimate."
            )
        if not self.known:
            return (
                f"Δ = {self.gap:+.3f}; the oracle's spread is unknown (one oracle seed): run "
                f"more seeds to judge it."
            )
        if self.within:
            return (
                f"within the oracle's spread [{_fmt(self.low)}, {_fmt(self.high)}]: on this "
                f"measure the model is indistinguishable from one retrained without the forget set."
            )
        side = "above" if self.value > self.high else "below"
        meaning = higher if self.value > self.high else lower
        return (
            f"outside the oracle's spread ({side} [{_fmt(self.low)}, {_fmt(self.high)}], "
            f"Δ = {self.gap:+.3f}): {meaning}."
        )


def _oracle_pool(row: Row, rows: Sequence[Row]) -> dict[str, list[float]]:
    """metric -> its values over every oracle seed comparable with ``row``'s (same benchmark,
    request, budget and audit settings), from ``rows`` and from beside the run folder."""
    cands = {r.path.resolve(): r for r in rows if r.method == "oracle" and r.ok}
    for mf in sorted((row.path.parent.parent / "oracle").glob("*/manifest.json")):
        if mf.parent.resolve() not in cands and (r := _read_row(mf.parent)) is not None and r.ok:
            cands[mf.parent.resolve()] = r
    same = (
        row.benchmark,
        row.forget,
        row.spec.get("max_steps"),
        _canon(row.spec.get("audit_params", {})),
    )
    by_seed: dict[int, list[Row]] = {}
    for r in cands.values():
        if (
            r.benchmark,
            r.forget,
            r.spec.get("max_steps"),
            _canon(r.spec.get("audit_params", {})),
        ) == same:
            by_seed.setdefault(r.seed, []).append(r)
    metric_of = {r.path: r.metrics for rs in by_seed.values() for r in rs}
    pool: dict[str, list[float]] = {}
    for s in sorted(by_seed):
        for k, v in _merge(by_seed[s], metric_of).items():
            pool.setdefault(k, []).append(v)
    return pool


def verdicts(row: Row, rows: Sequence[Row]) -> list[Verdict]:
    """Each audit metric of ``row`` against the oracle of its group and the oracle's spread."""
    group = [r for r in rows if r.group == row.group and r.ok]
    refs = {}
    for ref in REFERENCES:
        cand = [r for r in group if r.method == ref]
        if not cand:
            cand = [r for r in map(_read_row, _references_beside(row)) if r and r.method == ref]
        refs[ref] = max(cand, key=lambda r: r.mtime).metrics if cand else {}
    pool = _oracle_pool(row, rows)
    out = []
    for k, v in row.metrics.items():
        if not judged(k):
            continue
        oracle = refs["oracle"].get(k, float("nan"))
        if k in _ORACLE_RELATIVE:
            out.append(Verdict(k, refs["original"].get(k, float("nan")), oracle, v,
                               float("nan"), float("nan"), "relative"))  # fmt: skip
            continue
        low, high, sources = math.inf, -math.inf, []
        values = [x for x in pool.get(k, []) if math.isfinite(x)]
        if len(values) >= 2:
            lo, hi = prediction_interval(values)
            low, high = min(low, lo), max(high, hi)
            sources.append(f"seeds (k={len(values)})")
        if k in _FORGET_PROPORTIONS and row.n_forget and math.isfinite(oracle):
            # sampling noise of a rate on n_forget examples; widens a degenerate seed interval
            # (e.g. every oracle seed at exactly 0 forget accuracy)
            lo, hi = wilson_interval(min(1.0, max(0.0, oracle)), row.n_forget)
            low, high = min(low, lo), max(high, hi)
            sources.append(f"sampling (n={row.n_forget})")
        if not sources:
            low = high = float("nan")
        elif _bounded(k):
            low, high = max(0.0, low), min(1.0, high)
        out.append(
            Verdict(
                k, refs["original"].get(k, float("nan")), oracle, v, low, high, " + ".join(sources)
            )  # fmt: skip
        )
    return out


def _bounded(key: str) -> bool:
    """Metrics that are rates in [0, 1] (their intervals are clipped to it)."""
    name = key.partition(".")[2]
    return any(t in name for t in ("acc", "auc", "efficacy", "tpr", "frac")) or name in (
        "score",
        "forget_score",
    )


# -- summary_text (obliviate show) -----------------------------------------------------------
def summary_text(run_dir: Path | str) -> str:
    """A plain-text table of one run beside the original and oracle rows of its group."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise FileNotFoundError(
            f"{run_dir} is not a run folder (no manifest.json). Run folders live under "
            f"runs/<benchmark>/<method>/<seed>-<hash>/; `obliviate report` reads many at once."
        )
    rows = collect([run_dir])
    row = next(r for r in rows if r.path.resolve() == run_dir.resolve())
    m = row.manifest
    sp = m.get("splits", {})
    t = m.get("timings", {})
    lines = [
        f"run      {row.path}  ({row.status})",
        f"request  {row.benchmark} · {row.forget} · {sp.get('n_forget', '?')} forget / "
        f"{sp.get('n_retain', '?')} retain · seed {row.seed}",
        f"method   {row.method}  "
        + " ".join(f"{k}={v}" for k, v in sorted(m.get("method_params", {}).items())),
        f"cost     {m.get('steps', '?')} steps · {_fmt(_num(t.get('unlearn_s')))} s · "
        f"{_fmt(row.cost['cost.ratio'])}x retrain (oracle trained in "
        f"{_fmt(_num(t.get('oracle_train_s')))} s)",
    ]
    if not row.ok:
        lines.append(f"error    {m.get('error', 'unknown')}")
    vs = verdicts(row, rows) if row.ok else []
    if vs:
        w = max(len(v.key) for v in vs) + 2
        lines += ["", f"{'metric':<{w}}{'original':>10}{'oracle':>10}{'this run':>10}"
                  f"{'Δ oracle':>10}  {'oracle spread':<17} verdict"]  # fmt: skip
        for v in vs:
            if row.method == "oracle":
                verdict = "(the oracle itself)"
            elif v.source == "relative":
                verdict = "(a distance to the oracle)"
            elif not v.known:
                verdict = "spread unknown"
            else:
                verdict = "within spread" if v.within else "OUTSIDE spread"
            spread = f"[{_fmt(v.low)}, {_fmt(v.high)}]" if v.known else "—"
            lines.append(
                f"{v.key:<{w}}{_fmt(v.original):>10}{_fmt(v.oracle):>10}{_fmt(v.value):>10}"
                f"{_fmt(v.gap) if math.isfinite(v.gap) else '—':>10}  {spread:<17} {verdict}"
            )
        lines += [
            "",
            "oracle spread: 95% prediction interval of one more retrain over the oracle seeds "
            "beside this run,",
            "widened by the Wilson interval of the oracle's rate for forget-set rates (see "
            "`obliviate report` for the full page).",
        ]
    if not any(r.method == "oracle" and r.group == row.group for r in rows):
        lines.append("\n(no oracle row of this group was found beside the run folder)")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the optional [report] extra, imported here only

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_REF_STYLE = {
    "original": {"color": "#7f7f7f", "linestyle": ":", "linewidth": 2.0},
    "oracle": {"color": "#000000", "linestyle": "--", "linewidth": 2.0},
}
_PALETTE = (
    "#1f77b4 #d62728 #2ca02c #ff7f0e #9467bd #8c564b #e377c2 #17becf #bcbd22 "
    "#393b79 #ad494a #637939 #8c6d31 #7b4173 #3182bd #e6550d"
).split()


def _styles(trs: Sequence[TableRow]) -> dict[str, dict[str, Any]]:
    out, i = {}, 0
    for tr in trs:
        if tr.is_reference:
            out[tr.label] = dict(_REF_STYLE[tr.method])
        else:
            out[tr.label] = {
                "color": _PALETTE[i % len(_PALETTE)],
                "linestyle": "-",
                "linewidth": 1.6,
            }
            i += 1
    return out


def _first_run(tr: TableRow) -> Row:
    return min(tr.rows, key=lambda r: (r.seed, -r.mtime))


def _roc_pairs(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (scores, is_member) for every "<audit>[.<name>].scores" with its membership."""
    out = {}
    for k, scores in arrays.items():
        if not k.endswith("scores"):
            continue
        stem = k[: -len("scores")]
        member = arrays.get(stem + "is_member")
        if member is None:
            member = arrays.get(k.partition(".")[0] + ".is_member")
        if member is None or member.shape != scores.shape or scores.ndim != 1:
            continue
        if _reference_copy(stem):
            continue  # the original's / oracle's own scores: drawn from their own rows
        out[stem.rstrip("._") or k] = (scores, member)
    return out


def _first_with(tr: TableRow, pick: Any) -> Any:
    """The first run of a table row (seed order) for which ``pick(run)`` is not None: a row may
    merge runs whose audit lists differ (e.g. a relearn-only run beside the default one)."""
    return next((v for r in tr.rows if (v := pick(r)) is not None), None)


def plot_roc(trs: Sequence[TableRow], name: str) -> str | None:
    """ROC curves on log-log axes of one membership score, a line per table row (first seed)."""
    from obliviate.audits.stats import auc, roc

    styles = _styles(trs)
    fig = _figure(6.4, 5.0)
    ax = fig.subplots()
    lo = 1.0
    drawn = 0
    for tr in trs:
        pair = _first_with(tr, lambda r: _roc_pairs(r.arrays()).get(name))
        if pair is None:
            continue
        scores, member = pair
        member = np.asarray(member).astype(bool)
        if member.all() or not member.any() or not np.isfinite(scores).all():
            continue
        fpr, tpr = roc(scores, member)
        floor = 0.5 / max(1, int((~member).sum()))
        lo = min(lo, floor)
        ax.plot(
            np.clip(fpr, floor, 1), np.clip(tpr, floor, 1),
            label=f"{tr.label} (AUC {auc(fpr, tpr):.3f})", **styles[tr.label],
        )  # fmt: skip
        drawn += 1
    if not drawn:
        return None
    ax.plot([lo, 1], [lo, 1], color="#bbbbbb", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1.05)
    ax.set_xlabel("false-positive rate (held-out test called member)")
    ax.set_ylabel("true-positive rate (forget set called member)")
    ax.set_title(f"{name}: ROC, log-log (lower left = confident attacks)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


_X_KEYS = ("steps", "step", "k", "x", "epoch", "epochs", "bin_start")


def _curve_panels(trs: Sequence[TableRow], audit: str) -> list[tuple[str, str, str | None]]:
    """(curve name, series, x key) panels of an audit's curves. A series "oracle_<s>" (the
    oracle given the same treatment, as the relearn audit stores it) joins the panel of <s>."""
    panels: list[tuple[str, str, str | None]] = []
    for tr in trs:
        for r in tr.rows:
            for name, curve in r.curves().get(audit, {}).items():
                if "fpr" in curve and "tpr" in curve:
                    continue  # a ROC: drawn on log-log axes from the per-example scores
                xkey = next((k for k in _X_KEYS if k in curve), None)
                for s in curve:
                    if s == xkey or (s.startswith("oracle_") and s[7:] in curve):
                        continue
                    if (name, s, xkey) not in panels:
                        panels.append((name, s, xkey))
    return panels


def _mean_series(curves: list[Mapping[str, list[float]]], s: str, xkey: str | None) -> Any:
    """(x, mean of series ``s`` over the seeds' curves that share the first one's x)."""
    curves = [c for c in curves if s in c]
    if not curves:
        return None
    n = len(curves[0][s])
    x = np.asarray(curves[0][xkey], dtype=float) if xkey else np.arange(n, dtype=float)
    ys = [
        np.asarray(c[s], dtype=float)
        for c in curves
        if len(c[s]) == n and (xkey is None or np.array_equal(np.asarray(c[xkey], dtype=float), x))
    ]
    return (x, np.mean(ys, axis=0)) if ys and len(x) == n else None


def plot_curves(trs: Sequence[TableRow], audit: str) -> str | None:
    """An audit's ``curves`` (relearning: forget accuracy, MIA AUC and test accuracy against
    fine-tuning steps): a panel per (curve, series), a line per table row, the mean over seeds.
    The oracle's line comes from the oracle row, else from the "oracle_<series>" the method rows
    carry (the oracle given the same fine-tuning)."""
    panels = _curve_panels(trs, audit)
    if not panels:
        return None
    styles = _styles(trs)
    has_oracle_row = any(tr.method == "oracle" for tr in trs)
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(4.6 * cols, 3.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, (name, s, xkey) in zip(axes, panels, strict=False):
        drew_oracle = False
        for tr in trs:
            curves = [r.curves().get(audit, {}).get(name) for r in tr.rows]
            curves = [c for c in curves if c]
            if (xy := _mean_series(curves, s, xkey)) is not None:
                ax.plot(*xy, marker="o", markersize=3, label=tr.label, **styles[tr.label])
                drew_oracle |= tr.method == "oracle"
            if not has_oracle_row and not drew_oracle and not tr.is_reference:
                if (xy := _mean_series(curves, f"oracle_{s}", xkey)) is not None:
                    ax.plot(*xy, marker="s", markersize=3, label="oracle", **_REF_STYLE["oracle"])
                    drew_oracle = True
        ax.set_title(f"{audit} · {name}: {s}", fontsize=10)
        ax.set_xlabel(xkey or "index")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes)
    return _png(fig)


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend under the whole figure, each label once."""
    seen: dict[str, Any] = {}
    for ax in np.atleast_1d(axes).ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        ncols = min(4, len(seen))
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=ncols,
                   fontsize=8, frameon=False)  # fmt: skip


def _class_names(row: Row, n: int) -> list[str]:
    if row.manifest.get("data", {}).get("dataset") == "fashion-mnist":
        try:
            from obliviate.vision.data import FASHION_CLASSES

            if len(FASHION_CLASSES) == n:
                return list(FASHION_CLASSES)
        except ImportError:  # pragma: no cover
            pass
    return [str(i) for i in range(n)]


def plot_class_confidence(trs: Sequence[TableRow]) -> str | None:
    """Mean predicted probability per class on the forget inputs (accuracy.forget_mean_probs):
    where the forgotten examples' probability mass goes, per table row, mean over seeds."""
    data: list[tuple[TableRow, np.ndarray]] = []
    for tr in trs:
        vecs = [r.arrays().get("accuracy.forget_mean_probs") for r in tr.rows]
        vecs = [np.asarray(v, dtype=float) for v in vecs if v is not None and np.ndim(v) == 1]
        if vecs and all(len(v) == len(vecs[0]) for v in vecs):
            data.append((tr, np.mean(vecs, axis=0)))
    if not data:
        return None
    n = len(data[0][1])
    data = [(tr, v) for tr, v in data if len(v) == n]
    names = _class_names(data[0][0].rows[0], n)
    forgotten = data[0][0].rows[0].manifest.get("splits", {}).get("class")
    if len(data) <= 4:
        fig = _figure(max(6.4, 0.75 * n + 2), 4.0)
        ax = fig.subplots()
        width = 0.8 / len(data)
        styles = _styles([tr for tr, _ in data])
        for i, (tr, v) in enumerate(data):
            ax.bar(
                np.arange(n) + (i - (len(data) - 1) / 2) * width, v, width,
                label=tr.label, color=styles[tr.label]["color"],
            )  # fmt: skip
        ax.set_xticks(np.arange(n), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("mean predicted probability")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    else:
        mat = np.stack([v for _, v in data])
        fig = _figure(max(6.4, 0.7 * n + 3), 0.42 * len(data) + 1.6)
        ax = fig.subplots()
        im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(np.arange(n), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(data)), [tr.label for tr, _ in data], fontsize=8)
        for i in range(mat.shape[0]):
            for j in range(n):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] < 0.5 else "black")  # fmt: skip
        fig.colorbar(im, ax=ax, shrink=0.8)
    if isinstance(forgotten, int) and 0 <= forgotten < n:
        ax.get_xticklabels()[forgotten].set_color("#d62728")
        ax.get_xticklabels()[forgotten].set_fontweight("bold")
    ax.set_title("where the forget set's probability goes (forgotten class in red)", fontsize=10)
    return _png(fig)


def _image_keys(trs: Sequence[TableRow]) -> list[str]:
    """Every per-run array that holds images: a key containing "images", shape (N, C, H, W)."""
    keys: list[str] = []
    for tr in trs:
        for r in tr.rows:
            for k, v in r.arrays().items():
                if "images" in k and np.ndim(v) == 4 and v.shape[1] in (1, 3) and k not in keys:
                    keys.append(k)
    return keys


def _to_rgb(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] (diffusion samples) or [0, 1] -> (N, H, W, 3) in [0, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if x.min() < 0:
        x = (x + 1) / 2
    x = np.clip(x, 0, 1).transpose(0, 2, 3, 1)
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


def plot_images(trs: Sequence[TableRow], key: str, *, n: int = 8) -> str | None:
    """A sample grid: one line of up to ``n`` images per table row (first seed), so the
    original, the oracle and every method are seen side by side under the same seeds."""
    lines = [(tr.label, _first_with(tr, lambda r: r.arrays().get(key))) for tr in trs]
    lines = [(lab, _to_rgb(v[:n])) for lab, v in lines if v is not None and np.ndim(v) == 4]
    if not lines:
        return None
    cols = max(len(v) for _, v in lines)
    fig = _figure(0.9 * cols + 1.6, 0.95 * len(lines) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(lines), cols, squeeze=False))
    for i, (label, imgs) in enumerate(lines):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j], interpolation="nearest")
            else:
                ax.set_visible(False)
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(key, fontsize=10)
    return _png(fig)


_FACT_BEFORE, _FACT_AFTER, _FACT_MATCH = (
    "lm-qa.original.forget.prob",
    "lm-qa.unlearned.forget.prob",
    "lm-qa.unlearned.forget.match",
)


def plot_fact_recall(trs: Sequence[TableRow], *, floor: float = 1e-6) -> str | None:
    """Per forget fact (language models, lm-qa): the answer's probability under the original
    (x) against the row's model (y), log-log, one panel per row (first seed). Points under the
    diagonal lost probability; filled points are facts the model still answers exactly, so a
    method that forgets on average but keeps a few facts shows them at a glance."""
    panels = []
    for tr in trs:
        if tr.method == "original":
            continue
        arr = _first_with(tr, lambda r: r.arrays() if _FACT_AFTER in r.arrays() else None)
        if arr is not None and _FACT_BEFORE in arr:
            panels.append((tr.label, arr))
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.3 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, arr) in zip(axes, panels, strict=False):
        x = np.clip(np.asarray(arr[_FACT_BEFORE], dtype=float), floor, 1)
        y = np.clip(np.asarray(arr[_FACT_AFTER], dtype=float), floor, 1)
        kept = np.asarray(arr.get(_FACT_MATCH, np.zeros_like(y)), dtype=float) > 0
        ax.scatter(x[~kept], y[~kept], s=14, facecolors="none", edgecolors="#1f77b4",
                   label="no longer answered")  # fmt: skip
        ax.scatter(x[kept], y[kept], s=14, color="#d62728", label="still answered")
        ax.plot([floor, 1], [floor, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1.5)
        ax.set_ylim(floor, 1.5)
        ax.set_title(f"{label}: {int(kept.sum())}/{len(kept)} still answered", fontsize=9)
        ax.set_xlabel("P(answer), original", fontsize=8)
        ax.set_ylabel("P(answer), this model", fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper left")
    return _png(fig)


# concept-inversion's arms: (metric suffix, label, marker)
_CI_ARMS = (
    ("", "unlearned alone", "o"),
    ("_neg_word", "negative prompt: word", "v"),
    ("_sld_word", "SLD: word", "^"),
    ("_neg_cstar", "negative prompt: c*", "s"),
    ("_sld_cstar", "SLD: c*", "D"),
)


def plot_dsr_pp(trs: Sequence[TableRow]) -> str | None:
    """Concept-inversion defence: success rate (DSR, 1 - concept rate on attack prompts)
    against prompt preservation (class accuracy on unrelated prompts), one point per row and
    guidance arm, mean over seeds with 95% CIs: a defence moves points up without moving them
    left."""
    rows = [tr for tr in trs if "concept-inversion.dsr" in tr.metrics]
    if not rows:
        return None
    styles = _styles(trs)
    fig = _figure(6.4, 4.6)
    ax = fig.subplots()
    for tr in rows:
        for arm, _, marker in _CI_ARMS:
            x = tr.metrics.get(f"concept-inversion.pp_class{arm}")
            y = tr.metrics.get(f"concept-inversion.dsr{arm}")
            if x is None or y is None:
                continue
            ax.errorbar(x.mean, y.mean, xerr=x.ci if math.isfinite(x.ci) else None,
                        yerr=y.ci if math.isfinite(y.ci) else None, fmt=marker, capsize=2,
                        color=styles[tr.label]["color"], ms=6)  # fmt: skip
        ax.plot([], [], "-", color=styles[tr.label]["color"], lw=3, label=tr.label)  # legend
    for _, label, marker in _CI_ARMS:  # marker legend, colour-free
        ax.plot([], [], marker, color="0.3", label=label)
    ax.set_xlabel("prompt preservation (class accuracy, unrelated prompts)")
    ax.set_ylabel("defence success rate (synonym prompts)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("safety guidance on the unlearned model: DSR vs PP", fontsize=10)
    return _png(fig)


def plot_cost(trs: Sequence[TableRow]) -> str | None:
    """Accuracy (and Avg. Gap) against cost relative to retraining, one point per row."""
    panels = [
        k
        for k in ("accuracy.test_acc", "accuracy.forget_acc", "summary.avg_gap")
        if any(k in tr.metrics for tr in trs)
    ]
    pts = [tr for tr in trs if "cost.ratio" in tr.metrics and tr.metrics["cost.ratio"].mean > 0]
    if not panels or not pts:
        return None
    styles = _styles(trs)
    fig = _figure(4.4 * len(panels), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, key in zip(axes, panels, strict=True):
        for tr in pts:
            if key not in tr.metrics:
                continue
            x, y = tr.metrics["cost.ratio"], tr.metrics[key]
            err = y.ci if math.isfinite(y.ci) else None
            xerr = x.ci if math.isfinite(x.ci) else None
            marker = "s" if tr.is_reference else "o"
            ax.errorbar(x.mean, y.mean, yerr=err, xerr=xerr, fmt=marker, capsize=3,
                        color=styles[tr.label]["color"], label=tr.label)  # fmt: skip
        for tr in trs:
            if tr.method == "original" and key in tr.metrics:
                ax.axhline(tr.metrics[key].mean, **_REF_STYLE["original"], label="original")
        ax.set_xscale("log")
        ax.set_xlabel("cost: unlearning time / retraining time")
        ax.set_ylabel(_short(key))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{_short(key)} vs cost", fontsize=10)
    _figure_legend(fig, axes)
    return _png(fig)


def _plots(trs: Sequence[TableRow]) -> list[tuple[str, str, str]]:
    """(kind, title, base64 PNG) for one (benchmark, request) block."""
    out: list[tuple[str, str, str]] = []
    names: list[str] = []
    for tr in trs:
        for r in tr.rows:
            names += [n for n in _roc_pairs(r.arrays()) if n not in names]
    for n in names:
        if (png := plot_roc(trs, n)) is not None:
            out.append(("roc", f"ROC of {n} (log-log)", png))
    audits: list[str] = []
    for tr in trs:
        for r in tr.rows:
            audits += [a for a in r.curves() if a not in audits]
    for a in audits:
        if (png := plot_curves(trs, a)) is not None:
            out.append(("curves", f"{a} curves", png))
    for k in _image_keys(trs):
        if (png := plot_images(trs, k)) is not None:
            out.append(("images", f"samples: {k}", png))
    if (png := plot_class_confidence(trs)) is not None:
        out.append(("class-confidence", "per-class confidence on the forget set", png))
    if (png := plot_dsr_pp(trs)) is not None:
        out.append(("dsr-pp", "concept-inversion: defence success vs prompt preservation", png))
    if (png := plot_fact_recall(trs)) is not None:
        out.append(("fact-recall", "per-fact answer probability, before vs after", png))
    if (png := plot_cost(trs)) is not None:
        out.append(("cost", "accuracy vs cost", png))
    return out


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1b1b1b;
 max-width:1200px;margin:24px auto;padding:0 20px;background:#fff}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:34px;border-bottom:2px solid
 #e3e3e3;padding-bottom:4px}h3{font-size:15px;margin-top:22px}
.meta{color:#666;font-size:12px}
table{border-collapse:collapse;margin:10px 0 18px;font-size:12.5px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f5f8;text-align:center}td.l,th.l{text-align:left}
tr.ref td{background:#fafafa;font-style:italic}
.d{display:block;font-size:11px;color:#555}.sig{color:#b3261e;font-weight:600}
.ok{color:#1e7b34;font-weight:600}.bad{color:#b3261e;font-weight:600}.unk{color:#8a6d00}
.box{border:1px solid #d8dee8;background:#f7f9fc;border-radius:6px;padding:10px 16px;margin:12px 0}
.note{background:#fff7e0;border:1px solid #f0d98c;border-radius:6px;padding:8px 14px}
figure{margin:12px 0 24px}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}dl.gl dt{font-family:monospace;font-weight:600;margin-top:6px}
dl.gl dd{margin-left:18px}code{background:#f1f1f1;padding:0 3px;border-radius:3px}
"""


def _e(x: Any) -> str:
    return _html.escape(str(x))


def _cell(tr: TableRow, key: str, *, gap: bool = True) -> str:
    s = tr.metrics.get(key)
    body = _e(_fmt_stat(s))
    if key.startswith("cost.") or key == "summary.avg_gap" or not gap:
        return f"<td>{body}</td>"
    g = tr.gaps.get(key)
    if g is not None and g.n and tr.method != "oracle":
        cls = "d sig" if g.excludes_zero else "d"
        body += f'<span class="{cls}">Δ {_e(_fmt_stat(g, signed=True))}</span>'
    return f"<td>{body}</td>"


def _html_table(
    trs: Sequence[TableRow], keys: Sequence[str], caption: str, *, audit: str | None = None
) -> str:
    head = "".join(f'<th title="{_e(metric_doc(k)[0])}">{_e(_short(k, audit))}</th>' for k in keys)
    out = [f'<table><caption class="meta">{_e(caption)}</caption>',
           f'<tr><th class="l">method</th><th>seeds</th>{head}</tr>']  # fmt: skip
    for tr in trs:
        cls = ' class="ref"' if tr.is_reference else ""
        cells = "".join(_cell(tr, k) for k in keys)
        out.append(
            f'<tr{cls}><td class="l">{_e(tr.label)}</td><td>{len(tr.seeds)}</td>{cells}</tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _evidence_html(row: Row, rows: Sequence[Row]) -> str:
    m = row.manifest
    sp = m.get("splits", {})
    t = m.get("timings", {})
    params = m.get("method_params", {})
    vs = verdicts(row, rows)
    within = [v for v in vs if v.known and v.within]
    outside = [v for v in vs if v.known and not v.within]
    unknown = [v for v in vs if not v.known]
    out = ['<h2 id="evidence">Evidence for this deletion request</h2>', '<div class="box">']
    out.append(
        f"<p><b>What was asked.</b> Benchmark <code>{_e(row.benchmark)}</code>, request "
        f"<code>{_e(row.forget)}</code>: forget {_e(sp.get('n_forget', '?'))} training examples "
        f"and keep {_e(sp.get('n_retain', '?'))} (seed {row.seed}, split hash "
        f"<code>{_e(sp.get('forget', '?'))}</code>).</p>"
    )
    ptxt = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "no hyperparameters"
    out.append(
        f"<p><b>What was done.</b> Method <code>{_e(row.method)}</code> ({_e(ptxt)}): "
        f"{_e(m.get('steps', '?'))} optimizer steps in {_e(_fmt(_num(t.get('unlearn_s'))))} s, "
        f"{_e(_fmt(row.cost['cost.ratio']))}× the time to retrain without the forget set "
        f"({_e(_fmt(_num(t.get('oracle_train_s'))))} s). Code revision "
        f"<code>{_e(str(m.get('git_revision') or 'unknown')[:12])}</code>.</p>"
    )
    if row.method == "oracle":
        verdict = "This is the retrain oracle itself: the reference every method is judged by."
    elif not vs:
        verdict = "No audit measured this run."
    elif not outside and not unknown:
        verdict = (
            f"On all {len(within)} measures the model is within the retrain oracle's spread: "
            f"these audits cannot tell it from a model retrained without the forget set."
        )
    else:
        parts = []
        if outside:
            parts.append(
                f"<span class='bad'>outside the oracle's spread on {len(outside)}</span> "
                f"({_e(', '.join(v.key for v in outside))})"
            )
        if within:
            parts.append(f"<span class='ok'>within it on {len(within)}</span>")
        if unknown:
            parts.append(
                f"<span class='unk'>not judged on {len(unknown)}</span> (no oracle spread)"
            )
        verdict = (
            "Of the measured quantities, the unlearned model is " + "; ".join(parts) + ". "
            "Outside means the audits can tell this model from retraining on that measure."
        )
    out.append(f"<p><b>Verdict.</b> {verdict}</p></div>")
    out.append(
        '<table><tr><th class="l">measure</th><th>original</th><th>oracle</th>'
        '<th>this run</th><th>Δ oracle</th><th>oracle spread</th><th class="l">verdict</th></tr>'
    )
    for v in vs:
        if row.method == "oracle":
            cls, word = "", "the oracle itself"
        elif not v.known:
            cls, word = "unk", v.sentence()
        else:
            cls, word = ("ok" if v.within else "bad"), v.sentence()
        spread = f"[{_fmt(v.low)}, {_fmt(v.high)}] {v.source}" if v.known else "—"
        out.append(
            f'<tr><td class="l" title="{_e(metric_doc(v.key)[0])}">{_e(v.key)}</td>'
            f"<td>{_fmt(v.original)}</td><td>{_fmt(v.oracle)}</td><td>{_fmt(v.value)}</td>"
            f"<td>{_fmt(v.gap) if math.isfinite(v.gap) else '—'}</td><td>{_e(spread)}</td>"
            f'<td class="l"><span class="{cls}">{_e(word)}</span></td></tr>'
        )
    out.append("</table>")
    out.append(
        '<p class="meta">Oracle spread: the 95% prediction interval of one more retrain, from '
        "the oracle seeds found beside this run (seeds, k of them); for rates over the forget set "
        "it is widened by the 95% Wilson interval of the oracle's rate on the n forget examples "
        "(sampling). With one oracle seed only the sampling part exists, and it ignores "
        "seed-to-seed variation: run more seeds for a firmer verdict.</p>"
    )
    return "\n".join(out)


def _glossary_html(keys: Iterable[str]) -> str:
    items = []
    for k in keys:
        doc, higher, lower = metric_doc(k)
        extra = ""
        if judged(k) and higher != "higher":
            extra = f" <i>Above the oracle:</i> {_e(higher)}. <i>Below:</i> {_e(lower)}."
        items.append(f"<dt>{_e(k)}</dt><dd>{_e(doc)}{extra}</dd>")
    return '<dl class="gl">' + "".join(items) + "</dl>"


def _render_html(rows: Sequence[Row], title: str) -> str:
    trs = table(rows)
    have_mpl = _have_matplotlib()
    method_runs = [r for r in rows if r.ok and not r.is_reference]
    failed = [r for r in rows if not r.ok]
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        from obliviate import __version__
    except ImportError:  # pragma: no cover
        __version__ = "?"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">obliviate {_e(__version__)} · {len(rows)} run folders · '
        f"generated {now}</p>",
    ]
    if not have_mpl:
        out.append(
            '<p class="note">matplotlib is not installed, so this page has tables only. '
            "Install the plotting extra with <code>pip install 'obliviate[report]'</code> and "
            "write the report again for ROC, relearning, per-class and cost plots.</p>"
        )
    if len(method_runs) == 1:
        out.append(_evidence_html(method_runs[0], rows))
    elif not method_runs and len([r for r in rows if r.ok]) == 1:
        out.append(_evidence_html([r for r in rows if r.ok][0], rows))
    out.append(
        '<p class="meta">How to read the tables: every number is the mean over seeds ± the '
        "half-width of its 95% t confidence interval (no ± with one seed). Under each number, "
        "Δ is the mean paired difference to the retrain oracle of the same seed; "
        '<span class="sig">red</span> when its 95% CI excludes 0, i.e. the audits tell the '
        "method from retraining on that measure. Hover a column name for its definition; all "
        'are explained at the <a href="#glossary">end</a>.</p>'
    )
    keys_seen: list[str] = []
    for (bench, forget), block in _sections(trs).items():
        out.append(f'<h2 id="{_e(bench)}-{_e(forget)}">{_e(bench)} · {_e(forget)}</h2>')
        ov = _overview_keys(block)
        out.append("<h3>Overview</h3>")
        out.append(_html_table(block, ov, "overview: gap to retraining, accuracy, cost"))
        for audit, keys in _audits_of(block).items():
            out.append(f"<h3>{_e(audit)}</h3>")
            out.append(f'<p class="meta">{_e(_audit_summary(audit))}</p>')
            out.append(_html_table(block, keys, f"{audit}: every metric", audit=audit))
        cost_keys = [k for k in COST_KEYS if any(k in tr.metrics for tr in block)]
        out.append("<h3>cost</h3>")
        out.append(_html_table(block, cost_keys, "cost of unlearning (oracle row: retraining)"))
        for tr in block:
            keys_seen += [k for k in tr.metrics if k not in keys_seen]
        if have_mpl:
            for kind, cap, png in _plots(block):
                out.append(
                    f'<figure class="plot {kind}"><img alt="{_e(cap)}" '
                    f'src="data:image/png;base64,{png}"><figcaption>{_e(cap)}: '
                    f"{_e(_PLOT_CAPTIONS.get(kind, ''))}</figcaption></figure>"
                )
    if failed:
        out.append(
            "<h2>Failed runs</h2><table><tr><th class='l'>run</th><th class='l'>error</th></tr>"
        )
        for r in failed:
            out.append(
                f"<tr><td class='l'>{_e(r.path)}</td>"
                f"<td class='l'>{_e(r.manifest.get('error', r.status))}</td></tr>"
            )
        out.append("</table>")
    out.append('<h2 id="glossary">What every measure means</h2>')
    out.append(_glossary_html(keys_seen))
    out.append("<h2>Run folders</h2><table><tr><th class='l'>method</th><th>seed</th>"
               "<th class='l'>folder</th><th class='l'>group</th></tr>")  # fmt: skip
    for tr in trs:
        for r in sorted(tr.rows, key=lambda r: r.seed):
            out.append(
                f"<tr><td class='l'>{_e(tr.label)}</td><td>{r.seed}</td>"
                f"<td class='l'><code>{_e(r.path)}</code></td><td class='l'>{_e(r.group)}</td></tr>"
            )
    out.append("</table></body></html>")
    return "\n".join(out)


_PLOT_CAPTIONS = {
    "roc": "true- vs false-positive rate of the membership attack over every threshold, forget "
    "set (members) vs held-out test; the low-FPR corner (left) is what matters; a method should "
    "lie on the oracle's curve, not above it (leak) nor below it (over-forgetting)",
    "curves": "the audit's series (relearning: the forget accuracy recovered after k fine-tuning "
    "steps; a method whose curve rises faster than the oracle's only hid the knowledge)",
    "class-confidence": "mean predicted probability of each class on the forget inputs; after "
    "exact unlearning the forgotten class's mass moves to its look-alike classes",
    "cost": "each method's mean (± 95% CI) against its cost relative to retraining; the oracle "
    "sits at 1; the dotted line is the original model",
    "images": "samples drawn with the same seeds and prompts from every model (first seed), one "
    "line per row: an erased concept should look like the oracle's line, not the original's",
    "dsr-pp": "defence success rate on the synonym prompts against prompt preservation on the "
    "unrelated prompts, per row and guidance arm (marker); a defence moves a point up, not left",
    "fact-recall": "each forget fact's answer probability under the original (x) and under the "
    "row's model (y), log scale; red facts are still answered exactly",
}


# -- Markdown and CSV ------------------------------------------------------------------------
def _md_cell(tr: TableRow, key: str) -> str:
    s = _fmt_stat(tr.metrics.get(key))
    g = tr.gaps.get(key)
    if (
        g is not None
        and g.n
        and tr.method != "oracle"
        and not key.startswith(("cost.", "summary."))
    ):
        mark = "**" if g.excludes_zero else ""
        s += f" (Δ {mark}{_fmt_stat(g, signed=True)}{mark})"
    return s


def _md_table(trs: Sequence[TableRow], keys: Sequence[str], audit: str | None = None) -> list[str]:
    out = ["| method | seeds | " + " | ".join(_short(k, audit) for k in keys) + " |"]
    out.append("|---|---:|" + "---:|" * len(keys))
    for tr in trs:
        name = f"*{tr.label}*" if tr.is_reference else tr.label
        out.append(
            f"| {name} | {len(tr.seeds)} | " + " | ".join(_md_cell(tr, k) for k in keys) + " |"
        )
    return out


def _render_markdown(rows: Sequence[Row], title: str) -> str:
    trs = table(rows)
    out = [f"# {title}", "", "Mean over seeds ± 95% CI; Δ = paired difference to the retrain "
           "oracle (**bold**: its CI excludes 0). Plots are in the HTML report.", ""]  # fmt: skip
    keys_seen: list[str] = []
    for (bench, forget), block in _sections(trs).items():
        out += [f"## {bench} · {forget}", ""]
        out += _md_table(block, _overview_keys(block)) + [""]
        for audit, keys in _audits_of(block).items():
            if all(k in OVERVIEW_KEYS for k in keys):
                continue
            out += [f"### {audit}", ""] + _md_table(block, keys, audit) + [""]
        for tr in block:
            keys_seen += [k for k in tr.metrics if k not in keys_seen]
    failed = [r for r in rows if not r.ok]
    if failed:
        out += ["## Failed runs", ""] + [f"- `{r.path}`: {r.manifest.get('error', r.status)}"
                                         for r in failed] + [""]  # fmt: skip
    out += ["## Metrics", ""] + [f"- `{k}`: {metric_doc(k)[0]}" for k in keys_seen]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("benchmark", "forget", "method", "params", "seeds", "metric", "mean", "ci95",
               "n", "gap_to_oracle", "gap_ci95", "gap_n")  # fmt: skip


def _write_csv(rows: Sequence[Row], path: Path) -> None:
    from obliviate.store import atomic_write

    with atomic_write(path, "w") as f:
        w = _csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for tr in table(rows):
            for k, s in tr.metrics.items():
                g = tr.gaps.get(k)
                w.writerow([
                    tr.benchmark, tr.forget, tr.method, _canon(tr.params),
                    " ".join(map(str, tr.seeds)), k, _csv_num(s.mean), _csv_num(s.ci), s.n,
                    _csv_num(g.mean) if g else "", _csv_num(g.ci) if g else "", g.n if g else 0,
                ])  # fmt: skip


def _csv_num(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else ""


def write_report(
    paths: Iterable[Path | str] | Path | str,
    *,
    html: Path | str | None = None,
    markdown: Path | str | None = None,
    csv: Path | str | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Collect the run folders under ``paths`` and write the requested outputs.

    Returns {"html" | "markdown" | "csv": path written}. The HTML page is one self-contained
    file (inline CSS, plots as base64 PNG); with exactly one method run it opens with the
    evidence for that deletion request.
    """
    if html is None and markdown is None and csv is None:
        raise ValueError("write_report: name at least one output (html=, markdown= or csv=)")
    from obliviate.store import atomic_write

    rows = collect(paths)
    if not rows:
        where = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        raise ValueError(
            f"no run folders found under {where} (a run folder holds a manifest.json). "
            f"Run `obliviate run` or `obliviate bench` first."
        )
    if title is None:
        benches = sorted({r.benchmark for r in rows})
        title = f"obliviate report: {', '.join(benches)}"
    written: dict[str, Path] = {}
    for kind, target, render in (
        ("html", html, _render_html),
        ("markdown", markdown, _render_markdown),
    ):
        if target is None:
            continue
        text = render(rows, title)
        with atomic_write(Path(target), "w") as f:
            f.write(text)
        written[kind] = Path(target)
    if csv is not None:
        _write_csv(rows, Path(csv))
        written["csv"] = Path(csv)
    for kind, p in written.items():
        log.info("report (%s) written to %s", kind, p)
    return written
