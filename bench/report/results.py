"""The results section: one row per cell with its axes, status and headline figures; over seeds, their mean and
confidence interval; and how the numbers were taken, from the run's own matrix settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench.aggregate import aggregate_over_seeds
from aebench.load import CONTAMINATED
from aebench.metrics import REGISTRY, Formatter
from aebench.report.page import Run, render
from aebench.report.table import (
    AXIS_FORMATS,
    CI_NOTE,
    CONTAMINATED_LEGEND,
    UNSTABLE_LEGEND,
    Column,
    aggregated_display,
    first_seen,
    flags,
    marked,
    numeric,
    ok_cells,
    ordered,
    several_seeds,
    strings,
    styled_table,
    text,
    threads_text,
    varying,
)

AXES = ("variant", "noise", "device", "threads", "backend", "precision", "seed", "status")
RESULT_COLUMNS = (
    Column("quality.psnr_db"),
    Column("quality.noisy_psnr_db"),
    Column("quality.gain_db"),
    Column("quality.ssim"),
    Column("quality.bce"),
    Column("quality.mse"),
    Column("speed.train_ips"),
    Column("speed.infer_ips"),
    Column("speed.latency_b1_p50_ms"),
    Column("speed.latency_b1_p99_ms"),
    Column("speed.predict_b1_p50_ms", aside="framework path"),
    Column("speed.cold_start_s"),
    Column("memory.peak_rss_mb"),
)
SEED_SUMMARY_COLUMNS = (
    Column("quality.psnr_db"),
    Column("quality.gain_db"),
    Column("quality.ssim"),
    Column("quality.acc_denoised"),
    Column("quality.probe_acc"),
    Column("speed.train_ips"),
    Column("speed.infer_ips"),
    Column("speed.latency_b1_p50_ms"),
)


def results_table(frame: pd.DataFrame) -> Markup:
    """One row per cell: its axes, status, quality, speed and memory figures; unstable figures marked."""
    if frame.empty:
        return Markup("<p>This run recorded no cells.</p>")
    frame = ordered(frame).reset_index(drop=True)
    display = pd.DataFrame(index=frame.index)
    formats: dict[str, Formatter] = {}
    for axis in AXES:
        if axis == "seed" and not varying(frame, ("seed",)):
            continue  # one seed: a constant column says nothing the header does not
        if axis in frame.columns:
            display[axis] = frame[axis].astype("object").where(frame[axis].notna(), None)
            formats[axis] = AXIS_FORMATS[axis]
    weights = weights_column(frame)
    if weights is not None:
        display["weights"] = weights
        formats["weights"] = str
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    if "status" in display.columns:
        classes["status"] = "status-" + strings(frame, "status").astype(str)
    contaminated = flags(frame, CONTAMINATED)
    for column in RESULT_COLUMNS:
        values = numeric(frame, column.metric)
        dirty = contaminated & values.notna() & (REGISTRY[column.metric].group == "speed")
        if column.unstable is not None or dirty.any():
            unstable = flags(frame, column.unstable) & values.notna()
            display[column.heading] = marked(values, unstable, column.format, dirty)
            classes[column.heading] = np.where(dirty, "contaminated", np.where(unstable, "unstable", ""))
        else:
            display[column.heading] = values
            formats[column.heading] = column.format
            classes[column.heading] = ""
    return styled_table(display, formats, "results", classes, css_class="data results")


def weights_column(frame: pd.DataFrame) -> pd.Series | None:
    """Which cell trained the weights each row timed: "trained" where the cell itself did, "from 2 threads" where it
    timed those of its model's cell with that many threads (and shares its quality figures); None when no cell says."""
    if "info.trained_by" not in frame.columns or frame["info.trained_by"].isna().all():
        return None
    trainers = {key: threads_text(threads, device)
                for key, threads, device in zip(frame["key"], frame.get("threads", pd.Series(dtype=object)),
                                                frame.get("device", pd.Series(dtype=object)))}

    def source(key: str, trainer: object) -> str:
        if pd.isna(trainer) or trainer == "":
            return ""
        return "trained" if trainer == key else f"from {trainers.get(str(trainer), str(trainer))}"

    return pd.Series([source(key, trainer) for key, trainer in zip(frame["key"], frame["info.trained_by"])],
                     index=frame.index, dtype=object)


def seed_summary_table(frame: pd.DataFrame) -> Markup:
    """Results over seeds: one row per cell group (every axis but the seed), mean ± 95% CI of the headline figures."""
    table = aggregate_over_seeds(ordered(ok_cells(frame)), [column.metric for column in SEED_SUMMARY_COLUMNS])
    axes = {axis: axis for axis in ("variant", "noise", "device", "threads", "backend", "precision")
            if axis in table.columns and (axis in ("variant", "noise") or table[axis].nunique(dropna=False) > 1)}
    display, formats = aggregated_display(table, axes, SEED_SUMMARY_COLUMNS)
    return styled_table(display, formats, "seedsummary")


def section(run: Run) -> Markup:
    frame = run.frame
    paths = first_seen(text(v) for v in frame.get("info.inference_path", pd.Series(dtype=object)) if not pd.isna(v))
    return render(
        "sections/results.html",
        results_table=results_table(frame),
        seed_summary_table=seed_summary_table(frame) if several_seeds(frame) else None,
        matrix=run.matrix, latency=run.matrix.get("latency") or {}, throughput=run.matrix.get("throughput") or {},
        inference_paths=paths, unstable_legend=UNSTABLE_LEGEND, ci_note=CI_NOTE,
        contaminated_legend=CONTAMINATED_LEGEND if flags(frame, CONTAMINATED).any() else None,
    )
