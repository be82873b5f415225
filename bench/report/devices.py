"""Devices and backends: one row per variant x device (x CPU threads) x backend x precision, every cell included, so a
device or backend this machine lacks shows up as skipped with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench.metrics import Formatter, integer
from aebench.report.page import Run, render
from aebench.report.table import (
    Column,
    first_seen,
    measured_cells,
    numeric,
    ordered,
    strings,
    styled_table,
    text,
    times,
    varying,
)

DEVICE_KEY = ("variant", "device", "threads", "backend", "precision")
DEVICE_COLUMNS = (
    Column("speed.train_ips"),
    Column("speed.infer_ips"),
    Column("speed.latency_b1_p50_ms"),
    Column("speed.latency_b1_p99_ms"),
    Column("quality.psnr_db"),
)
TRAIN = DEVICE_COLUMNS[0]
VERSUS_FIRST = "train vs first row"


# A group's colour is that of its worst cell: one failure in a group of ok cells must not show green.
WORST_FIRST = ("failed", "timeout", "skipped", "ok")


def group_status(statuses: pd.Series, errors: pd.Series) -> tuple[str, str]:
    """The status text of a group of cells ('ok' when every cell ran, the reason when none did, else the counts) and
    the status that colours it: its worst cell's."""
    counts = statuses.value_counts()
    worst = next(status for status in WORST_FIRST if status in counts.index)  # every stored status is one of these
    if list(counts.index) == ["ok"]:
        return "ok", worst
    if len(counts) == 1:
        return f"{counts.index[0]}: {first_seen(errors)[0]}", worst
    return ", ".join(f"{count} {status}" for status, count in counts.items()), worst


def device_table(frame: pd.DataFrame) -> Markup:
    """Means over noise levels and seeds of each group's ok cells, and the group's status."""
    frame = ordered(frame).reset_index(drop=True)
    keys = pd.Series(list(zip(*(strings(frame, c).astype(str) for c in DEVICE_KEY))), index=frame.index)
    rows = []
    worst: list[str] = []  # per row, the status that colours it
    for key in first_seen(keys):
        group = frame[keys == key]
        ok = measured_cells(group)
        row: dict[str, Any] = dict(zip(DEVICE_KEY, key))
        # an accelerator cell is not pinned to CPU threads
        row["threads"] = float(row["threads"]) if row["threads"] else None
        row["status"], colour = group_status(group["status"], strings(group, "error"))
        worst.append(colour)
        row["ran on"] = ", ".join(first_seen(text(v) for v in strings(ok, "info.backend_device") if v)) or None
        for column in DEVICE_COLUMNS:
            row[column.heading] = numeric(ok, column.metric).mean() if not ok.empty else np.nan
        rows.append(row)
    display = pd.DataFrame(rows)
    train = display[TRAIN.heading]
    first = display.groupby("variant", sort=False)[TRAIN.heading].transform(
        lambda values: values.dropna().iloc[0] if values.notna().any() else np.nan)
    display.insert(display.columns.get_loc(TRAIN.heading) + 1, VERSUS_FIRST, train / first)
    formats: dict[str, Formatter] = {column.heading: column.format for column in DEVICE_COLUMNS}
    formats.update({"threads": integer, VERSUS_FIRST: times})
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    classes["status"] = [f"status-{status}" for status in worst]
    return styled_table(display, formats, "devices", classes, css_class="data failures")


def section(run: Run) -> Markup:
    frame = run.frame
    if frame.empty:
        return render("sections/devices.html", table=None, reason="This run recorded no cells.")
    if not varying(frame, ("device", "backend", "precision")):
        return render("sections/devices.html", table=None,
                      reason="This run used one device, backend and precision: nothing to compare here (sweep device, "
                             "backend or precision in the matrix to fill this table).")
    return render("sections/devices.html", table=device_table(frame))
