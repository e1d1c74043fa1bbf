"""report.py: collect and table on real run folders of the `tiny` suite, the CI and interval
math against hand-computed values, the verdicts, and the HTML page parsed for every table and
plot (synthetic run folders give it every kind of plot whatever audits are registered)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from obliviate import report
from obliviate.bench.grid import run_suite
from obliviate.report import (
    collect,
    mean_ci,
    prediction_interval,
    summary_text,
    table,
    verdicts,
    wilson_interval,
    write_report,
)
from obliviate.store import write_run


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny):
    """The `tiny` suite (finetune, grad-ascent x seeds 0, 1) run once into a temporary folder;
    the session fixture's cache already holds the seed-0 original and oracle."""
    root = tmp_path_factory.mktemp("tiny-suite")
    results = run_suite("tiny", runs_dir=root / "runs", cache_dir=tiny.cache.root, progress=False)
    assert not results.failures, results.failures
    return root / "runs", results


def fake_run(
    root: Path, method: str, seed: int, *, group: str | None = None, metrics: dict,
    arrays: dict | None = None, curves: dict | None = None, params: dict | None = None,
    seconds: float = 1.0, ratio: float = 0.1, status: str = "done", forget: str = "class:3",
) -> Path:  # fmt: skip
    """A run folder written by the store, with chosen numbers (for hand-checked tables)."""
    spec = {
        "benchmark": "fake", "method": method, "params": params or {}, "seed": seed,
        "forget": forget, "audits": sorted(metrics), "audit_params": {}, "max_steps": None,
        "save_model": False,
    }  # fmt: skip
    tag = hashlib.sha256(json.dumps(params or {}, sort_keys=True).encode()).hexdigest()[:8]
    path = root / "fake" / method / f"{seed}-{tag}"
    manifest = {
        "spec": spec,
        "group": group or f"g{seed}",
        "status": status,
        "steps": 10,
        "method_params": params or {},
        "splits": {"n_forget": 100, "n_retain": 900, "class": 3, "kind": "class"},
        "timings": {"unlearn_s": seconds, "cost_ratio_to_retrain": ratio, "oracle_train_s": 10.0},
        "data": {"dataset": "digits"},
    }
    if status != "done":
        manifest["error"] = "ValueError: boom"
    reports = {
        a: {"metrics": m, "curves": (curves or {}).get(a, {}), "notes": [], "seconds": 0.1}
        for a, m in metrics.items()
    }
    return write_run(path, manifest=manifest, reports=reports, arrays=arrays or {})


@pytest.fixture()
def synthetic(tmp_path):
    """Original, oracle and one method over three seeds, with ROC scores, relearning curves and
    per-class confidences, so the page has every kind of plot."""
    rng = np.random.default_rng(0)
    acc = {
        "original": [0.95, 0.96, 0.97],
        "oracle": [0.40, 0.42, 0.44],
        "grad-ascent": [0.50, 0.60, 0.70],
    }
    for method, values in acc.items():
        for seed, v in enumerate(values):
            shift = {"original": 2.0, "oracle": 0.0, "grad-ascent": 0.7}[method]
            scores = np.r_[rng.normal(shift, 1, 200), rng.normal(0, 1, 300)]
            member = np.r_[np.ones(200), np.zeros(300)].astype(np.int8)
            probs = np.full(10, 0.02)
            probs[3 if method != "oracle" else 5] = 0.82
            k = [0.0, 10.0, 50.0]
            fa = {"original": [1, 1, 1], "oracle": [0, 0.1, 0.2], "grad-ascent": [0.1, 0.8, 0.9]}
            fake_run(
                tmp_path, method, seed,
                metrics={
                    "accuracy": {"forget_acc": v, "test_acc": 0.9 - 0.01 * seed},
                    "mia-loss": {"auc": 0.5 + shift / 10, "n_members": 200.0},
                    "relearn": {"benign_forget_acc": fa[method][-1]},
                },
                arrays={
                    "mia-loss.scores": scores, "mia-loss.is_member": member,
                    "accuracy.forget_mean_probs": probs,
                },
                curves={"relearn": {"benign": {"steps": k, "forget_acc": fa[method],
                                               "oracle_forget_acc": fa["oracle"]}}},
                seconds={"original": 0.0, "oracle": 10.0, "grad-ascent": 1.0}[method],
                ratio={"original": 0.0, "oracle": 1.0, "grad-ascent": 0.1}[method],
            )  # fmt: skip
    return tmp_path


class Page(HTMLParser):
    """Tables (with their header cells), images, and external references of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[str]] = []
        self.images: list[dict[str, str]] = []
        self.figures: list[str] = []
        self.external: list[str] = []
        self._in_th = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "th":
            self._in_th = True
        elif tag == "img":
            self.images.append(a)
        elif tag == "figure":
            self.figures.append(a.get("class", ""))
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v.startswith(("http:", "https:", "//")) or (tag in ("link", "script") and v):
                self.external.append(v)

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th and self.tables:
            self.tables[-1].append(data.strip())


def parse(path: Path) -> Page:
    p = Page()
    p.feed(Path(path).read_text())
    return p


# -- statistics --------------------------------------------------------------------------------
def test_mean_ci_matches_hand_computed_t_interval():
    s = mean_ci([1.0, 2.0, 3.0])
    # s = 1, t(0.975, df=2) = 4.302652729911275, half-width = t * s / sqrt(3)
    assert s.mean == pytest.approx(2.0)
    assert s.ci == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert s.n == 3
    s2 = mean_ci([0.1, 0.2, 0.0])
    assert s2.mean == pytest.approx(0.1) and s2.ci == pytest.approx(
        4.302652729911275 * 0.1 / 3**0.5
    )
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.ci) and one.n == 1
    assert mean_ci([float("nan"), 1.0, 3.0]).n == 2  # non-finite values are dropped
    assert mean_ci([]).n == 0


def test_prediction_and_wilson_intervals_match_hand_computed_values():
    lo, hi = prediction_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 * math.sqrt(1 + 1 / 3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    with pytest.raises(ValueError, match="at least 2"):
        prediction_interval([1.0])
    # Wilson, 0 successes in 100 trials: upper = z^2/n / (1 + z^2/n) = 0.036994
    assert wilson_interval(0.0, 100) == pytest.approx((0.0, 0.036994), abs=1e-5)
    # 50/100: centre 0.5, half-width 1.96 * sqrt(0.25/100 + z^2/40000) / (1 + z^2/100) = 0.0962
    lo, hi = wilson_interval(0.5, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)


# -- collect / table on the tiny suite ---------------------------------------------------------
def test_collect_finds_every_run_and_pulls_in_references(tiny_runs):
    runs_dir, results = tiny_runs
    rows = collect(runs_dir)
    assert len(rows) == 8  # 2 methods x 2 seeds + original and oracle per seed
    assert sorted({r.method for r in rows}) == ["finetune", "grad-ascent", "oracle", "original"]
    one = collect([results[0].path])  # a single method run brings its own group's references
    assert sorted(r.method for r in one) == sorted([results[0].manifest["spec"]["method"],
                                                    "original", "oracle"])  # fmt: skip
    assert len({r.group for r in one}) == 1
    assert len(collect([results[0].path], references=False)) == 1


def test_table_aggregates_over_seeds_with_paired_gaps(tiny_runs):
    runs_dir, _ = tiny_runs
    rows = collect(runs_dir)
    trs = table(rows)
    assert [t.method for t in trs] == ["original", "oracle", "finetune", "grad-ascent"]
    assert all(t.seeds == (0, 1) for t in trs)
    by = {t.method: t for t in trs}
    key = "accuracy.test_acc"
    for t in trs:
        vals = [r.metrics[key] for r in rows if r.method == t.method]
        assert t.metrics[key].mean == pytest.approx(np.mean(vals))
        # two seeds: t(0.975, df=1) = 12.706204736174707
        assert t.metrics[key].ci == pytest.approx(
            12.706204736174707 * np.std(vals, ddof=1) / math.sqrt(2)
        )
    # the gap is paired by seed: mean over seeds of (method - oracle of the same group)
    ft = [r for r in rows if r.method == "finetune"]
    orc = {r.group: r for r in rows if r.method == "oracle"}
    diffs = [
        r.metrics["accuracy.forget_acc"] - orc[r.group].metrics["accuracy.forget_acc"] for r in ft
    ]
    assert by["finetune"].gaps["accuracy.forget_acc"].mean == pytest.approx(np.mean(diffs))
    assert by["oracle"].gaps["accuracy.forget_acc"].mean == 0.0
    assert by["oracle"].metrics["cost.ratio"].mean == pytest.approx(1.0)
    assert by["original"].metrics["cost.seconds"].mean == 0.0
    assert by["oracle"].metrics["summary.avg_gap"].mean == 0.0
    # class forgetting on tiny: the original still knows the class, the oracle never learnt it
    assert by["original"].metrics["summary.avg_gap"].mean > 0.3


def test_table_on_hand_made_runs(synthetic):
    trs = table(collect(synthetic))
    ga = next(t for t in trs if t.method == "grad-ascent")
    # forget acc 0.5, 0.6, 0.7 vs oracle 0.40, 0.42, 0.44 -> paired gaps 0.10, 0.18, 0.26
    assert ga.metrics["accuracy.forget_acc"].mean == pytest.approx(0.6)
    g = ga.gaps["accuracy.forget_acc"]
    assert g.mean == pytest.approx(0.18)
    assert g.ci == pytest.approx(4.302652729911275 * 0.08 / math.sqrt(3))
    assert not g.excludes_zero  # 0.18 +- 0.199: three noisy seeds do not establish a gap
    assert mean_ci([0.19, 0.20, 0.21]).excludes_zero and not mean_ci([0.2]).excludes_zero
    # Avg. Gap (only forget and test accuracy measured here): mean of |gaps|, test gap is 0
    assert ga.metrics["summary.avg_gap"].mean == pytest.approx(0.09)


def test_failed_runs_are_kept_out_of_the_table_but_listed(synthetic):
    fake_run(synthetic, "finetune", 0, metrics={"accuracy": {"forget_acc": 0.3}}, status="failed")
    rows = collect(synthetic)
    assert "finetune" not in {t.method for t in table(rows)}
    out = write_report([synthetic], html=synthetic / "r.html", markdown=synthetic / "r.md")
    assert "Failed runs" in out["html"].read_text() and "boom" in out["markdown"].read_text()


def test_verdicts_use_the_oracle_spread_over_seeds(synthetic):
    rows = collect(synthetic)
    ga0 = next(r for r in rows if r.method == "grad-ascent" and r.seed == 0)
    v = {x.key: x for x in verdicts(ga0, rows)}
    fa = v["accuracy.forget_acc"]
    # oracle seeds 0.40, 0.42, 0.44 -> PI 0.42 +- 4.3027 * 0.02 * sqrt(4/3) = [0.3206, 0.5194],
    # widened by Wilson(0.40, n=100) = [0.309, 0.498]; grad-ascent's 0.50 lies inside
    assert fa.oracle == pytest.approx(0.40)
    assert fa.low == pytest.approx(0.30948, abs=1e-4) and fa.high == pytest.approx(
        0.51936, abs=1e-4
    )
    assert fa.within
    ga2 = next(r for r in rows if r.method == "grad-ascent" and r.seed == 2)
    fa2 = {x.key: x for x in verdicts(ga2, rows)}["accuracy.forget_acc"]
    assert not fa2.within and "outside the oracle's spread" in fa2.sentence()
    assert "n_members" not in {x.key for x in verdicts(ga0, rows)}  # bookkeeping: no verdict


# -- outputs -----------------------------------------------------------------------------------
def test_html_has_every_table_and_plot(synthetic):
    out = write_report([synthetic], html=synthetic / "r.html", title="synthetic")
    page = parse(out["html"])
    headers = [h for t in page.tables for h in t]
    assert len(page.tables) >= 4  # overview, accuracy, mia-loss, cost (+ runs index)
    for col in ("Avg. Gap", "forget acc", "test acc", "auc", "seconds", "× retrain"):
        assert col in headers, col
    kinds = " ".join(page.figures)
    for kind in ("roc", "curves", "class-confidence", "cost"):
        assert kind in kinds, kind
    assert page.images and all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    png = base64.b64decode(page.images[0]["src"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not page.external  # self-contained: no network, no linked files
    text = " ".join(page.text)
    assert "What every measure means" in text and "Area under the ROC curve" in text


def test_html_of_the_tiny_suite(tiny_runs):
    runs_dir, results = tiny_runs
    out = write_report(
        [r.path for r in results], html=runs_dir / "t.html", markdown=runs_dir / "t.md",
        csv=runs_dir / "t.csv",
    )  # fmt: skip
    page = parse(out["html"])
    headers = [h for t in page.tables for h in t]
    for col in ("forget acc", "retain acc", "MIA-Efficacy", "forget_test_acc", "efficacy"):
        assert col in headers, col
    kinds = " ".join(page.figures)
    assert "class-confidence" in kinds and "cost" in kinds
    if any("mia-loss" in r.reports for r in results):
        assert "roc" in kinds
    # every metric on the page has a specific sentence in the glossary
    keys = {k for r in collect(runs_dir) for k in r.metrics}
    for k in keys:
        assert not report.metric_doc(k)[0].startswith("`"), k
    md = out["markdown"].read_text()
    assert md.count("| *original* |") >= 2 and "## Metrics" in md
    with open(out["csv"]) as f:
        lines = list(csv.DictReader(f))
    assert set(lines[0]) == set(report.CSV_COLUMNS)
    ft = [x for x in lines if x["method"] == "finetune" and x["metric"] == "accuracy.test_acc"]
    tr = next(t for t in table(collect(runs_dir)) if t.method == "finetune")
    assert float(ft[0]["mean"]) == pytest.approx(tr.metrics["accuracy.test_acc"].mean)


def test_single_run_page_reads_as_evidence(tiny_runs):
    runs_dir, results = tiny_runs
    run = next(r for r in results if r.manifest["spec"]["method"] == "grad-ascent")
    out = write_report([run.path], html=runs_dir / "one.html")
    text = " ".join(parse(out["html"]).text)
    n_forget = run.manifest["splits"]["n_forget"]
    assert "Evidence for this deletion request" in text
    assert "What was asked." in text and f"forget {n_forget} training examples" in text
    assert "What was done." in text and "grad-ascent" in text and "optimizer steps" in text
    assert "Verdict." in text
    # the oracle seeds beside it give a spread: each measure is judged within or outside it
    assert "within the oracle's spread" in text or "outside the oracle's spread" in text


def test_page_without_matplotlib_has_tables_and_says_so(synthetic, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    out = write_report([synthetic], html=synthetic / "plain.html")
    page = parse(out["html"])
    assert not page.images and len(page.tables) >= 4
    assert "matplotlib is not installed" in out["html"].read_text()


def test_summary_text_shows_the_run_beside_its_references(tiny_runs):
    _, results = tiny_runs
    text = summary_text(results[0].path)
    assert "original" in text and "oracle" in text and "this run" in text
    assert "accuracy.forget_acc" in text and "mia-efficacy.efficacy" in text
    assert "within spread" in text or "OUTSIDE spread" in text


def test_write_report_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="at least one output"):
        write_report([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run folders"):
        write_report([tmp_path / "empty"], html=tmp_path / "x.html")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        summary_text(tmp_path)


def test_importing_obliviate_loads_neither_matplotlib_nor_optuna():
    code = (
        "import sys, obliviate, obliviate.report, obliviate.bench.grid, obliviate.tune\n"
        "from obliviate.registry import BENCHMARKS, METHODS, AUDITS\n"
        "BENCHMARKS.names(); METHODS.names(); AUDITS.names()\n"
        "bad = [m for m in ('matplotlib', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_per_fact_plot_for_language_model_runs(tmp_path):
    """lm-qa's per-fact arrays give the before/after panel; classifier runs do not."""
    before = np.array([0.9, 0.8, 0.5, 0.7])
    after = {"oracle": [0.01, 0.02, 0.01, 0.03], "npo": [0.001, 0.6, 1e-9, 0.002]}
    for method, probs in after.items():
        match = (np.asarray(probs) > 0.5).astype(float)
        fake_run(
            tmp_path, method, 0,
            metrics={"lm-qa": {"forget.match": float(match.mean())}},
            arrays={"lm-qa.original.forget.prob": before,
                    "lm-qa.unlearned.forget.prob": np.asarray(probs),
                    "lm-qa.unlearned.forget.match": match},
        )  # fmt: skip
    trs = report.table(collect(tmp_path))
    kinds = [k for k, _, _ in report._plots(trs)]
    assert kinds.count("fact-recall") == 1
    page = parse(write_report([tmp_path], html=tmp_path / "r.html")["html"])
    assert any("fact-recall" in f for f in page.figures)
    png = base64.b64decode(report.plot_fact_recall(trs))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_lm_or_diffusion_plots_for_classifier_runs(synthetic):
    trs = report.table(collect(synthetic))
    assert report.plot_fact_recall(trs) is None and report.plot_dsr_pp(trs) is None


def test_dsr_vs_pp_plot_for_concept_inversion_runs(tmp_path):
    root = tmp_path
    arms = ("", "_neg_word", "_sld_word", "_neg_cstar", "_sld_cstar")
    for method, base in (("esd", 0.6), ("uce", 0.4)):
        for seed in (0, 1):
            m = {f"dsr{a}": base + 0.05 * i + 0.01 * seed for i, a in enumerate(arms)}
            m |= {f"pp_class{a}": 0.8 - 0.04 * i for i, a in enumerate(arms)}
            fake_run(root, method, seed, metrics={"concept-inversion": m})
    trs = report.table(collect(root))
    assert [k for k, _, _ in report._plots(trs)].count("dsr-pp") == 1
    page = parse(write_report([root], html=root / "r.html")["html"])
    assert any("dsr-pp" in f for f in page.figures)
    assert base64.b64decode(report.plot_dsr_pp(trs))[:8] == b"\x89PNG\r\n\x1a\n"
