"""Throughput vs CPU threads: training images/s per series, with speedup and efficiency against the smallest thread
count."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.metrics import integer
from aebench.report.page import Run, render
from aebench.report.table import (
    Column,
    first_seen,
    flags,
    marked,
    measured_cells,
    numeric,
    pivot,
    series_labels,
    strings,
    styled_table,
    times,
    whole_percent,
)

TRAIN = Column("speed.train_ips")
INFER = Column("speed.infer_ips")


def _speedup_table(table: pd.DataFrame, unstable: pd.Series, index: int) -> Markup | None:
    """Speedup against the series' smallest thread count, and efficiency = speedup / (threads / min threads)."""
    data = table.dropna(subset=["train"])
    if data.empty:
        return None
    threads = data.index.to_numpy(dtype=np.float64)
    speedup = data["train"] / data["train"].iloc[0]
    display = pd.DataFrame({
        "threads": data.index.astype(int),
        TRAIN.heading: marked(data["train"], unstable.reindex(data.index, fill_value=False), TRAIN.format),
        "speedup": speedup,
        "efficiency": speedup / (threads / threads[0]),
        INFER.heading: data["infer"],
        "infer speedup": data["infer"] / data["infer"].iloc[0],
    })
    formats = {"threads": integer, "speedup": times, "efficiency": whole_percent, INFER.heading: INFER.format,
               "infer speedup": times}
    return styled_table(display, formats, f"speedup{index}")


def section(run: Run) -> Markup:
    ok = measured_cells(run.frame)
    if ok.empty:
        return render("sections/throughput.html", figure=None, reason="No ok cells: nothing to plot.")
    measured = numeric(ok, "threads").notna() & numeric(ok, TRAIN.metric).notna()
    cpu = ok[(strings(ok, "device") == "cpu") & measured]
    if cpu.empty:
        return render("sections/throughput.html", figure=None,
                      reason="No CPU cell with a training throughput: nothing to plot.")
    order = first_seen(series_labels(cpu))
    train = pivot(cpu, "threads", numeric(cpu, TRAIN.metric), order)
    infer = pivot(cpu, "threads", numeric(cpu, INFER.metric), order)
    flagged = pivot(cpu, "threads", flags(cpu, TRAIN.unstable).astype(float), order) > 0
    tables = []
    for index, series in enumerate(train.columns):
        table = pd.DataFrame({"train": train[series], "infer": infer[series] if series in infer else np.nan})
        unstable = flagged[series] if series in flagged else pd.Series(False, index=table.index)
        speedup = _speedup_table(table, unstable, index)
        if speedup is not None:
            tables.append((series, speedup))
    figure = plots.throughput_figure(train)
    return render("sections/throughput.html",
                  figure=Markup(plots.img_tag(figure, "training throughput vs CPU threads")),
                  log_scale=plots.wide_range(train), tables=tables)
