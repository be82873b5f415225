"""Time to quality: each model's validation PSNR against the training images it has seen, the target, and how long
training took to get there (aebench.timetoquality). One row per trained model: its other thread counts share it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.metrics import REGISTRY, flag_is_set
from aebench.report.overview import threads_text
from aebench.report.page import Run, render
from aebench.report.table import first_seen, ok_cells, ordered, styled_table, text
from aebench.timetoquality import CURVE_ARTIFACTS

NOT_REACHED = "not reached"
TABLE_METRICS = ("quality.target_psnr_db", "speed.time_to_target_s", "quality.images_to_target",
                 "quality.val_psnr_db", "quality.val_gain_db", "speed.train_total_s", "timing.validation_s")


def training_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok cells that trained their model (info.trained_by is their own key): one per trained model."""
    ok = ordered(ok_cells(frame))
    if ok.empty or "info.trained_by" not in ok.columns:
        return ok.iloc[0:0]
    return ok[[text(trainer) == key for trainer, key in zip(ok["info.trained_by"], ok["key"])]]


def _cell_text(metric: str, value: object, reached: bool) -> str:
    if metric in ("speed.time_to_target_s", "quality.images_to_target") and not reached:
        return NOT_REACHED
    number = pd.to_numeric(value, errors="coerce")
    return "" if pd.isna(number) else REGISTRY.format(metric, number)


def ttq_table(trained: pd.DataFrame) -> Markup:
    display = pd.DataFrame({"variant": trained["variant"].astype(str).to_numpy(),
                            "noise": [f"{float(noise):g}" for noise in trained["noise"]],
                            "trained on": [threads_text(threads) if pd.notna(threads) else str(device)
                                           for threads, device in zip(trained["threads"], trained["device"])]})
    for metric in TABLE_METRICS:
        values = trained.get(metric, pd.Series(np.nan, index=trained.index))
        reached = [flag_is_set(flag) for flag in trained.get("quality.target_reached",
                                                              pd.Series(np.nan, index=trained.index))]
        display[REGISTRY[metric].heading()] = [_cell_text(metric, value, hit) for value, hit in zip(values, reached)]
    return styled_table(display, {}, "timetoquality")


def section(run: Run) -> Markup:
    trained = training_cells(run.frame)
    with_curves = trained[[all(name in run.artifacts.get(int(cell), {}) for name in CURVE_ARTIFACTS[:3])
                           for cell in trained["cell"]]] if not trained.empty else trained
    if with_curves.empty:
        return render("sections/timetoquality.html", figure=None, table=None, every_steps=None)
    variants = first_seen(with_curves["variant"])
    panels = []
    for noise in sorted(first_seen(with_curves["noise"])):
        rows = with_curves[with_curves["noise"] == noise]
        curves = []
        for variant in variants:  # every panel lists the variants in one order: each keeps its colour
            for _, row in rows[rows["variant"] == variant].iterrows():
                stored = run.artifacts[int(row["cell"])]
                label = variant if rows["variant"].tolist().count(variant) == 1 else f"{variant} ({row['key']})"
                curves.append((label, stored["curve_images"], stored["curve_val_psnr_db"]))
        targets = pd.to_numeric(rows.get("quality.target_psnr_db"), errors="coerce").dropna()
        target = float(targets.mean()) if not targets.empty else None
        panels.append((f"noise {float(noise):g}", curves, target))
    figure = plots.training_curve_figure(panels)
    settings = run.matrix.get("time_to_quality") or {}
    return render("sections/timetoquality.html",
                  figure=Markup(plots.img_tag(figure, "validation PSNR vs training images seen per variant")),
                  table=ttq_table(trained), every_steps=settings.get("every_steps"),
                  gain=settings.get("target_gain_db"), validation_size=run.matrix.get("validation_size"))
