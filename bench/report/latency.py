"""Latency: the CDF of raw batch-1 samples of the compiled call, one curve per chosen cell, and their percentiles."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.load import CONTAMINATED
from aebench.metrics import Formatter
from aebench.report.page import Run, render
from aebench.scenarios import Latency
from aebench.report.table import (
    UNSTABLE_LEGEND,
    UNSTABLE_MARK,
    Column,
    cell_labels,
    first_seen,
    flags,
    numeric,
    ok_cells,
    ordered,
    preferred_variant,
    styled_table,
    text,
)

FEW_LATENCY_CELLS = 8  # up to this many ok cells, every one gets a latency curve
MAX_LATENCY_CURVES = 12
SAMPLES = Latency.ARTIFACT  # the artifact holding a cell's raw batch-1 latencies
PERCENTILE_COLUMNS = (
    Column("speed.latency_b1_p50_ms", "p50"),
    Column("speed.latency_b1_p90_ms", "p90"),
    Column("speed.latency_b1_p99_ms", "p99"),
    Column("speed.latency_b1_p999_ms", "p99.9"),
)
P50, P99 = PERCENTILE_COLUMNS[0], PERCENTILE_COLUMNS[2]
PREDICT_COLUMN = Column("speed.predict_b1_p50_ms", "predict() p50", aside="framework path")


def latency_cells(frame: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """The ok cells with raw latency samples: all of them if few, else the conv variant's (or the first variant's)."""
    ok = ordered(ok_cells(frame))
    ok = ok[~flags(ok, CONTAMINATED)]  # samples taken beside other work say nothing about the model
    if ok.empty:
        return ok
    have = ok[[int(cell) in artifacts and SAMPLES in artifacts[int(cell)] for cell in ok["cell"]]]
    if len(have) > FEW_LATENCY_CELLS:
        have = have[have["variant"] == preferred_variant(first_seen(have["variant"]))]
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
    fixed = [f"{axis} {text(chosen[axis].iloc[0])}" for axis in ("variant", "noise", "seed")
             if axis in chosen.columns and chosen[axis].nunique() == 1 and ok[axis].nunique() > 1]
    return f"{len(chosen)} of {len(ok)} ok cells" + (f" ({', '.join(fixed)})" if fixed else "")


def section(run: Run) -> Markup:
    cells = latency_cells(run.frame, run.artifacts)
    if cells.empty:
        return render("sections/latency.html", figure=None)
    labels = cell_labels(cells)
    unstable = flags(cells, PERCENTILE_COLUMNS[0].unstable).to_numpy()
    labels = [label + (f" {UNSTABLE_MARK}" if flag else "") for label, flag in zip(labels, unstable)]
    samples = [run.artifacts[int(cell)][SAMPLES] for cell in cells["cell"]]
    display = pd.DataFrame({"cell": labels})
    formats: dict[str, Formatter] = {}
    for column in PERCENTILE_COLUMNS:
        display[column.heading] = numeric(cells, column.metric).to_numpy()
        formats[column.heading] = column.format
    # The figure marks the stored p50 and p99 the table shows.
    figure = plots.latency_cdf_figure(list(zip(labels, samples, display[P50.heading], display[P99.heading])))
    display["samples"] = [len(values) for values in samples]
    display[PREDICT_COLUMN.heading] = numeric(cells, PREDICT_COLUMN.metric).to_numpy()
    formats[PREDICT_COLUMN.heading] = PREDICT_COLUMN.format
    ok = ok_cells(run.frame)
    dirty = flags(ok, CONTAMINATED)
    return render("sections/latency.html", figure=Markup(plots.img_tag(figure, "batch-1 latency CDF")),
                  shown=_selection_text(cells, ok[~dirty]), unstable_legend=UNSTABLE_LEGEND,
                  contaminated=int(dirty.sum()),
                  table=styled_table(display, formats, "latency"))
