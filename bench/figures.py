"""``aebench figure``: one of a run's figures as a PNG file, for a README or a paper.

The same figures the report draws, from the same stored artifacts, so a picture in the documentation is regenerated
by a command rather than drawn by hand:

- ``grid``: the paper's figure, clean, noisy and denoised test digits of one trained model;
- ``curve``: its validation PSNR against training images seen, with the time-to-quality target.
"""

from __future__ import annotations

import math
from pathlib import Path

from aebench import atomic, plots
from aebench.timetoquality import CURVE_ARTIFACTS
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import Store

KINDS = ("grid", "curve")


def pick_training_cell(results: list[CellResult], variant: str | None, noise: float | None) -> CellResult:
    """The ok cell that trained the asked-for model (the first one when nothing is asked for)."""
    trained = [r for r in results if r.trained_its_model]
    found = [r for r in trained if (variant is None or r.cell.variant == variant)
             and (noise is None or math.isclose(r.cell.noise, noise))]
    if not found:
        have = ", ".join(f"{r.cell.variant} at noise {r.cell.noise:g}" for r in trained) or "none"
        raise UserError(f"--variant {variant or 'any'} --noise {noise if noise is not None else 'any'} matches no "
                        f"trained model of this run: allowed {have}")
    return found[0]


def build_figure(kind: str, result: CellResult):
    """The matplotlib figure of ``kind`` for one training cell's stored result."""
    cell, stored = result.cell, result.artifacts
    if kind == "grid":
        missing = [name for name in plots.GRID_NAMES if name not in stored]
        if missing:
            raise UserError(f"{cell.label} stored no image grid ({', '.join(missing)} missing)")
        title = plots.grid_title(cell.variant, cell.noise_type, cell.noise, result.metrics.get("quality.psnr_db"))
        return plots.grid_figure(stored, title)
    if not all(name in stored for name in CURVE_ARTIFACTS):
        raise UserError(f"{cell.label} stored no training curve (a run made before time to quality)")
    curves = [(cell.variant, stored["curve_images"], stored["curve_val_psnr_db"])]
    title = plots.grid_title(cell.variant, cell.noise_type, cell.noise, None)
    return plots.training_curve_figure([(title, curves, result.metrics.get("quality.target_psnr_db"))])


def write_figure(store: Store, run: str | None, kind: str, out: Path, variant: str | None = None,
                 noise: float | None = None) -> Path:
    """Write the figure as a PNG at ``out``; returns the path."""
    if kind not in KINDS:
        raise UserError(f"figure kind {kind!r} is invalid: allowed {', '.join(KINDS)}")
    if Path(out).suffix.lower() != ".png":
        raise UserError(f"--out {str(out)!r} is invalid: allowed a path ending in .png")
    run_id = store.resolve_run(run)
    result = pick_training_cell(store.results(run_id, with_artifacts=True), variant, noise)
    figure = build_figure(kind, result)
    atomic.check_writable_folder("--out", Path(out).parent)
    with atomic.replacing(out) as partial:
        figure.savefig(partial, format="png", dpi=plots.DPI, metadata={"Software": None})  # same data, same bytes
    return Path(out)
