"""The image grid: clean, noisy and denoised test digits of one variant, one figure per noise level."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench import plots
from aebench.report.page import Run, render
from aebench.report.table import first_seen, ok_cells, ordered, preferred_variant

GRID_NAMES = ("grid_clean", "grid_noisy", "grid_denoised")


def _grid_cells(ok: pd.DataFrame, artifacts: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """The ok cells of the variant to show (conv if it has image grids, else the first that has), grids present."""
    if ok.empty:
        return ok
    with_grids = ok[[all(name in artifacts.get(int(cell), {}) for name in GRID_NAMES) for cell in ok["cell"]]]
    if with_grids.empty:
        return with_grids
    return with_grids[with_grids["variant"] == preferred_variant(first_seen(with_grids["variant"]))]


def _as_images(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:  # grids are stored as uint8; tolerate floats in [0, 1] all the same
        array = np.round(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return array.reshape(array.shape[0], array.shape[1], -1) if array.ndim == 4 else array


def grid_title(variant: str, noise_type: str, noise: float, psnr: float | None) -> str:
    title = f"{variant}, {noise_type} noise {float(noise):g}"
    return title if psnr is None or pd.isna(psnr) else f"{title} (output PSNR {psnr:.2f} dB)"


def grid_figure(stored: Mapping[str, np.ndarray], title: str):
    """The clean, noisy and denoised rows of one cell's stored grid (``aebench figure grid`` draws the same)."""
    rows = [(name.removeprefix("grid_"), _as_images(stored[name])) for name in GRID_NAMES]
    return plots.image_grid_figure(rows, title)


def section(run: Run) -> Markup:
    cells = _grid_cells(ordered(ok_cells(run.frame)), run.artifacts)
    grids = []
    for noise in sorted(first_seen(cells["noise"])) if not cells.empty else []:
        row = cells[cells["noise"] == noise].iloc[0]
        stored = run.artifacts[int(row["cell"])]
        title = grid_title(row["variant"], row.get("noise_type", "noise"), noise,
                           pd.to_numeric(row.get("quality.psnr_db"), errors="coerce"))
        figure = plots.img_tag(grid_figure(stored, title), f"clean, noisy and denoised digits: {title}")
        digits = None
        if "grid_labels" in stored:
            digits = " ".join(str(int(label)) for label in np.asarray(stored["grid_labels"]).ravel())
        grids.append((Markup(figure), digits))
    return render("sections/images.html", grids=grids)
