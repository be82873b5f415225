"""The image grid: clean, noisy and denoised test digits of one variant, one figure per noise level."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.report.page import Run, render
from aebench.report.table import first_seen, ok_cells, ordered, preferred_variant


def _grid_cells(ok: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """The ok cells of the variant to show (conv if it has image grids, else the first that has), grids present."""
    if ok.empty:
        return ok
    with_grids = ok[[all(name in artifacts.get(int(cell), {}) for name in plots.GRID_NAMES) for cell in ok["cell"]]]
    if with_grids.empty:
        return with_grids
    return with_grids[with_grids["variant"] == preferred_variant(first_seen(with_grids["variant"]))]


def section(run: Run) -> Markup:
    cells = _grid_cells(ordered(ok_cells(run.frame)), run.artifacts)
    grids = []
    for noise in sorted(first_seen(cells["noise"])) if not cells.empty else []:
        row = cells[cells["noise"] == noise].iloc[0]
        stored = run.artifacts[int(row["cell"])]
        title = plots.grid_title(row["variant"], row.get("noise_type", "noise"), noise,
                           pd.to_numeric(row.get("quality.psnr_db"), errors="coerce"))
        figure = plots.img_tag(plots.grid_figure(stored, title), f"clean, noisy and denoised digits: {title}")
        digits = None
        if "grid_labels" in stored:
            digits = " ".join(str(int(label)) for label in np.asarray(stored["grid_labels"]).ravel())
        grids.append((Markup(figure), digits))
    return render("sections/images.html", grids=grids)
