"""The environment: the run's machine and software, and what the workers reported using (device, threads, paths)."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from aebench.report.page import Run, render
from aebench.report.table import first_seen, key_value_table, ok_cells, text

MAX_INFO_VALUES = 8


def _info_summary(frame: pd.DataFrame) -> dict[str, str]:
    """Each ``info.*`` column as its distinct values: the device, threads and paths the workers really used."""
    summary: dict[str, str] = {}
    for column in sorted(c for c in frame.columns if c.startswith("info.") and c != "info.pid"):
        values = first_seen(text(value) for value in frame[column] if not pd.isna(value))
        if not values:
            continue
        shown = ", ".join(values[:MAX_INFO_VALUES])
        if len(values) > MAX_INFO_VALUES:
            shown += f" … ({len(values)} distinct)"
        summary[column.removeprefix("info.")] = shown
    return summary


def section(run: Run) -> Markup:
    info = _info_summary(ok_cells(run.frame)) if not run.frame.empty else {}
    return render("sections/environment.html",
                  environment_table=key_value_table(run.record.get("environment") or {}, "environment"),
                  info_table=key_value_table(info, "info") if info else None)
