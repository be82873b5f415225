"""The report's figures: matplotlib on the Agg canvas, each returned as an ``<img>`` tag with a base64 PNG data URI.

Figures are built with the object-oriented API (``Figure`` + ``FigureCanvasAgg``) rather than pyplot: that is the Agg
backend without pyplot's global figure registry, so a report written from a long-lived process (or beside a GUI
backend someone selected) neither changes the process-wide backend nor leaks figures. Each figure is still cleared
once encoded so its artists are freed at once.

The functions take data already selected and aggregated by ``aebench.report``; they only draw.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

DPI = 100  # small PNGs: a report with dozens of figures must stay a few MB
# Above this max/min ratio a linear axis squashes the slow series flat against zero.
LOG_SCALE_RATIO = 10.0
MAX_LEGEND_ENTRIES = 16


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches the Agg canvas that savefig renders with
    return figure


def img_tag(figure: Figure, alt: str) -> str:
    """Encode the figure as an inline PNG and free it; the tag needs no file or network to display."""
    buffer = io.BytesIO()
    # metadata Software=None: no matplotlib version stamp, so the same data gives the same bytes
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    figure.clear()
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


MARKERS = "osD^v<>"
# Past this many series an in-axes legend hides the lines it explains.
LEGEND_INSIDE_MAX = 5


def _legend_height(entries: int) -> float:
    """Extra inches for a two-column legend below the axes (none when it fits inside)."""
    return 0.0 if entries <= LEGEND_INSIDE_MAX else 0.2 * -(-entries // 2) + 0.2


def _series_style(index: int) -> dict[str, object]:
    """Ten colours, then the next marker shape: series 0 and 10 stay distinguishable."""
    return {"color": f"C{index % 10}", "marker": MARKERS[index // 10 % len(MARKERS)], "markersize": 4}


def _legend_columns(labels: Sequence[str]) -> int:
    """Two legend columns fit an 8-inch figure only while the labels are short."""
    return 2 if max((len(label) for label in labels), default=0) <= 45 else 1


def _legend(axes, outside: bool = False) -> None:
    """Legend in the axes, or below them when many long entries would hide the curves."""
    handles, labels = axes.get_legend_handles_labels()
    if not handles:
        return
    handles, labels = handles[:MAX_LEGEND_ENTRIES], labels[:MAX_LEGEND_ENTRIES]
    if outside:
        axes.figure.legend(handles, labels, fontsize="small", loc="outside lower center",
                           ncols=_legend_columns(labels), frameon=False)
    else:
        axes.legend(handles, labels, fontsize="small")


# Plain numbers on log axes (0.2, 0.5, 1, 2) rather than 2x10^-1: latencies are read, not admired.
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def wide_range(values: np.ndarray | pd.Series | pd.DataFrame) -> bool:
    """True when positive values span more than LOG_SCALE_RATIO, i.e. a log axis reads better."""
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[np.isfinite(array) & (array > 0)]
    return bool(array.size) and float(array.max() / array.min()) > LOG_SCALE_RATIO


def _line_panel(axes, series: pd.DataFrame, reference: pd.Series | None, reference_label: str, ylabel: str,
                legend: bool = True) -> None:
    """One solid line per column of ``series`` (index = x), and an optional dashed reference line."""
    for position, column in enumerate(series.columns):
        values = series[column].dropna()
        if not values.empty:
            axes.plot(values.index, values.to_numpy(), label=str(column), **_series_style(position))
    if reference is not None and not reference.dropna().empty:
        values = reference.dropna()
        axes.plot(values.index, values.to_numpy(), linestyle="--", color="0.35", marker="x", markersize=4,
                  label=reference_label)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if legend:
        _legend(axes, outside=len(series.columns) + (reference is not None) > LEGEND_INSIDE_MAX)


def quality_figure(psnr: pd.DataFrame, noisy_psnr: pd.Series | None, accuracy: pd.DataFrame | None = None,
                   noisy_accuracy: pd.Series | None = None, noise_label: str = "noise") -> Figure:
    """PSNR of the outputs vs noise (one line per series) with the noisy input's PSNR dashed; a second panel for
    classifier accuracy on the denoised images when the run recorded it."""
    panels = 2 if accuracy is not None else 1
    entries = len(psnr.columns) + (noisy_psnr is not None)
    figure = new_figure(6.0 * panels, 4.0 + _legend_height(entries))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    _line_panel(axes[0], psnr, noisy_psnr, "noisy input", "PSNR (dB)")
    axes[0].set_title("Reconstruction PSNR vs clean images")
    if accuracy is not None:
        # the same series in the same colours: a figure-wide legend below already names them
        _line_panel(axes[1], accuracy, noisy_accuracy, "noisy input", "accuracy",
                    legend=entries <= LEGEND_INSIDE_MAX)
        axes[1].set_title("Classifier accuracy on denoised images")
    for panel in axes:
        panel.set_xlabel(noise_label)
    return figure


def _panel_grid(count: int, legend_entries: int, sharey: bool = False) -> tuple[Figure, list[Any], int]:
    """A figure of ``count`` panels, up to three a row, with room below for a legend of ``legend_entries``: the figure,
    the panels' axes in order (the grid's spare cells hidden) and the number of columns."""
    columns = min(count, 3)
    rows = -(-count // columns)
    figure = new_figure(4.2 * columns + 0.6, 3.4 * rows + _legend_height(legend_entries))
    grid = list(figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel())
    for spare in grid[count:]:
        spare.set_visible(False)
    return figure, grid[:count], columns


def robustness_figure(panels: Sequence[tuple[str, pd.DataFrame]], noisy_psnr: pd.Series | None,
                      noise_label: str = "test noise level") -> Figure:
    """PSNR vs test noise level: one panel per (title, frame with index = level, one column per series), the noisy
    input's PSNR dashed in each. The series keep their colours across panels (same column order)."""
    entries = max((len(frame.columns) for _, frame in panels), default=0) + (noisy_psnr is not None)
    figure, panel_axes, columns = _panel_grid(len(panels), entries, sharey=True)
    for index, (axes, (title, frame)) in enumerate(zip(panel_axes, panels)):
        # one legend for the figure (below) when several panels repeat the same series
        _line_panel(axes, frame, noisy_psnr, "noisy input", "PSNR (dB)" if index % columns == 0 else "",
                    legend=len(panels) == 1)
        axes.set_title(title, fontsize="medium")
        axes.set_xlabel(noise_label)
    if len(panels) > 1:
        _legend(panel_axes[0], outside=True)
    return figure


def throughput_figure(train_ips: pd.DataFrame) -> Figure:
    """Training images/s vs CPU threads, one line per series (index = threads)."""
    figure = new_figure(6.5, 4.0 + _legend_height(len(train_ips.columns)))
    axes = figure.subplots()
    _line_panel(axes, train_ips, None, "", "training images/s")
    axes.set_xlabel("CPU threads")
    threads = [int(t) for t in train_ips.index]
    axes.set_xscale("log", base=2)
    axes.set_xticks(threads, [str(t) for t in threads])
    axes.minorticks_off()
    if wide_range(train_ips):
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(_PLAIN)
        axes.yaxis.set_minor_formatter(_PLAIN)
        axes.tick_params(axis="y", which="minor", labelsize="x-small")
    axes.set_title("Training throughput vs threads")
    return figure


def latency_cdf_figure(curves: Sequence[tuple[str, np.ndarray, float, float]]) -> Figure:
    """Empirical CDF of batch-1 latency samples (seconds in, milliseconds on a log x axis), with each curve's p50 and
    p99 marked: the figures the cell stored (milliseconds), so the figure and the table beside it agree."""
    entries = min(len(curves), MAX_LEGEND_ENTRIES)
    legend_rows = -(-entries // _legend_columns([curve[0] + " " * 30 for curve in curves]))
    figure = new_figure(8.0, 4.0 + 0.2 * legend_rows)
    axes = figure.subplots()
    for position, (label, seconds, p50, p99) in enumerate(curves):
        ms = np.sort(np.asarray(seconds, dtype=np.float64).ravel() * 1e3)
        ms = ms[np.isfinite(ms) & (ms > 0)]  # a log axis shows no zero; the stored percentiles counted every sample
        if ms.size == 0:
            continue
        fraction = np.arange(1, ms.size + 1) / ms.size
        color = f"C{position % 10}"
        marks = [(value, level, marker) for value, level, marker in ((p50, 0.50, "o"), (p99, 0.99, "^"))
                 if np.isfinite(value) and value > 0]
        stated = ", ".join(f"p{round(level * 100)} {value:.3g}" for value, level, _ in marks)
        axes.step(ms, fraction, where="post", color=color, label=f"{label}: {stated} ms" if stated else label)
        for value, level, marker in marks:
            axes.plot([value], [level], marker=marker, color=color, linestyle="none")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(_PLAIN)
    axes.xaxis.set_minor_formatter(_PLAIN)
    axes.tick_params(axis="x", which="minor", labelsize="x-small")
    axes.set_xlabel("batch-1 latency (ms, log scale)")
    axes.set_ylabel("fraction of calls")
    axes.set_ylim(0, 1.02)
    axes.axhline(0.50, color="0.6", linewidth=0.6, linestyle=":")
    axes.axhline(0.99, color="0.6", linewidth=0.6, linestyle=":")
    axes.grid(True, which="both", alpha=0.25)
    axes.set_title("Batch-1 latency CDF (o = p50, ^ = p99)")
    _legend(axes, outside=True)
    return figure


def _mosaic_row(images: np.ndarray, pad: int) -> np.ndarray:
    """Images side by side with a white gap between them."""
    count, height, width = images.shape
    row = np.full((height, count * (width + pad) - pad), 255, dtype=np.uint8)
    for position, image in enumerate(images):
        start = position * (width + pad)
        row[:, start : start + width] = image
    return row


def image_grid_figure(rows: Sequence[tuple[str, np.ndarray]], title: str, pad: int = 2) -> Figure:
    """The paper's figure: one row of digits per (name, (N, 28, 28) uint8 images), drawn as a single image.

    One ``imshow`` of a mosaic rather than N x 3 subplots: the same picture, a fraction of the rendering time.
    """
    count = min(len(images) for _, images in rows)
    strips = [_mosaic_row(np.asarray(images[:count], dtype=np.uint8), pad) for _, images in rows]
    height = strips[0].shape[0]
    gap = np.full((pad * 2, strips[0].shape[1]), 255, dtype=np.uint8)
    mosaic = np.concatenate([part for strip in strips for part in (strip, gap)][:-1])
    width = max(4.0, 0.5 * count + 1.2)
    # height from the mosaic's aspect ratio (1.2 in of row labels, 0.4 in of title), so no blank band is left
    figure = new_figure(width, (width - 1.2) * mosaic.shape[0] / mosaic.shape[1] + 0.4)
    axes = figure.subplots()
    axes.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([index * (height + 2 * pad) + height / 2 for index in range(len(rows))], [name for name, _ in rows])
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(title, fontsize="medium")
    return figure


VERDICT_COLORS = {"regression": "#b42318", "improvement": "#1a7f37"}
MAX_RUN_TICKS = 40  # past this many runs, every k-th commit is labelled


def history_figure(lines: pd.DataFrame, commits: Sequence[str], changes: Sequence[tuple[int, str, str]],
                   ylabel: str, title: str) -> Figure:
    """A figure over runs in commit order: one line per column of ``lines`` (index = run position, NaN where a run
    lacks it), the x axis labelled by ``commits`` (one per position), and each change (position, label, verdict) as
    a vertical line just before the first run of its new segment, labelled at the top."""
    labels = [str(column) for column in lines.columns]
    legend_rows = -(-len(labels) // _legend_columns(labels))
    figure = new_figure(7.5, 3.2 + 0.2 * legend_rows + 0.2)
    axes = figure.subplots()
    _line_panel(axes, lines, None, "", ylabel, legend=False)
    _legend(axes, outside=True)  # cell keys are long: inside, they would hide the lines
    step = max(1, -(-len(commits) // MAX_RUN_TICKS))
    positions = list(range(0, len(commits), step))
    axes.set_xticks(positions, [commits[position] for position in positions], rotation=90, fontsize="x-small")
    axes.set_xlim(-0.5, len(commits) - 0.5)
    for position, label, verdict in changes:
        color = VERDICT_COLORS.get(verdict, "0.3")
        axes.axvline(position - 0.5, color=color, linewidth=1.2, linestyle="--")
        axes.annotate(label, (position - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                      textcoords="offset points", rotation=90, va="top", fontsize="x-small", color=color)
    axes.set_xlabel("runs in commit order")
    axes.set_title(title, fontsize="medium")
    return figure


def _count_text(value: float, _: object = None) -> str:
    """"200k", "1.5M": five ticks of six or seven digits run into each other on a 4-inch panel."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def training_curve_figure(panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]], float | None]]
                          ) -> Figure:
    """Validation PSNR against training images seen: one panel per (title, [(series, images, PSNR)], target PSNR),
    the target dotted. The series keep their colours across panels (same order)."""
    entries = max((len(curves) for _, curves, _ in panels), default=0) + 1
    figure, panel_axes, columns = _panel_grid(len(panels), entries)
    for index, (axes, (title, curves, target)) in enumerate(zip(panel_axes, panels)):
        for position, (label, images, psnr) in enumerate(curves):
            style = {**_series_style(position), "markersize": 2}
            axes.plot(np.asarray(images, dtype=np.float64), np.asarray(psnr, dtype=np.float64), label=label, **style)
        if target is not None:
            axes.axhline(target, linestyle=":", color="0.35", label="target")
        axes.set_title(title, fontsize="medium")
        axes.set_xlabel("training images seen")
        axes.set_ylabel("validation PSNR (dB)" if index % columns == 0 else "")
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_formatter(FuncFormatter(_count_text))
        if len(panels) == 1:
            _legend(axes, outside=entries > LEGEND_INSIDE_MAX)
    if len(panels) > 1:
        _legend(panel_axes[0], outside=True)
    return figure


def pareto_front(speed_cost: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """Which points no other point dominates: none has a lower-or-equal cost and a higher-or-equal quality with one
    of the two strictly better. Points with a missing value are on no front."""
    cost, gain = np.asarray(speed_cost, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    valid = np.isfinite(cost) & np.isfinite(gain)
    front = []
    for index in range(len(cost)):
        if not valid[index]:
            front.append(False)
            continue
        no_worse = valid & (cost <= cost[index]) & (gain >= gain[index])
        better = (cost < cost[index]) | (gain > gain[index])
        front.append(not bool(np.any(no_worse & better)))
    return front


def pareto_figure(panels: Sequence[tuple[str, pd.DataFrame]], series_order: Sequence[str], x_label: str,
                  y_label: str) -> Figure:
    """Quality against speed: one panel per (title, frame with columns series, x, y), one point per row. The front
    (``pareto_front`` of x as a cost, y as a quality) is drawn as a step line through its points, coloured by series;
    dominated points are grey. The series keep their colours across panels."""
    figure, panel_axes, columns = _panel_grid(len(panels), len(series_order))
    colour = {series: f"C{index % 10}" for index, series in enumerate(series_order)}
    for index, (axes, (title, frame)) in enumerate(zip(panel_axes, panels)):
        front = np.asarray(pareto_front(frame["x"], frame["y"]), dtype=bool)
        dominated = frame[~front]
        axes.scatter(dominated["x"], dominated["y"], color="0.75", s=18, zorder=2)
        on_front = frame[front].sort_values("x")
        axes.step(on_front["x"], on_front["y"], where="post", color="0.3", linewidth=1, zorder=1)
        for series in series_order:
            points = on_front[on_front["series"] == series]
            if not points.empty:
                axes.scatter(points["x"], points["y"], color=colour[series], s=34, zorder=3, label=series)
        if wide_range(frame["x"]):
            axes.set_xscale("log")
            axes.xaxis.set_major_formatter(_PLAIN)
        axes.set_title(title, fontsize="medium")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label if index % columns == 0 else "")
        axes.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=colour[series], label=series) for series in series_order]
    handles.append(Line2D([], [], marker="o", linestyle="", color="0.75", label="dominated"))
    figure.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=min(4, len(handles)),
                  frameon=False)
    return figure


# -- the paper's figure: clean, noisy and denoised digits of one cell --------------------------------------------------

GRID_NAMES = ("grid_clean", "grid_noisy", "grid_denoised")  # the artifacts a cell stores its grid in


def _as_images(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:  # grids are stored as uint8; tolerate floats in [0, 1] all the same
        array = np.round(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return array.reshape(array.shape[0], array.shape[1], -1) if array.ndim == 4 else array


def grid_title(variant: str, noise_type: str, noise: float, psnr: float | None) -> str:
    title = f"{variant}, {noise_type} noise {float(noise):g}"
    return title if psnr is None or not np.isfinite(psnr) else f"{title} (output PSNR {psnr:.2f} dB)"


def grid_figure(stored: Mapping[str, np.ndarray], title: str) -> Figure:
    """The clean, noisy and denoised rows of one cell's stored grid (``aebench figure grid`` draws the same)."""
    rows = [(name.removeprefix("grid_"), _as_images(stored[name])) for name in GRID_NAMES]
    return image_grid_figure(rows, title)
