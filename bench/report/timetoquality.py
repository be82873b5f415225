"""Time to quality: each model's validation PSNR against the training images it has seen, the target, and how long
training took to get there (aebench.timetoquality). One row per trained model: its other thread counts share it."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.metrics import REGISTRY
from aebench.report.page import Run, render
from aebench.report.table import NA, first_seen, numeric, ok_cells, ordered, styled_table, threads_text, with_series
from aebench.timetoquality import CURVE_ARTIFACTS, to_target_text

TABLE_METRICS = ("quality.target_psnr_db", "speed.time_to_target_s", "quality.images_to_target",
                 "quality.val_psnr_db", "quality.val_gain_db", "speed.train_total_s", "timing.validation_s")


def training_cells(run: Run) -> pd.DataFrame:
    """The rows of the cells that trained their model: one per trained model."""
    trained = {result.cell.index for result in run.results if result.trained_its_model}
    ok = ordered(ok_cells(run.frame))
    return ok[ok["cell"].isin(trained)] if not ok.empty else ok


def ttq_table(trained: pd.DataFrame) -> Markup:
    display = pd.DataFrame({"variant": trained["variant"].astype(str).to_numpy(),
                            "noise": [f"{float(noise):g}" for noise in trained["noise"]],
                            "trained on": [threads_text(threads, device)
                                           for threads, device in zip(trained["threads"], trained["device"])]})
    reached = numeric(trained, "quality.target_reached")
    for metric in TABLE_METRICS:
        display[REGISTRY[metric].heading()] = [to_target_text(metric, value, hit, NA)
                                               for value, hit in zip(numeric(trained, metric), reached)]
    return styled_table(display, {}, "timetoquality")


def section(run: Run) -> Markup:
    trained = training_cells(run)
    with_curves = trained[[all(name in run.artifacts.get(int(cell), {}) for name in CURVE_ARTIFACTS)
                           for cell in trained["cell"]]] if not trained.empty else trained
    if with_curves.empty:
        return render("sections/timetoquality.html", figure=None)
    with_curves = with_series(with_curves)
    series_order = first_seen(with_curves["series"])
    panels = []
    for noise in sorted(first_seen(with_curves["noise"])):
        rows = with_curves[with_curves["noise"] == noise]
        curves = []
        for series in series_order:  # every panel lists the series in one order
            mine = rows[rows["series"] == series]
            for _, row in mine.iterrows():  # several rows only with several seeds
                stored = run.artifacts[int(row["cell"])]
                label = series if len(mine) == 1 else f"{series} seed {int(row['seed'])}"
                curves.append((label, stored["curve_images"], stored["curve_val_psnr_db"]))
        targets = numeric(rows, "quality.target_psnr_db").dropna()
        target = float(targets.mean()) if not targets.empty else None
        panels.append((f"noise {float(noise):g}", curves, target))
    figure = plots.training_curve_figure(panels)
    settings = run.matrix.get("time_to_quality") or {}
    return render("sections/timetoquality.html",
                  figure=Markup(plots.img_tag(figure, "validation PSNR vs training images seen per variant")),
                  table=ttq_table(trained), every_steps=settings.get("every_steps"),
                  gain=settings.get("target_gain_db"), validation_size=run.matrix.get("validation_size"))
