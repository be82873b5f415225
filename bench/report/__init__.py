"""The HTML report of one run: a single self-contained file (inline CSS, figures as base64 PNG data URIs, a few lines of
inline script that sort a table by the column clicked, no external resource), so it can be mailed, archived or opened
offline years later and still show everything. It opens with an overview (which variant wins what, the trade-off)
and links to the history, ab and hardware pages written beside it, when there are any.

``write_report(store, run_id, reports_dir)`` writes ``reports_dir/<run_id>/index.html`` and, when the run is the
newest in the store, copies it to ``reports_dir/latest.html``.

One module per section, each rendering its jinja2 template (``templates/sections``) from a ``page.Run``; ``SECTIONS``
is the page's order and its nav. Table columns are metrics of ``aebench.metrics.REGISTRY``, which gives their
headings, units, formats and stability flags. Every string from the store is escaped: tables by the Styler
(``escape="html"``), everything else by the templates' autoescape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aebench import atomic
from aebench.report import (
    accuracy,
    devices,
    environment,
    failures,
    header,
    images,
    latency,
    overview,
    quality,
    results,
    throughput,
    timetoquality,
)
from aebench.report.page import Run, Section, render_page
from aebench.store import Store, flat_frame

__all__ = ["SECTIONS", "build_report", "write_report"]

SECTIONS: tuple[Section, ...] = (
    Section("overview", "Overview", overview.section),
    Section("results", "Results", results.section),
    Section("quality", "Quality vs noise", quality.section),
    Section("timetoquality", "Time to quality", timetoquality.section),
    Section("accuracy", "Accuracy (QoS)", accuracy.section),
    Section("throughput", "Throughput vs threads", throughput.section),
    Section("devices", "Devices and backends", devices.section),
    Section("latency", "Latency", latency.section),
    Section("images", "Image grid", images.section),
    Section("failures", "Failed, timed-out and skipped cells", failures.section),
    Section("environment", "Environment", environment.section),
)


def build_report(store: Store, run_id: str, links: Sequence[tuple[str, str]] = ()) -> str:
    """The report's HTML text for one run; ``links`` are (label, href) of the pages beside it."""
    record = store.run_record(run_id)
    stored = store.results(run_id)
    run = Run(frame=flat_frame(record, stored), record=record, results=tuple(stored),
              artifacts={result.cell.index: dict(result.artifacts) for result in stored}, links=tuple(links))
    title = f"aebench report: {record.get('matrix_name')} / {run_id}"
    return render_page(title, header.section(run), SECTIONS, run)


def write_report(store: Store, run_id: str, reports_dir: Path) -> Path:
    """Write ``reports_dir/<run_id>/index.html`` (and ``latest.html`` when it is the newest run); return its path."""
    reports_dir = Path(reports_dir)
    links = sibling_pages(reports_dir)
    text = build_report(store, run_id, [(label, f"../{href}") for label, href in links])
    index = reports_dir / run_id / "index.html"
    atomic.write_text(index, text)
    if store.resolve_run(None) == run_id:
        # The copy sits one folder up: its links lose the "../" (only they start so; figures are data URIs).
        atomic.write_text(reports_dir / "latest.html", text.replace('href="../', 'href="'))
    return index


def sibling_pages(reports_dir: Path) -> list[tuple[str, str]]:
    """(label, path relative to ``reports_dir``) of the history page and the newest ab and hardware pages there."""
    found: list[tuple[str, str]] = []
    if (reports_dir / "history.html").is_file():
        found.append(("history", "history.html"))
    for folder, label in (("ab", "latest ab comparison"), ("hardware", "latest hardware comparison")):
        pages = sorted((reports_dir / folder).glob("*.html"), key=lambda page: (page.stat().st_mtime, page.name))
        if pages:
            found.append((label, f"{folder}/{pages[-1].name}"))
    return found
