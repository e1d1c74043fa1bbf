"""The report page rendered by headless Chromium: a non-blank screenshot, and a DOM with the
tables and the embedded images (slow: a browser start and the tiny suite)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from obliviate.bench.grid import run_suite
from obliviate.report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium"),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny) -> Path:
    root = tmp_path_factory.mktemp("browser")
    results = run_suite("tiny", runs_dir=root / "runs", cache_dir=tiny.cache.root, progress=False)
    return write_report([r.path for r in results], html=root / "report.html")["html"]


def test_screenshot_is_produced_and_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 20_000
    from PIL import Image  # matplotlib's dependency, so present with the [report] extra

    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert px.shape == (2400, 1280)
    assert px.std() > 10  # text, tables and plots, not a blank page
    assert (px < 128).mean() > 0.005  # some dark ink


def test_dom_has_the_tables_and_images(page):
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--dump-dom", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert dom.count("<table") >= 4
    assert "Avg. Gap" in dom and "MIA-Efficacy" in dom
    assert dom.count('src="data:image/png;base64,') >= 2
