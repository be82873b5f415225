"""The HTML report of one run: a single self-contained file (inline CSS, figures as base64 PNG data URIs, no scripts,
no external links), so it can be mailed, archived or opened offline years later and still show everything.

``write_report(store, run_id, reports_dir)`` writes ``reports_dir/<run_id>/index.html`` and, when the run is the
newest in the store, copies it to ``reports_dir/latest.html``.

Every table is a pandas Styler with ``escape="html"``, and every other string from the store goes through
``html.escape``: error messages and stderr tails are arbitrary text from crashed workers. The store's columns are read
defensively: a metric may be missing (an older or newer worker) or NaN, and a run may hold no ok cell at all.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aebench import atomic, plots
from aebench.metrics import NEAR_ZERO
from aebench.aggregate import CI_SUFFIX, aggregate_over_seeds
from aebench.results import UNSTABLE_CV, CellResult
from aebench.store import Store, flat_frame

UNSTABLE_MARK = "≈"
UNSTABLE_LEGEND = f"{UNSTABLE_MARK} unstable: stdev > {UNSTABLE_CV:.0%} of mean"
NA = "—"
PREFERRED_VARIANT = "conv"  # the paper's model: the latency and image-grid sections show it when it ran
FEW_LATENCY_CELLS = 8  # up to this many ok cells, every one gets a latency curve
MAX_LATENCY_CURVES = 12
MAX_INFO_VALUES = 8
UNBOUNDED_PSNR_DB = 100.0  # at or above this a PSNR means "identical images" (aebench.quality caps MSE at 1e-12)
GRID_NAMES = ("grid_clean", "grid_noisy", "grid_denoised")
# The Styler emits a <style> block per table even when it has no styles; the page's CSS covers every table.
_EMPTY_STYLE = re.compile(r'<style type="text/css">\s*</style>\s*')

Formatter = Callable[[Any], str]


# -- number formats ----------------------------------------------------------------------------------------------------


def _fixed(digits: int) -> Formatter:
    return lambda value: f"{float(value):.{digits}f}"


def _signed(digits: int) -> Formatter:
    return lambda value: f"{float(value):+.{digits}f}"


def _thousands(value: Any) -> str:
    return f"{float(value):,.0f}"


def _milliseconds(value: Any) -> str:
    """Three significant figures for sub-millisecond latencies, two decimals above."""
    value = float(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def _general(value: Any) -> str:
    return f"{float(value):g}"


def _integer(value: Any) -> str:
    return str(int(value))


def _text(value: Any) -> str:
    """Any stored value (number, bool, list, dict) as one line of text; escaping happens where it is rendered."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={_text(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(item) for item in value)
    return str(value)


# -- frame access ------------------------------------------------------------------------------------------------------


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats, all-NaN when the run did not record it."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _flags(frame: pd.DataFrame, column: str | None) -> pd.Series:
    """An ``*_unstable`` column as booleans (missing or NaN = stable)."""
    if column is None:
        return pd.Series(False, index=frame.index)
    return _numeric(frame, column).fillna(0.0) >= 0.5


def _strings(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype="object")
    return frame[column].astype("object").where(frame[column].notna(), "")


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["status"] == "ok"]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("cell", kind="stable") if "cell" in frame.columns else frame


def _first_seen(values: Iterable[Any]) -> list[Any]:
    """Distinct values in order of first appearance: cells run in matrix order, so this is the matrix's order."""
    return list(dict.fromkeys(values))


def _varying(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [column for column in columns if column in frame.columns and frame[column].nunique(dropna=False) > 1]


def _series_labels(frame: pd.DataFrame) -> pd.Series:
    """One line per variant, split further by device/backend/precision only where the run swept those axes."""
    extra = _varying(frame, ("device", "backend", "precision"))
    labels = _strings(frame, "variant").astype(str)
    for column in extra:
        labels = labels + " " + _strings(frame, column).astype(str)
    return labels


def _cell_labels(frame: pd.DataFrame) -> list[str]:
    """Short labels naming only the axes that differ between these cells."""
    shown = _varying(frame, ("variant", "noise", "device", "threads", "backend", "precision", "seed")) or ["variant"]
    labels = []
    for _, row in frame.iterrows():
        parts = []
        for column in shown:
            value = row.get(column)
            if column == "noise":
                parts.append(f"noise {float(value):g}")
            elif column == "threads":
                if pd.notna(value):
                    parts.append(f"{int(value)} thr")
                elif "device" not in shown:  # an accelerator cell: its device says more than a missing count
                    parts.append(str(row.get("device", "")))
            elif column == "seed":
                parts.append(f"seed {value}")
            else:
                parts.append(str(value))
        labels.append(" ".join(parts))
    return labels


# -- tables ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: where it comes from, its heading and its number format; in the results table, the column of
    its stability flag; in the tables aggregated over seeds, the format of its CI half-width (default: its own)."""

    source: str
    label: str
    format: Formatter
    unstable: str | None = None
    ci_format: Formatter | None = None


AXIS_COLUMNS = (
    Column("variant", "variant", str),
    Column("noise", "noise", _general),
    Column("device", "device", str),
    Column("threads", "threads", _integer),
    Column("backend", "backend", str),
    Column("precision", "precision", str),
    Column("seed", "seed", _integer),
    Column("status", "status", str),
)
METRIC_COLUMNS = (
    Column("quality.psnr_db", "PSNR (dB)", _fixed(2)),
    Column("quality.noisy_psnr_db", "noisy PSNR (dB)", _fixed(2)),
    Column("quality.gain_db", "gain (dB)", _signed(2)),
    Column("quality.ssim", "SSIM", _fixed(4)),
    Column("quality.bce", "BCE", _fixed(4)),
    Column("quality.mse", "MSE", _fixed(5)),
    Column("speed.train_ips", "train img/s", _thousands, "speed.train_unstable"),
    Column("speed.infer_ips", "infer img/s", _thousands, "speed.infer_unstable"),
    Column("speed.latency_b1_p50_ms", "batch-1 p50 (ms)", _milliseconds, "speed.latency_b1_unstable"),
    Column("speed.latency_b1_p99_ms", "batch-1 p99 (ms)", _milliseconds, "speed.latency_b1_unstable"),
    Column("speed.predict_b1_p50_ms", "predict() b1 p50 (ms, framework path)", _milliseconds,
           "speed.predict_b1_unstable"),
    Column("speed.cold_start_s", "cold start (s)", _fixed(2)),
    Column("memory.peak_rss_mb", "peak RSS (MB)", _thousands),
)


def _marked(values: pd.Series, flags: pd.Series, format: Formatter) -> pd.Series:
    """Numbers formatted here (not by the Styler) so an unstable one can carry its mark as visible text."""
    return pd.Series(
        [None if pd.isna(v) else format(v) + (f" {UNSTABLE_MARK}" if flag else "") for v, flag in zip(values, flags)],
        index=values.index, dtype="object",
    )


def styled_table(display: pd.DataFrame, formats: Mapping[str, Formatter], table_id: str,
                 classes: pd.DataFrame | None = None, css_class: str = "data", header: bool = True) -> str:
    """A Styler table: every cell formatted (NaN as a dash), HTML-escaped, no index, stable ids for diffs."""
    formatter = {column: formats.get(column, str) for column in display.columns}
    styler = display.style.format(formatter, na_rep=NA, escape="html").hide(axis="index")
    if not header:
        styler = styler.hide(axis="columns")
    styler = styler.set_uuid(table_id).set_table_attributes(f'class="{css_class}"')
    if classes is not None:
        styler = styler.set_td_classes(classes)
    return _EMPTY_STYLE.sub("", styler.to_html())


def results_table(frame: pd.DataFrame) -> str:
    """One row per cell: its axes, status, quality, speed and memory figures; unstable speed figures marked."""
    if frame.empty:
        return "<p>This run recorded no cells.</p>"
    frame = _ordered(frame).reset_index(drop=True)
    display = pd.DataFrame(index=frame.index)
    formats: dict[str, Formatter] = {}
    for column in AXIS_COLUMNS:
        if column.source == "seed" and not _varying(frame, ("seed",)):
            continue  # one seed: a constant column says nothing the header does not
        if column.source in frame.columns:
            display[column.label] = frame[column.source].astype("object").where(frame[column.source].notna(), None)
            formats[column.label] = column.format
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    if "status" in display.columns:
        classes["status"] = "status-" + _strings(frame, "status").astype(str)
    for column in METRIC_COLUMNS:
        values = _numeric(frame, column.source)
        if column.unstable is not None:
            flags = _flags(frame, column.unstable) & values.notna()
            display[column.label] = _marked(values, flags, column.format)
            classes[column.label] = np.where(flags, "unstable", "")
        else:
            display[column.label] = values
            formats[column.label] = column.format
            classes[column.label] = ""
    return styled_table(display, formats, "results", classes, css_class="data results")


def key_value_table(items: Mapping[str, Any], table_id: str) -> str:
    if not items:
        return f"<p>{NA}</p>"
    display = pd.DataFrame({"key": [str(key) for key in items], "value": [_text(value) for value in items.values()]})
    return styled_table(display, {}, table_id, css_class="kv", header=False)


# -- sections ----------------------------------------------------------------------------------------------------------


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def header_section(record: Mapping[str, Any]) -> str:
    commit = record.get("git_commit") or "unknown"
    if record.get("git_dirty"):
        commit += " (dirty: uncommitted changes)"
    matrix = record.get("matrix") or {}
    items = {
        "matrix": record.get("matrix_name"),
        "description": matrix.get("description") or None,
        "run id": record.get("run_id"),
        "started (UTC)": record.get("started_at"),
        "finished (UTC)": record.get("finished_at"),
        "status": record.get("status"),
        "git commit": commit,
        "machine id": record.get("machine_id"),
        "command": " ".join(map(str, record.get("argv") or [])) or None,
    }
    parts = [key_value_table({k: v for k, v in items.items() if v is not None}, "run")]
    if record.get("status") not in ("complete", "finished"):
        parts.append(f'<p class="warning">This run ended with status {html.escape(str(record.get("status")))}: '
                     "its results may be partial.</p>")
    summary = record.get("summary") or {}
    if summary:
        parts.append("<h3>Run summary</h3>" + key_value_table(summary, "summary"))
    return "\n".join(parts)


def method_paragraph(matrix: Mapping[str, Any]) -> str:
    """How the numbers were taken, from the run's own matrix settings (not from today's defaults)."""
    latency = matrix.get("latency") or {}
    throughput = matrix.get("throughput") or {}

    def get(table: Mapping[str, Any], key: str) -> str:
        return html.escape(_text(table.get(key)))

    predict = (
        "<b>predict() b1 (framework path)</b> is Keras <code>model.predict()</code> on one image, with all of its "
        "per-call machinery: it is what a naive caller sees, not what the model costs."
        if matrix.get("predict_path", True) else "Keras <code>predict()</code> was not timed in this run."
    )
    return (
        "<p><b>Training:</b> "
        f"{get(matrix, 'epochs')} epochs over {get(matrix, 'train_size')} training images, batch size "
        f"{get(matrix, 'batch_size')}, Adam with learning rate {get(matrix, 'learning_rate')}, XLA jit_compile "
        f"{get(matrix, 'jit_compile')}. <b>Training throughput</b> (train img/s) is the rate over the steady epochs: "
        "the first epoch, which includes tracing and compilation, is excluded (it is stored as "
        "<code>speed.train_first_epoch_s</code>).</p>"
        "<p><b>Quality</b> (PSNR, SSIM, BCE, MSE) is computed in NumPy on "
        f"{get(matrix, 'test_size')} noisy test images, scored against the clean originals; noisy PSNR is that of the "
        "corrupted input itself, and gain = PSNR &minus; noisy PSNR.</p>"
        "<p><b>Batch-1 latency</b> is timed on the compiled forward call (<code>tf.function</code> / "
        "<code>jax.jit</code>), not on <code>predict()</code>: "
        f"{get(latency, 'warmup')} warm-up calls, then single images one after another until at least "
        f"{get(latency, 'min_count')} calls and {get(latency, 'min_duration_s')} s (cap "
        f"{get(latency, 'max_duration_s')} s); every call is timed and the percentiles are taken over those calls. "
        f"<b>Inference throughput</b> (infer img/s): batches of {get(throughput, 'batch_size')} back to back after "
        f"{get(throughput, 'warmup')} warm-up batches, at least {get(throughput, 'min_count')} batches and "
        f"{get(throughput, 'min_duration_s')} s. {predict} <b>Cold start</b> is model build plus the first compiled "
        "call. <b>Peak RSS</b> is the worker process's maximum resident memory. Each cell runs in a fresh process "
        f"pinned to its thread count. {html.escape(UNSTABLE_LEGEND)}.</p>"
    )


def results_section(frame: pd.DataFrame, matrix: Mapping[str, Any]) -> str:
    paths = _first_seen(_text(v) for v in frame.get("info.inference_path", pd.Series(dtype=object)) if not pd.isna(v))
    used = _note(f"Compiled inference path in this run: {', '.join(paths)}.") if paths else ""
    seeds = ""
    if _several_seeds(frame):
        seeds = "<h3>Over seeds</h3>" + seed_summary_table(frame) + _note(CI_NOTE)
    return (
        results_table(frame)
        + _note(UNSTABLE_LEGEND)
        + seeds
        + "<h3>How these numbers were taken</h3>"
        + method_paragraph(matrix)
        + used
    )


def _pivot(frame: pd.DataFrame, index: str, values: pd.Series, order: Sequence[str]) -> pd.DataFrame:
    """Mean of ``values`` per (index, series label): averages over the axes not shown (threads, seeds, noise)."""
    data = pd.DataFrame({"x": frame[index].to_numpy(), "series": _series_labels(frame).to_numpy(),
                         "y": values.to_numpy()}).dropna(subset=["y"])
    table = data.pivot_table(index="x", columns="series", values="y", aggfunc="mean")
    table = table[[label for label in order if label in table.columns]].sort_index()
    table.index.name = index
    return table


def quality_section(frame: pd.DataFrame) -> str:
    ok = _ok(frame)
    psnr = _numeric(ok, "quality.psnr_db")
    if psnr.notna().sum() == 0:
        return _note("No ok cell recorded quality.psnr_db: nothing to plot.")
    order = _first_seen(_series_labels(ok))
    psnr_table = _pivot(ok, "noise", psnr, order)
    noisy = pd.DataFrame({"noise": ok["noise"].to_numpy(), "y": _numeric(ok, "quality.noisy_psnr_db").to_numpy()})
    noisy_line = noisy.dropna().groupby("noise")["y"].mean()
    # A noise-free input scores the PSNR cap (120 dB for an MSE of 0): drawn, it would flatten every other line.
    unbounded = noisy_line[noisy_line >= UNBOUNDED_PSNR_DB]
    noisy_line = noisy_line[noisy_line < UNBOUNDED_PSNR_DB]
    accuracy = noisy_accuracy = None
    if _numeric(ok, "quality.acc_denoised").notna().any():
        # same columns as the PSNR panel, so each series keeps its colour in both
        accuracy = _pivot(ok, "noise", _numeric(ok, "quality.acc_denoised"), order).reindex(columns=psnr_table.columns)
        acc_noisy = pd.DataFrame({"noise": ok["noise"].to_numpy(), "y": _numeric(ok, "quality.acc_noisy").to_numpy()})
        noisy_accuracy = acc_noisy.dropna().groupby("noise")["y"].mean()
    noise_type = _first_seen(_strings(ok, "noise_type"))
    noise_label = f"{noise_type[0]} noise level" if len(noise_type) == 1 and noise_type[0] else "noise level"
    figure = plots.quality_figure(psnr_table, noisy_line, accuracy, noisy_accuracy, noise_label)
    averaged = [words for name, words in (("threads", "thread settings"), ("seed", "seeds"))
                if name in ok.columns and ok[name].nunique() > 1]
    caption = "Solid: PSNR of each variant's output against the clean images; dashed: PSNR of the noisy input."
    if averaged:
        caption += f" Averaged over {' and '.join(averaged)} (quality does not depend on the thread count)."
    if not unbounded.empty:
        levels = ", ".join(f"{level:g}" for level in unbounded.index)
        caption += f" The noisy input at noise {levels} equals the clean image (unbounded PSNR) and is not drawn."
    return plots.img_tag(figure, "PSNR vs noise level per variant") + _note(caption)


# -- accuracy (QoS), robustness, diagnostics; mean ± 95% CI over seeds -------------------------------------------------


def _percent(value: Any) -> str:
    return f"{float(value) * 100:.1f}%"


SEED_SUMMARY_FIGURES = (
    Column("quality.psnr_db", "PSNR (dB)", _fixed(2)),
    Column("quality.gain_db", "gain (dB)", _signed(2), ci_format=_fixed(2)),
    Column("quality.ssim", "SSIM", _fixed(4)),
    Column("quality.acc_denoised", "acc denoised", _fixed(4)),
    Column("quality.probe_acc", "probe acc", _fixed(4)),
    Column("speed.train_ips", "train img/s", _thousands),
    Column("speed.infer_ips", "infer img/s", _thousands),
    Column("speed.latency_b1_p50_ms", "batch-1 p50 (ms)", _milliseconds),
)
ACCURACY_FIGURES = (
    Column("quality.acc_clean", "acc clean", _fixed(4)),
    Column("quality.acc_noisy", "acc noisy", _fixed(4)),
    Column("quality.acc_denoised", "acc denoised", _fixed(4)),
    Column("quality.acc_recovered", "recovered", _percent),
    Column("quality.probe_acc", "probe acc", _fixed(4)),
    Column("quality.ssim", "SSIM", _fixed(4)),
    Column("quality.gain_db", "gain (dB)", _signed(2), ci_format=_fixed(2)),
)
DIAGNOSTIC_FIGURES = (
    Column("diag.mean_activation", "mean activation", _fixed(4)),
    Column("diag.near_zero_fraction", "near-zero fraction", _fixed(3)),
    Column("diag.dead_unit_fraction", "dead-unit fraction", _fixed(3)),
    Column("diag.jacobian_fro_sq_autodiff", "‖J‖²_F autodiff", lambda v: f"{float(v):.5g}"),
    Column("diag.jacobian_fro_sq_closed_form", "‖J‖²_F closed form", lambda v: f"{float(v):.5g}"),
)
ROBUST_PREFIX = "robust.psnr_db@"
NOISY_ROBUST_PREFIX = "robust.noisy_psnr_db@"
DIGIT_PREFIX = "diag.mse_digit"
CI_NOTE = ("Figures are the mean ± the half-width of the 95% confidence interval over seeds (Student t, "
           "aebench.aggregate); cells of one seed at several thread counts count as one repeat.")


def _with_ci(table: pd.DataFrame, figure: Column) -> pd.Series:
    """'mean ± half-width' where the interval exists, the mean alone where it does not (one seed), None if missing."""
    means = _numeric(table, figure.source)
    cis = _numeric(table, figure.source + CI_SUFFIX)
    ci_format = figure.ci_format or figure.format
    return pd.Series([None if pd.isna(mean) else figure.format(mean) + ("" if pd.isna(ci) else f" ± {ci_format(ci)}")
                      for mean, ci in zip(means, cis)], index=table.index, dtype="object")


def _aggregated_display(table: pd.DataFrame, axes: Mapping[str, tuple[str, Formatter]],
                        figures: Sequence[Column]) -> tuple[pd.DataFrame, dict[str, Formatter]]:
    """Axis columns, a 'seeds' column when any group has several, then each recorded figure as text with its CI."""
    display = pd.DataFrame(index=table.index)
    formats: dict[str, Formatter] = {}
    for source, (label, format) in axes.items():
        display[label] = table[source].astype("object").where(table[source].notna(), None)
        formats[label] = format
    if (table["n_seeds"] > 1).any():
        display["seeds"] = table["n_seeds"].astype(int)
        formats["seeds"] = _integer
    for figure in figures:
        if _numeric(table, figure.source).notna().any():
            display[figure.label] = _with_ci(table, figure)
    return display, formats


def _several_seeds(frame: pd.DataFrame) -> bool:
    return "seed" in frame.columns and _ok(frame)["seed"].nunique() > 1


def seed_summary_table(frame: pd.DataFrame) -> str:
    """Results over seeds: one row per cell group (every axis but the seed), mean ± 95% CI of the headline figures."""
    ok = _ordered(_ok(frame))
    table = aggregate_over_seeds(ok, [figure.source for figure in SEED_SUMMARY_FIGURES])
    axes = {axis: (axis, _integer if axis == "threads" else _general if axis == "noise" else str)
            for axis in ("variant", "noise", "device", "threads", "backend", "precision")
            if axis in table.columns and (axis in ("variant", "noise") or table[axis].nunique(dropna=False) > 1)}
    display, formats = _aggregated_display(table, axes, SEED_SUMMARY_FIGURES)
    return styled_table(display, formats, "seedsummary")


def _with_series(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(series=_series_labels(frame).to_numpy())


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


def _classifier_note(ok: pd.DataFrame) -> str:
    if "info.classifier_test_acc" not in ok.columns:
        return ""
    per_seed = (pd.DataFrame({"seed": ok["seed"], "acc": pd.to_numeric(ok["info.classifier_test_acc"], errors="coerce")})
                .dropna().drop_duplicates("seed"))
    if per_seed.empty:
        return ""
    text = ", ".join(f"{acc:.4f} (seed {int(seed)})" for seed, acc in zip(per_seed["seed"], per_seed["acc"]))
    return _note(f"Reference classifier, accuracy on the whole clean test set: {text}.")


def accuracy_table(frame: pd.DataFrame) -> str:
    ok = _with_series(_ordered(_ok(frame)))
    table = aggregate_over_seeds(ok, [figure.source for figure in ACCURACY_FIGURES], by=["series", "noise"])
    display, formats = _aggregated_display(table, {"series": ("variant", str), "noise": ("noise", _general)},
                                           ACCURACY_FIGURES)
    return styled_table(display, formats, "accuracy")


def robustness_part(frame: pd.DataFrame) -> str:
    ok = _with_series(_ordered(_ok(frame)))
    levels = _robust_levels(ok, ROBUST_PREFIX)
    if not levels:
        return _note("No ok cell recorded a robustness sweep (robust.* columns).")
    order = _first_seen(ok["series"])
    columns = [*levels.values(), "robust.psnr_auc"]
    table = aggregate_over_seeds(ok, columns, by=["series", "noise"])
    panels = []
    for noise in sorted(_first_seen(table["noise"])):
        rows = table[table["noise"] == noise].set_index("series")
        curves = pd.DataFrame({series: [rows.at[series, column] if series in rows.index else np.nan
                                        for column in levels.values()] for series in order}, index=list(levels))
        panels.append((f"trained at noise {float(noise):g}", curves))
    noisy_levels = _robust_levels(ok, NOISY_ROBUST_PREFIX)
    noisy = pd.Series({level: _numeric(ok, column).mean() for level, column in noisy_levels.items()}, dtype="float64")
    noisy = noisy[noisy < UNBOUNDED_PSNR_DB]
    noise_type = _first_seen(_strings(ok, "noise_type"))
    label = f"{noise_type[0]} test noise level" if len(noise_type) == 1 and noise_type[0] else "test noise level"
    figure = plots.robustness_figure(panels, noisy if not noisy.empty else None, label)
    auc = pd.DataFrame({"variant": order})
    for noise in sorted(_first_seen(table["noise"])):
        rows = table[table["noise"] == noise].set_index("series").reindex(order)
        auc[f"trained at {float(noise):g}"] = _with_ci(rows.reset_index(drop=True),
                                                       Column("robust.psnr_auc", "", _fixed(2))).to_numpy()
    span = f"{min(levels):g} to {max(levels):g}"
    caption = (f"Every trained model evaluated on the test images at test noise levels {span} (one panel per training "
               "noise level; dashed: the noisy input itself, drawn where its PSNR is bounded). The table gives each "
               f"curve's area under PSNR, divided by the level range ({span}): the curve's mean PSNR in dB, higher "
               "is more robust.")
    return (plots.img_tag(figure, "PSNR vs test noise level per variant") + _note(caption)
            + styled_table(auc, {}, "robustness"))


def diagnostics_part(frame: pd.DataFrame) -> str:
    ok = _with_series(_ordered(_ok(frame)))
    if not any(_numeric(ok, figure.source).notna().any() for figure in DIAGNOSTIC_FIGURES):
        return _note("No ok cell recorded latent diagnostics (diag.* columns).")
    table = aggregate_over_seeds(ok, [figure.source for figure in DIAGNOSTIC_FIGURES], by=["series", "noise"])
    display, formats = _aggregated_display(table, {"series": ("variant", str), "noise": ("noise", _general)},
                                           DIAGNOSTIC_FIGURES)
    parts = [styled_table(display, formats, "diagnostics"),
             _note(f"Latent codes of the noisy test inputs. Mean activation is the mean |h| over examples and units; "
                   f"near-zero fraction the share of (example, unit) entries with |h| < {NEAR_ZERO:g}; "
                   "dead-unit fraction the share of units near zero for every input."
                   + (" ‖J‖²_F (contractive variant) is its penalty, the squared Frobenius norm of d(code)/d(input) "
                      "averaged over a sample of test inputs: measured by automatic differentiation beside the closed "
                      "form the training loss uses." if "‖J‖²_F autodiff" in display.columns else ""))]
    reasons = _first_seen(v for v in _strings(ok, "info.jacobian_check") if v)
    if reasons:
        parts.append(_note("Jacobian check: " + "; ".join(map(str, reasons))))
    digits = sorted((int(column.removeprefix(DIGIT_PREFIX)), column) for column in ok.columns
                    if column.startswith(DIGIT_PREFIX) and column.removeprefix(DIGIT_PREFIX).isdigit())
    if digits:
        per_digit = aggregate_over_seeds(ok, [column for _, column in digits], by=["series", "noise"])
        display = pd.DataFrame({"variant": per_digit["series"], "noise": per_digit["noise"]})
        for digit, column in digits:
            display[str(digit)] = per_digit[column]
        formats = {"noise": _general, **{str(digit): _fixed(4) for digit, _ in digits}}
        parts.append("<h3>Reconstruction MSE per class label</h3>" + styled_table(display, formats, "perdigit")
                     + _note("MSE of the outputs against the clean test images, per true label (mean over seeds)."))
    return "".join(parts)


def accuracy_section(frame: pd.DataFrame) -> str:
    ok = _ok(frame)
    if ok.empty:
        return _note("No ok cells: nothing to show.")
    parts = []
    if _numeric(ok, "quality.acc_denoised").notna().any() or _numeric(ok, "quality.probe_acc").notna().any():
        parts.append(
            "<p><b>Reference classifier:</b> a small CNN trained once per dataset and seed on the clean training "
            "images (cached beside the store; its training is not part of any measured phase). <b>acc clean / noisy "
            "/ denoised</b> are its top-1 accuracy on the cell's clean test images, on their noisy versions and on "
            "the autoencoder's outputs. <b>recovered</b> = (denoised &minus; noisy) / (clean &minus; noisy): the "
            "share of the accuracy lost to noise that denoising wins back, the QoS headline (blank where the noise "
            "costs under 1 point of accuracy). <b>probe acc</b>: a logistic regression on the encoder's codes of "
            "clean training images, scored on the codes of clean test images.</p>")
        parts.append(accuracy_table(frame))
        parts.append(_classifier_note(ok))
    else:
        parts.append(_note("This run recorded no classifier or probe accuracy (matrix setting accuracy = false, or "
                           "an older worker); SSIM and gain are in the results table."))
    if _several_seeds(frame):
        parts.append(_note(CI_NOTE))
    parts.append("<h3>Robustness to test noise</h3>" + robustness_part(frame))
    parts.append("<h3>Latent diagnostics</h3>" + diagnostics_part(frame))
    return "".join(parts)


def _speedup_table(series: str, table: pd.DataFrame, unstable: pd.Series, index: int) -> str:
    """Speedup against the series' smallest thread count, and efficiency = speedup / (threads / min threads)."""
    data = table.dropna(subset=["train"])
    if data.empty:
        return ""
    threads = data.index.to_numpy(dtype=np.float64)
    speedup = data["train"] / data["train"].iloc[0]
    display = pd.DataFrame({
        "threads": data.index.astype(int),
        "train img/s": _marked(data["train"], unstable.reindex(data.index, fill_value=False), _thousands),
        "speedup": speedup,
        "efficiency": speedup / (threads / threads[0]),
        "infer img/s": data["infer"],
        "infer speedup": data["infer"] / data["infer"].iloc[0],
    })
    formats = {"threads": _integer, "speedup": lambda v: f"{float(v):.2f}×", "efficiency": lambda v: f"{float(v):.0%}",
               "infer img/s": _thousands, "infer speedup": lambda v: f"{float(v):.2f}×"}
    return (f'<div class="speedup"><h4>{html.escape(series)}</h4>'
            + styled_table(display, formats, f"speedup{index}") + "</div>")


def throughput_section(frame: pd.DataFrame) -> str:
    ok = _ok(frame)
    if ok.empty:
        return _note("No ok cells: nothing to plot.")
    measured = _numeric(ok, "threads").notna() & _numeric(ok, "speed.train_ips").notna()
    cpu = ok[(_strings(ok, "device") == "cpu") & measured]
    if cpu.empty:
        return _note("No CPU cell with a training throughput: nothing to plot.")
    order = _first_seen(_series_labels(cpu))
    train = _pivot(cpu, "threads", _numeric(cpu, "speed.train_ips"), order)
    infer = _pivot(cpu, "threads", _numeric(cpu, "speed.infer_ips"), order)
    flagged = _pivot(cpu, "threads", _flags(cpu, "speed.train_unstable").astype(float), order) > 0
    figure = plots.throughput_figure(train)
    tables = []
    for index, series in enumerate(train.columns):
        table = pd.DataFrame({"train": train[series], "infer": infer[series] if series in infer else np.nan})
        unstable = flagged[series] if series in flagged else pd.Series(False, index=table.index)
        tables.append(_speedup_table(series, table, unstable, index))
    caption = ("Training images/s over the steady epochs, averaged over noise levels and seeds. Speedup is "
               "against the smallest thread count of the series; efficiency = speedup / (threads / smallest threads), "
               "100% being linear scaling.")
    if plots.wide_range(train):
        caption += " Log y axis: the series span more than a factor of 10."
    return (plots.img_tag(figure, "training throughput vs CPU threads") + _note(caption)
            + '<div class="tables">' + "".join(tables) + "</div>")


DEVICE_KEY = ("variant", "device", "threads", "backend", "precision")
DEVICE_METRICS = (
    ("speed.train_ips", "train img/s", _thousands),
    ("speed.infer_ips", "infer img/s", _thousands),
    ("speed.latency_b1_p50_ms", "batch-1 p50 (ms)", _milliseconds),
    ("speed.latency_b1_p99_ms", "batch-1 p99 (ms)", _milliseconds),
    ("quality.psnr_db", "PSNR (dB)", _fixed(2)),
)


def _group_status(statuses: pd.Series, errors: pd.Series) -> str:
    """'ok' when every cell of the group ran, the reason when none did, else the counts."""
    counts = statuses.value_counts()
    if list(counts.index) == ["ok"]:
        return "ok"
    if len(counts) == 1:
        return f"{counts.index[0]}: {_first_seen(errors)[0]}"
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def device_section(frame: pd.DataFrame) -> str:
    """Device comparison: one row per variant x device (x CPU threads) x backend x precision, every cell included,
    so a device or backend this machine lacks shows up as skipped with its reason."""
    if frame.empty:
        return _note("This run recorded no cells.")
    if not _varying(frame, ("device", "backend", "precision")):
        return _note("This run used one device, backend and precision: nothing to compare here "
                     "(sweep device, backend or precision in the matrix to fill this table).")
    frame = _ordered(frame).reset_index(drop=True)
    keys = pd.Series(list(zip(*(_strings(frame, c).astype(str) for c in DEVICE_KEY))), index=frame.index)
    rows = []
    for key in _first_seen(keys):
        group = frame[keys == key]
        ok = _ok(group)
        row: dict[str, Any] = dict(zip(DEVICE_KEY, key))
        row["threads"] = row["threads"] or None  # an accelerator cell is not pinned to CPU threads
        row["status"] = _group_status(group["status"], _strings(group, "error"))
        row["ran on"] = ", ".join(_first_seen(_text(v) for v in _strings(ok, "info.backend_device") if v)) or None
        for source, label, _ in DEVICE_METRICS:
            row[label] = _numeric(ok, source).mean() if not ok.empty else np.nan
        rows.append(row)
    display = pd.DataFrame(rows)
    train = display["train img/s"]
    first = display.groupby("variant", sort=False)["train img/s"].transform(
        lambda values: values.dropna().iloc[0] if values.notna().any() else np.nan)
    display.insert(display.columns.get_loc("train img/s") + 1, "train vs first row", train / first)
    formats: dict[str, Formatter] = {label: fmt for _, label, fmt in DEVICE_METRICS}
    formats.update({"threads": lambda v: str(int(float(v))), "train vs first row": lambda v: f"{float(v):.2f}×"})
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    classes["status"] = ["status-" + str(status).split(":")[0].split()[-1] for status in display["status"]]
    caption = ("Means over noise levels and seeds of the ok cells in each group. 'ran on' is the device the worker "
               "reported using; 'train vs first row' divides training throughput by the variant's first measured "
               "row (in matrix order, the CPU). Skipped rows name why this machine could not run them.")
    return styled_table(display, formats, "devices", classes, css_class="data failures") + _note(caption)


def _latency_cells(frame: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """The ok cells with raw latency samples: all of them if few, else the conv variant's (or the first variant's)."""
    ok = _ordered(_ok(frame))
    if ok.empty:
        return ok
    have = ok[[int(cell) in artifacts and "latency_b1_s" in artifacts[int(cell)] for cell in ok["cell"]]]
    if len(have) > FEW_LATENCY_CELLS:
        variants = _first_seen(have["variant"])
        chosen = PREFERRED_VARIANT if PREFERRED_VARIANT in variants else variants[0]
        have = have[have["variant"] == chosen]
    # Still too many: latency hardly depends on the noise level or the seed, so keep the first of each and let the
    # curves show what does matter (threads, device, backend, precision).
    for axis in ("noise", "seed"):
        if len(have) > FEW_LATENCY_CELLS and axis in have.columns:
            have = have[have[axis] == have[axis].iloc[0]]
    return have.head(MAX_LATENCY_CURVES)


def _selection_text(chosen: pd.DataFrame, ok: pd.DataFrame) -> str:
    """Which cells a figure shows, e.g. 'every ok cell' or '8 of 96 ok cells (variant conv, noise 0, seed 0)'."""
    if len(chosen) == len(ok):
        return "every ok cell"
    fixed = [f"{axis} {_text(chosen[axis].iloc[0])}" for axis in ("variant", "noise", "seed")
             if axis in chosen.columns and chosen[axis].nunique() == 1 and ok[axis].nunique() > 1]
    return f"{len(chosen)} of {len(ok)} ok cells" + (f" ({', '.join(fixed)})" if fixed else "")


def latency_section(frame: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> str:
    cells = _latency_cells(frame, artifacts)
    if cells.empty:
        return _note("No ok cell stored raw batch-1 latency samples: nothing to plot.")
    labels = _cell_labels(cells)
    unstable = _flags(cells, "speed.latency_b1_unstable").to_numpy()
    labels = [label + (f" {UNSTABLE_MARK}" if flag else "") for label, flag in zip(labels, unstable)]
    curves = [(label, artifacts[int(cell)]["latency_b1_s"]) for label, cell in zip(labels, cells["cell"])]
    figure = plots.latency_cdf_figure(curves)
    display = pd.DataFrame({"cell": labels})
    formats: dict[str, Formatter] = {}
    for source, label in (("p50", "p50 (ms)"), ("p90", "p90 (ms)"), ("p99", "p99 (ms)"), ("p999", "p99.9 (ms)")):
        display[label] = _numeric(cells, f"speed.latency_b1_{source}_ms").to_numpy()
        formats[label] = _milliseconds
    display["samples"] = [len(artifacts[int(cell)]["latency_b1_s"]) for cell in cells["cell"]]
    display["predict() p50 (ms, framework path)"] = _numeric(cells, "speed.predict_b1_p50_ms").to_numpy()
    formats["predict() p50 (ms, framework path)"] = _milliseconds
    shown = _selection_text(cells, _ok(frame))
    return (plots.img_tag(figure, "batch-1 latency CDF")
            + _note(f"Batch-1 latency of the compiled call for {shown}, from the raw samples. {UNSTABLE_LEGEND}")
            + styled_table(display, formats, "latency"))


def _grid_variant(ok: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """The ok cells of the variant to show (conv if it has image grids, else the first that has), grids present."""
    if ok.empty:
        return ok
    with_grids = ok[[all(name in artifacts.get(int(cell), {}) for name in GRID_NAMES) for cell in ok["cell"]]]
    if with_grids.empty:
        return with_grids
    variants = _first_seen(with_grids["variant"])
    chosen = PREFERRED_VARIANT if PREFERRED_VARIANT in variants else variants[0]
    return with_grids[with_grids["variant"] == chosen]


def _as_images(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:  # grids are stored as uint8; tolerate floats in [0, 1] all the same
        array = np.round(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return array.reshape(array.shape[0], array.shape[1], -1) if array.ndim == 4 else array


def image_grid_section(frame: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> str:
    cells = _grid_variant(_ordered(_ok(frame)), artifacts)
    if cells.empty:
        return _note("No ok cell stored image grids: nothing to show.")
    parts = []
    for noise in sorted(_first_seen(cells["noise"])):
        row = cells[cells["noise"] == noise].iloc[0]
        stored = artifacts[int(row["cell"])]
        psnr = pd.to_numeric(row.get("quality.psnr_db"), errors="coerce")
        title = f"{row['variant']}, {row.get('noise_type', 'noise')} noise {float(noise):g}"
        if pd.notna(psnr):
            title += f" (output PSNR {psnr:.2f} dB)"
        rows = [(name.removeprefix("grid_"), _as_images(stored[name])) for name in GRID_NAMES]
        parts.append(plots.img_tag(plots.image_grid_figure(rows, title), f"clean, noisy and denoised digits: {title}"))
        if "grid_labels" in stored:
            digits = " ".join(str(int(label)) for label in np.asarray(stored["grid_labels"]).ravel())
            parts.append(_note(f"Test digits: {digits}"))
    return "".join(parts)


def failures_section(results: Sequence[CellResult]) -> str:
    bad = [result for result in results if result.status != "ok"]
    if not bad:
        return _note("Every cell ran: none failed, timed out or was skipped.")
    display = pd.DataFrame({
        "cell": [result.cell.label for result in bad],
        "status": [result.status for result in bad],
        "exit code": [result.exit_code for result in bad],
        "error": [result.error for result in bad],
        "duration (s)": [result.duration_s for result in bad],
    }).astype({"exit code": "object"})
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    classes["status"] = ["status-" + result.status for result in bad]
    formats = {"exit code": _integer, "duration (s)": _fixed(1)}
    table = styled_table(display, formats, "failures", classes, css_class="data failures")
    details = [
        f"<details><summary>{html.escape(result.cell.label)}: stderr tail</summary>"
        f"<pre>{html.escape(result.stderr_tail)}</pre></details>"
        for result in bad if result.status in ("failed", "timeout") and result.stderr_tail
    ]
    return table + "".join(details)


def _info_summary(frame: pd.DataFrame) -> dict[str, str]:
    """Each ``info.*`` column as its distinct values: the device, threads and paths the workers really used."""
    summary: dict[str, str] = {}
    for column in sorted(c for c in frame.columns if c.startswith("info.") and c != "info.pid"):
        values = _first_seen(_text(value) for value in frame[column] if not pd.isna(value))
        if not values:
            continue
        text = ", ".join(values[:MAX_INFO_VALUES])
        if len(values) > MAX_INFO_VALUES:
            text += f" … ({len(values)} distinct)"
        summary[column.removeprefix("info.")] = text
    return summary


def environment_section(record: Mapping[str, Any], frame: pd.DataFrame) -> str:
    parts = [key_value_table(record.get("environment") or {}, "environment")]
    info = _info_summary(_ok(frame)) if not frame.empty else {}
    if info:
        parts.append("<h3>What the workers reported (distinct values over ok cells)</h3>")
        parts.append(key_value_table(info, "info"))
    return "".join(parts)


# -- page --------------------------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table.data, table.kv { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
table.data th, table.data td, table.kv td { border: 1px solid #ddd; padding: .25em .5em; }
table.data th { background: #f2f2f2; position: sticky; top: 0; }
table.data td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv td:first-child { font-weight: 600; } table.kv td { text-align: left; }
table.failures td { white-space: normal; text-align: left; }
table.data tr:nth-child(even) td { background: #fafafa; }
td.unstable { background: #fff3cd !important; }
td.status-ok { color: #1a7f37; } td.status-failed, td.status-timeout { color: #b42318; font-weight: 600; }
td.status-skipped { color: #777; }
.note { color: #555; font-size: .9em; } .warning { color: #b42318; font-weight: 600; }
img.figure { max-width: 100%; display: block; margin: .5em 0; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; } .speedup h4 { margin: .5em 0 0; }
details { margin: .3em 0; } pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .8em; }
"""

SECTIONS = (
    ("results", "Results"),
    ("quality", "Quality vs noise"),
    ("accuracy", "Accuracy (QoS)"),
    ("throughput", "Throughput vs threads"),
    ("devices", "Devices and backends"),
    ("latency", "Latency"),
    ("images", "Image grid"),
    ("failures", "Failed, timed-out and skipped cells"),
    ("environment", "Environment"),
)


def render_page(title: str, header: str, bodies: Mapping[str, str]) -> str:
    """Assemble the page; ``header`` and ``bodies`` are HTML built (and escaped) by the section functions."""
    nav = " ".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name in SECTIONS)
    sections = "\n".join(
        f'<section id="{anchor}"><h2>{html.escape(name)}</h2>\n{bodies[anchor]}\n</section>'
        for anchor, name in SECTIONS
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n{header}\n{sections}\n</body>\n</html>\n"
    )


def build_report(store: Store, run_id: str) -> str:
    """The report's HTML text for one run."""
    record = store.run_record(run_id)
    results = store.results(run_id)
    frame = flat_frame(record, results)
    artifacts = {result.cell.index: dict(result.artifacts) for result in results}
    bodies = {
        "results": results_section(frame, record.get("matrix") or {}),
        "quality": quality_section(frame),
        "accuracy": accuracy_section(frame),
        "throughput": throughput_section(frame),
        "devices": device_section(frame),
        "latency": latency_section(frame, artifacts),
        "images": image_grid_section(frame, artifacts),
        "failures": failures_section(results),
        "environment": environment_section(record, frame),
    }
    title = f"aebench report: {record.get('matrix_name')} / {run_id}"
    return render_page(title, header_section(record), bodies)


def write_report(store: Store, run_id: str, reports_dir: Path) -> Path:
    """Write ``reports_dir/<run_id>/index.html`` (and ``latest.html`` when it is the newest run); return its path."""
    reports_dir = Path(reports_dir)
    text = build_report(store, run_id)
    index = reports_dir / run_id / "index.html"
    atomic.write_text(index, text)
    if store.resolve_run(None) == run_id:
        atomic.write_text(reports_dir / "latest.html", text)
    return index
