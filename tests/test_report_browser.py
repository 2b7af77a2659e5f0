"""The report opens where readers open it: headless Chromium renders the HTML to a screenshot that shows tables,
plots and the gallery, and pdflatex compiles the LaTeX report (each skipped where the tool is not installed,
e.g. in CI; Debian packages `chromium` and `texlive-latex-recommended`)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from reports.report import write_report
from tests.test_report import build_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1400, 6000)) -> np.ndarray:
    """Render ``page`` in headless Chromium and return the screenshot's pixels (H×W×C floats)."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={out.parent / 'profile'}", f"--window-size={size[0]},{size[1]}",
               f"--screenshot={out}", page.as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return image.imread(out)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_html_report_renders_tables_plots_and_gallery(tmp_path: Path) -> None:
    build_store(tmp_path)
    report = write_report(tmp_path)
    pixels = screenshot(report / "index.html", tmp_path / "shot.png")
    assert pixels.shape[:2] == (6000, 1400)
    rows = pixels[..., :3].std(axis=(1, 2))
    assert (rows > 0.05).mean() > 0.3  # a large part of the page has content, not a blank or error page
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.3  # the heatmaps' red/blue and plot colours
    assert colourful.sum() > 10_000


PDFLATEX = shutil.which("pdflatex")


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (Debian: texlive-latex-recommended)")
def test_latex_report_compiles(tmp_path: Path) -> None:
    build_store(tmp_path)
    report = write_report(tmp_path)
    result = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=report,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (report / "report.pdf").stat().st_size > 10_000
