"""Accuracy (QoS): the reference classifier's accuracy on the outputs, the robustness sweep over test noise levels and
the latent diagnostics; with several seeds, each figure as mean ± 95% CI."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.aggregate import aggregate_over_seeds
from aebench.metrics import MIN_ACCURACY_DROP, NEAR_ZERO
from aebench.report.page import Run, render
from aebench.report.quality import UNBOUNDED_PSNR_DB, noise_axis_label
from aebench.report.table import (
    AXIS_FORMATS,
    CI_NOTE,
    Column,
    aggregated_display,
    first_seen,
    numeric,
    ok_cells,
    ordered,
    several_seeds,
    strings,
    styled_table,
    with_ci,
    with_series,
)

ACCURACY_COLUMNS = (
    Column("quality.acc_clean"),
    Column("quality.acc_noisy"),
    Column("quality.acc_denoised"),
    Column("quality.acc_gain_points"),
    Column("quality.acc_recovered"),
    Column("quality.probe_acc"),
    Column("quality.ssim"),
    Column("quality.gain_db"),
)
DIAGNOSTIC_COLUMNS = (
    Column("diag.mean_activation"),
    Column("diag.near_zero_fraction"),
    Column("diag.dead_unit_fraction"),
    Column("diag.jacobian_fro_sq_autodiff"),
    Column("diag.jacobian_fro_sq_closed_form"),
)
ROBUST_PREFIX = "robust.psnr_db@"
NOISY_ROBUST_PREFIX = "robust.noisy_psnr_db@"
ROBUST_AUC = Column("robust.psnr_auc")
DIGIT_PREFIX = "diag.mse_digit"
BY_SERIES = {"series": "variant", "noise": "noise"}  # the aggregated tables' axes: source column -> heading


def accuracy_table(frame: pd.DataFrame) -> Markup:
    ok = with_series(ordered(ok_cells(frame)))
    table = aggregate_over_seeds(ok, [column.metric for column in ACCURACY_COLUMNS], by=list(BY_SERIES))
    display, formats = aggregated_display(table, BY_SERIES, ACCURACY_COLUMNS)
    return styled_table(display, formats, "accuracy")


def _robust_levels(frame: pd.DataFrame, prefix: str) -> dict[float, str]:
    """Test noise level -> column, for the robustness columns the run recorded, in level order."""
    found = {}
    for column in frame.columns:
        if column.startswith(prefix):
            try:
                found[float(column.removeprefix(prefix))] = column
            except ValueError:
                continue
    return dict(sorted(found.items()))


def _classifier_accuracy(ok: pd.DataFrame) -> str:
    """'0.9871 (seed 0), ...': the reference classifier's own test accuracy per seed, or '' if not recorded."""
    if "info.classifier_test_acc" not in ok.columns:
        return ""
    accuracy = pd.to_numeric(ok["info.classifier_test_acc"], errors="coerce")
    per_seed = pd.DataFrame({"seed": ok["seed"], "acc": accuracy}).dropna().drop_duplicates("seed")
    return ", ".join(f"{acc:.4f} (seed {int(seed)})" for seed, acc in zip(per_seed["seed"], per_seed["acc"]))


def robustness_part(frame: pd.DataFrame) -> Markup:
    ok = with_series(ordered(ok_cells(frame)))
    levels = _robust_levels(ok, ROBUST_PREFIX)
    if not levels:
        return render("sections/robustness.html", figure=None)
    order = first_seen(ok["series"])
    table = aggregate_over_seeds(ok, [*levels.values(), ROBUST_AUC.metric], by=list(BY_SERIES))
    trained_at = sorted(first_seen(table["noise"]))
    panels = []
    for noise in trained_at:
        rows = table[table["noise"] == noise].set_index("series")
        curves = pd.DataFrame({series: [rows.at[series, column] if series in rows.index else np.nan
                                        for column in levels.values()] for series in order}, index=list(levels))
        panels.append((f"trained at noise {float(noise):g}", curves))
    noisy_levels = _robust_levels(ok, NOISY_ROBUST_PREFIX)
    noisy = pd.Series({level: numeric(ok, column).mean() for level, column in noisy_levels.items()}, dtype="float64")
    noisy = noisy[noisy < UNBOUNDED_PSNR_DB]
    figure = plots.robustness_figure(panels, noisy if not noisy.empty else None,
                                     noise_axis_label(ok, "test noise level"))
    auc = pd.DataFrame({"variant": order})
    for noise in trained_at:
        rows = table[table["noise"] == noise].set_index("series").reindex(order)
        auc[f"trained at {float(noise):g}"] = with_ci(rows.reset_index(drop=True), ROBUST_AUC).to_numpy()
    return render("sections/robustness.html",
                  figure=Markup(plots.img_tag(figure, "PSNR vs test noise level per variant")),
                  span=f"{min(levels):g} to {max(levels):g}", table=styled_table(auc, {}, "robustness"))


def _per_digit_table(ok: pd.DataFrame) -> Markup | None:
    """Reconstruction MSE per true label (mean over seeds), one column per digit the run recorded."""
    digits = sorted((int(column.removeprefix(DIGIT_PREFIX)), column) for column in ok.columns
                    if column.startswith(DIGIT_PREFIX) and column.removeprefix(DIGIT_PREFIX).isdigit())
    if not digits:
        return None
    per_digit = aggregate_over_seeds(ok, [column for _, column in digits], by=list(BY_SERIES))
    display = pd.DataFrame({"variant": per_digit["series"], "noise": per_digit["noise"]})
    formats = {"noise": AXIS_FORMATS["noise"]}
    for digit, column in digits:
        display[str(digit)] = per_digit[column]
        formats[str(digit)] = Column(column).format
    return styled_table(display, formats, "perdigit")


def diagnostics_part(frame: pd.DataFrame) -> Markup:
    ok = with_series(ordered(ok_cells(frame)))
    if not any(numeric(ok, column.metric).notna().any() for column in DIAGNOSTIC_COLUMNS):
        return render("sections/diagnostics.html", table=None)
    table = aggregate_over_seeds(ok, [column.metric for column in DIAGNOSTIC_COLUMNS], by=list(BY_SERIES))
    display, formats = aggregated_display(table, BY_SERIES, DIAGNOSTIC_COLUMNS)
    return render(
        "sections/diagnostics.html",
        table=styled_table(display, formats, "diagnostics"), near_zero=f"{NEAR_ZERO:g}",
        jacobian=Column("diag.jacobian_fro_sq_autodiff").heading in display.columns,
        jacobian_checks=first_seen(v for v in strings(ok, "info.jacobian_check") if v),
        per_digit_table=_per_digit_table(ok),
    )


def section(run: Run) -> Markup:
    frame = run.frame
    ok = ok_cells(frame)
    if ok.empty:
        return render("sections/accuracy.html", ok=False)
    classified = numeric(ok, "quality.acc_denoised").notna().any() or numeric(ok, "quality.probe_acc").notna().any()
    return render(
        "sections/accuracy.html", ok=True, min_drop_points=f"{MIN_ACCURACY_DROP * 100:g}",
        accuracy_table=accuracy_table(frame) if classified else None,
        classifier_accuracy=_classifier_accuracy(ok) if classified else "",
        ci_note=CI_NOTE if several_seeds(frame) else "",
        robustness=robustness_part(frame), diagnostics=diagnostics_part(frame),
    )
