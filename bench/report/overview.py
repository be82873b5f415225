"""The overview, first on the page: which variant denoises best, which is fastest, and the trade-off between them.

Per variant, over its ok cells: its best PSNR gain (and the noise level where it got it), the classifier's accuracy
on its denoised images and its time to target in that same cell, and its best training and inference throughput and
batch-1 p99 over the thread counts it ran (contaminated speed figures left out), each with the thread count. The best
value of each column is marked. Below: a Pareto figure of quality (PSNR gain) against batch-1 p99, per noise level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.load import CONTAMINATED
from aebench.metrics import REGISTRY
from aebench.report.page import Run, render
from aebench.results import STATUSES
from aebench.report.table import (NA, first_seen, flags, measured_cells, numeric, ordered, series_labels, styled_table,
                                  threads_text)
from aebench.timetoquality import to_target_text

WINNER = "★"
SPEED_COLUMNS = ("speed.train_ips", "speed.infer_ips", "speed.latency_b1_p99_ms")
GAIN, ACCURACY, TO_TARGET = REGISTRY["quality.gain_db"], REGISTRY["quality.acc_denoised"], \
    REGISTRY["speed.time_to_target_s"]
GAIN_HEADING = GAIN.heading("best PSNR gain")
ACCURACY_HEADING = ACCURACY.heading("accuracy on denoised")
TO_TARGET_HEADING = TO_TARGET.heading()


def environment_line(record: Mapping[str, Any]) -> str:
    """The machine and software in one line."""
    environment = record.get("environment") or {}
    versions = ", ".join(f"{key.removeprefix('version.')} {value}" for key, value in sorted(environment.items())
                         if key.startswith("version.") and key.removeprefix("version.") in
                         ("tensorflow", "tensorflow-cpu", "jax", "torch", "keras"))
    commit = str(record.get("git_commit") or "unknown")[:10] + (" (dirty)" if record.get("git_dirty") else "")
    parts = [str(environment.get("cpu_model") or "unknown CPU"),
             f"{environment.get('cpu_usable', '?')} usable of {environment.get('cpu_logical_cores', '?')} cores",
             f"{environment.get('ram_gb', '?')} GB RAM", f"Python {environment.get('python', '?')}", versions,
             f"commit {commit}"]
    return "; ".join(part for part in parts if part)


def cell_counts(frame: pd.DataFrame) -> dict[str, int]:
    status = frame["status"] if "status" in frame.columns else pd.Series(dtype=object)
    counts = {name: int((status == name).sum()) for name in STATUSES}
    counts["contaminated"] = int(flags(frame, CONTAMINATED).sum())
    return counts


def _best(rows: pd.DataFrame, metric: str) -> pd.Series | None:
    """The row with the best figure of ``metric`` in the registry's direction; None when none has one."""
    values = numeric(rows, metric)
    if values.notna().sum() == 0:
        return None
    return rows.loc[values.idxmax() if REGISTRY[metric].better == "higher" else values.idxmin()]


def _oriented(metric: str, value: Any) -> float:
    """The value with the sign that makes larger better, so one max() picks every column's winner."""
    return float(value) * (1 if REGISTRY[metric].better == "higher" else -1)


# Figures read at each variant's best noise level (its best PSNR gain): a winner only where those levels agree.
AT_BEST_NOISE = ((ACCURACY.name, ACCURACY_HEADING), (TO_TARGET.name, TO_TARGET_HEADING))


def variant_table(ok: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per variant (display strings) and, per column, the variant that wins it. ``ok`` holds the ok cells
    with contaminated speed figures already blanked (``store.without_contaminated_speed``)."""
    rows: list[dict[str, str]] = []
    winners_by: dict[str, list[tuple[str, float]]] = {}
    accuracy_noise: set[float] = set()  # the noise levels the accuracies and times to target were taken at
    for variant in first_seen(ok["variant"]):
        mine = ok[ok["variant"] == variant]
        row: dict[str, str] = {"variant": str(variant)}
        best = _best(mine, GAIN.name)
        if best is not None:
            row[GAIN_HEADING] = f"{REGISTRY.format(GAIN.name, best[GAIN.name])} at noise {float(best['noise']):g}"
            winners_by.setdefault(GAIN_HEADING, []).append((variant, _oriented(GAIN.name, best[GAIN.name])))
            accuracy = pd.to_numeric(best.get(ACCURACY.name), errors="coerce")
            row[ACCURACY_HEADING] = NA if pd.isna(accuracy) else REGISTRY.format(ACCURACY.name, accuracy)
            row[TO_TARGET_HEADING] = to_target_text(TO_TARGET.name, best.get(TO_TARGET.name),
                                                    best.get("quality.target_reached"), NA)
            for metric, heading in AT_BEST_NOISE:
                value = pd.to_numeric(best.get(metric), errors="coerce")
                if not pd.isna(value):
                    winners_by.setdefault(heading, []).append((variant, _oriented(metric, value)))
                    accuracy_noise.add(float(best["noise"]))
        for metric in SPEED_COLUMNS:
            heading = REGISTRY[metric].heading()
            fastest = _best(mine, metric)
            if fastest is None:
                row[heading] = NA
                continue
            threads = fastest.get("threads")
            row[heading] = f"{REGISTRY.format(metric, fastest[metric])} ({threads_text(threads, fastest.get('device'))})"
            winners_by.setdefault(heading, []).append((variant, _oriented(metric, fastest[metric])))
        rows.append(row)
    table = pd.DataFrame(rows).fillna(NA)
    if len(accuracy_noise) > 1:  # accuracies and times to target at different noise levels: no variant wins by them
        for _, heading in AT_BEST_NOISE:
            winners_by.pop(heading, None)
    winners = {heading: max(entries, key=lambda entry: entry[1])[0] for heading, entries in winners_by.items()}
    for heading, variant in winners.items():
        table.loc[table["variant"] == str(variant), heading] += f" {WINNER}"
    return table, winners


PARETO_SPEED = ("speed.latency_b1_p99_ms", "speed.latency_b1_p50_ms")  # the first that some cell states


def pareto_speed_metric(ok: pd.DataFrame) -> str:
    """Batch-1 p99, or p50 where no cell states a p99 (it needs 100 calls: a small run's loop makes fewer), so that
    the figure is drawn whatever the latency settings."""
    return next((metric for metric in PARETO_SPEED if numeric(ok, metric).notna().any()), PARETO_SPEED[0])


def pareto_panels(ok: pd.DataFrame, speed: str = PARETO_SPEED[0]) -> list[tuple[str, pd.DataFrame]]:
    """One frame of (series, x = ``speed``, y = PSNR gain) points per noise level; cells missing either left out."""
    points = pd.DataFrame({"series": series_labels(ok).to_numpy(), "noise": ok["noise"].to_numpy(),
                           "x": numeric(ok, speed).to_numpy(),
                           "y": numeric(ok, "quality.gain_db").to_numpy()}).dropna()
    return [(f"noise {float(noise):g}", points[points["noise"] == noise].reset_index(drop=True))
            for noise in sorted(first_seen(points["noise"]))]


def section(run: Run) -> Markup:
    frame = run.frame
    ok = ordered(measured_cells(frame))
    counts = cell_counts(frame) if not frame.empty else {}
    table, winners = variant_table(ok) if not ok.empty else (pd.DataFrame(), {})
    speed = pareto_speed_metric(ok) if not ok.empty else PARETO_SPEED[0]
    panels = pareto_panels(ok, speed) if not ok.empty else []
    figure = None
    if panels:
        figure = Markup(plots.img_tag(plots.pareto_figure(panels, first_seen(series_labels(ok)),
                                                          REGISTRY[speed].heading(),
                                                          REGISTRY["quality.gain_db"].heading()),
                                      f"PSNR gain against batch-1 {REGISTRY.label(speed)}, one point per cell"))
    classes = pd.DataFrame("", index=table.index, columns=table.columns)
    for heading, variant in winners.items():
        classes.loc[table["variant"] == str(variant), heading] = "winner"
    return render("sections/overview.html",
                  environment=environment_line(run.record), counts=counts,
                  table=styled_table(table, {}, "overview", classes) if not table.empty else None,
                  winners=winners, figure=figure, speed_label=REGISTRY.label(speed),
                  no_p99=speed != PARETO_SPEED[0], links=run.links)
