"""The report in a real browser: headless Chromium opens a tiny run's report in a 1,280-pixel window.

It must show no console error, no image that failed to load and no external URL, and the page must not be wider than
the window. A full-page screenshot is kept under reports/browser-test/ (ignored by git) for a person to look at.
The last test breaks a copy of the page on purpose, three ways, and checks that the probe sees each.

CI installs Debian's chromium (.ci/run) and sets AEBENCH_REQUIRE_BROWSER=1, so there a missing browser fails instead
of skipping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import browser
from support import REPO, write_matrix, write_tiny_dataset

WIDTH = 1280
SCREENSHOTS = REPO / "reports" / "browser-test"

if browser.chromium() is None:
    if os.environ.get("AEBENCH_REQUIRE_BROWSER") == "1":
        raise RuntimeError("AEBENCH_REQUIRE_BROWSER=1 but no chromium on PATH: install Debian's chromium")
    pytest.skip("no chromium on PATH (CI installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of two variants, one noise level, 1 and 2 threads, with its report: the accuracy tables
    (classifier, robustness, per digit) included, so they too must fit the window."""
    tmp = tmp_path_factory.mktemp("browser")
    data = write_tiny_dataset(tmp / "data")
    matrix = write_matrix(tmp / "tiny.toml", threads=[1, 2], accuracy=True)
    done = subprocess.run([sys.executable, "-m", "aebench.cli", "run", str(matrix), "--data-dir", str(data),
                           "--store", str(tmp / "s.sqlite"), "--reports-dir", str(tmp / "reports")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "AEBENCH_CACHE": str(tmp / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "reports" / "latest.html"


@pytest.mark.slow
def test_the_report_loads_cleanly_and_fits_a_1280_pixel_window(tiny_report: Path, tmp_path: Path) -> None:
    seen = browser.probe_page(tiny_report, tmp_path, width=WIDTH, screenshot=SCREENSHOTS / "report-1280.png")
    assert seen["errors"] == [] and seen["broken_images"] == [] and seen["external"] == []
    assert seen["images"] >= 4 and seen["overview"]
    assert "<b>Reference classifier:</b>" in tiny_report.read_text(encoding="utf-8")  # its tables fit too
    table = seen["results_table"]
    assert table["sticky_heading"] == table["sticky_first_column"] == "sticky"
    assert "PSNR" in table["sorted_column"] and len(table["before"]) == 4  # 2 variants x 2 thread counts
    assert [float(v) for v in table["after"]] == sorted(float(v) for v in table["before"])  # a click sorts by it
    # The tiny loop makes fewer than the 100 calls a p99 needs: the Pareto figure is drawn on p50 instead.
    assert "(no cell made the 100 calls a p99 needs)" in " ".join(tiny_report.read_text(encoding="utf-8").split())
    assert seen["scroll_width"] <= seen["window_width"] == WIDTH, seen
    assert (SCREENSHOTS / "report-1280.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_probe_sees_a_broken_image_an_external_url_a_script_error_and_a_wide_page(tiny_report: Path,
                                                                                        tmp_path: Path) -> None:
    text = tiny_report.read_text(encoding="utf-8")
    broken = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]{40}', 'src="data:image/png;base64,AAAA', text,
                    count=1)
    assert broken != text
    broken = broken.replace("</body>", '<img src="https://example.invalid/x.png" alt="remote">'
                                       '<div style="width: 3000px">wide</div>'
                                       '<script>undefinedFunction();</script></body>')
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    seen = browser.probe_page(page, tmp_path / "probe", width=WIDTH)
    assert len(seen["broken_images"]) == 2  # the damaged figure and the remote one (no network resolves)
    assert seen["external"] == ["https://example.invalid/x.png"]
    assert any("undefinedFunction" in error for error in seen["errors"])
    assert seen["scroll_width"] > WIDTH
