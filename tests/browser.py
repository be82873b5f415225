"""Open a page in headless Chromium and report what a reader's browser saw: console errors, images that did not
load, external URLs, and how wide the page is against the window.

A copy of the page gets a probe script at the top of its ``<head>``: it records every error (uncaught exceptions,
``console.error``, resources that failed to load) and, once the page has loaded, writes its findings as JSON into the
DOM, which ``--dump-dom`` prints. A second run takes a full-page screenshot at the page's own height.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

PROBE = """<script>
window.__probe = {errors: []};
window.addEventListener("error", function (event) {
  var target = event.target;
  window.__probe.errors.push(target && target !== window && target.tagName
    ? "failed to load <" + target.tagName.toLowerCase() + "> " + String(target.src || target.href || "").slice(0, 60)
    : "uncaught: " + event.message);
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__probe.errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var broken = Array.prototype.filter.call(document.images, function (image) {
    return !(image.complete && image.naturalWidth > 0);
  }).map(function (image) { return image.alt || image.src.slice(0, 60); });
  var external = Array.prototype.map.call(document.querySelectorAll("[src], [href]"), function (element) {
    return element.getAttribute("src") || element.getAttribute("href");
  }).filter(function (url) { return /^([a-z][a-z0-9+.-]*:)?\\/\\//i.test(url) || /^(https?|ftp):/i.test(url); });
  // The results table as a reader uses it: its heading and first column stay in view (sticky), and a click on the
  // PSNR heading sorts the rows by it.
  var results = document.querySelector("#results table.data"), table = null;
  if (results && results.tHead) {
    var headings = results.tHead.rows[results.tHead.rows.length - 1].cells;
    var column = Array.prototype.findIndex.call(headings, function (cell) { return /PSNR/.test(cell.textContent); });
    var values = function () {
      return Array.prototype.map.call(results.tBodies[0].rows, function (row) {
        return row.cells[column] ? row.cells[column].textContent.trim() : ""; });
    };
    var before = column >= 0 ? values() : [];
    if (column >= 0) headings[column].click();
    table = {sticky_heading: getComputedStyle(headings[0]).position,
             sticky_first_column: getComputedStyle(results.tBodies[0].rows[0].cells[0]).position,
             sorted_column: column >= 0 ? headings[column].textContent.trim() : null,
             before: before, after: column >= 0 ? values() : []};
  }
  var out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    scroll_width: document.documentElement.scrollWidth, scroll_height: document.documentElement.scrollHeight,
    window_width: window.innerWidth, images: document.images.length, broken_images: broken, external: external,
    errors: window.__probe.errors, overview: !!document.getElementById("overview"), results_table: table});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary on this machine, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the page is our own file.
    command = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": "/tmp"})


def probe_page(page: Path, work: Path, width: int = 1280, height: int = 900,
               screenshot: Path | None = None) -> dict[str, Any]:
    """What Chromium saw of ``page`` in a ``width`` x ``height`` window; with ``screenshot``, a full-page PNG there."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    work.mkdir(parents=True, exist_ok=True)
    probed = work / f"probed-{page.name}"
    text = page.read_text(encoding="utf-8")
    probed.write_text(re.sub(r"<head>", "<head>\n" + PROBE, text, count=1), encoding="utf-8")
    dumped = _run(binary, f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                  probed.as_uri())
    found = re.search(r'<pre id="__probe">(.*?)</pre>', dumped.stdout, re.DOTALL)
    if found is None:
        raise RuntimeError(f"the probe wrote nothing (exit {dumped.returncode}): {dumped.stderr[-500:]}")
    result = json.loads(html.unescape(found.group(1)))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = _run(binary, f"--window-size={width},{result['scroll_height']}", f"--screenshot={screenshot}",
                    "--hide-scrollbars", page.resolve().as_uri())
        if not screenshot.is_file():
            raise RuntimeError(f"no screenshot (exit {shot.returncode}): {shot.stderr[-500:]}")
    return result


if __name__ == "__main__":
    # `python tests/browser.py reports/latest.html [SCREENSHOT.png]`: what a 1,280-pixel window shows of a report.
    import sys
    import tempfile

    page = Path(sys.argv[1])
    shot = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps(probe_page(page, Path(scratch), screenshot=shot), indent=1))
