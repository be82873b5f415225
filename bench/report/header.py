"""The top of the page, before the sections: what ran, when, from which commit, and the run's summary."""

from __future__ import annotations

from markupsafe import Markup

from aebench.report.page import Run, render
from aebench.report.table import key_value_table

FINISHED = ("complete", "finished")


def section(run: Run) -> Markup:
    record = run.record
    commit = record.get("git_commit") or "unknown"
    if record.get("git_dirty"):
        commit += " (dirty: uncommitted changes)"
    items = {
        "matrix": record.get("matrix_name"),
        "description": run.matrix.get("description") or None,
        "run id": record.get("run_id"),
        "started (UTC)": record.get("started_at"),
        "finished (UTC)": record.get("finished_at"),
        "status": record.get("status"),
        "git commit": commit,
        "machine id": record.get("machine_id"),
        "command": " ".join(map(str, record.get("argv") or [])) or None,
    }
    summary = record.get("summary") or {}
    return render(
        "sections/header.html",
        run_table=key_value_table({key: value for key, value in items.items() if value is not None}, "run"),
        status=record.get("status"), partial=record.get("status") not in FINISHED,
        run_id=record.get("run_id"), matrix=record.get("matrix_name"),
        summary_table=key_value_table(summary, "summary") if summary else None,
    )
