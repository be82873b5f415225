"""Quality vs noise: each variant's output PSNR (and, when recorded, the classifier's accuracy on it) per noise
level, against the noisy input's."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.report.page import Run, render
from aebench.report.table import first_seen, numeric, ok_cells, pivot, series_labels, strings

UNBOUNDED_PSNR_DB = 100.0  # at or above this a PSNR means "identical images" (aebench.quality caps MSE at 1e-12)


def noise_axis_label(ok: pd.DataFrame, what: str) -> str:
    """'gaussian noise level' when the run used one noise type, else plain 'noise level'."""
    noise_type = first_seen(strings(ok, "noise_type"))
    return f"{noise_type[0]} {what}" if len(noise_type) == 1 and noise_type[0] else what


def section(run: Run) -> Markup:
    ok = ok_cells(run.frame)
    psnr = numeric(ok, "quality.psnr_db")
    if psnr.notna().sum() == 0:
        return render("sections/quality.html", figure=None)
    order = first_seen(series_labels(ok))
    psnr_table = pivot(ok, "noise", psnr, order)
    noisy = pd.DataFrame({"noise": ok["noise"].to_numpy(), "y": numeric(ok, "quality.noisy_psnr_db").to_numpy()})
    noisy_line = noisy.dropna().groupby("noise")["y"].mean()
    # A noise-free input scores the PSNR cap (120 dB for an MSE of 0): drawn, it would flatten every other line.
    unbounded = noisy_line[noisy_line >= UNBOUNDED_PSNR_DB]
    noisy_line = noisy_line[noisy_line < UNBOUNDED_PSNR_DB]
    accuracy = noisy_accuracy = None
    if numeric(ok, "quality.acc_denoised").notna().any():
        # same columns as the PSNR panel, so each series keeps its colour in both
        accuracy = pivot(ok, "noise", numeric(ok, "quality.acc_denoised"), order).reindex(columns=psnr_table.columns)
        acc_noisy = pd.DataFrame({"noise": ok["noise"].to_numpy(), "y": numeric(ok, "quality.acc_noisy").to_numpy()})
        noisy_accuracy = acc_noisy.dropna().groupby("noise")["y"].mean()
    figure = plots.quality_figure(psnr_table, noisy_line, accuracy, noisy_accuracy,
                                  noise_axis_label(ok, "noise level"))
    averaged = [words for name, words in (("threads", "thread settings"), ("seed", "seeds"))
                if name in ok.columns and ok[name].nunique() > 1]
    return render(
        "sections/quality.html",
        figure=Markup(plots.img_tag(figure, "PSNR vs noise level per variant")),
        averaged=" and ".join(averaged),
        unbounded_levels=", ".join(f"{level:g}" for level in unbounded.index),
    )
