"""``aebench figure``: one of a run's figures as a PNG file, for a README or a paper.

The same figures the report draws, from the same stored artifacts, so a picture in the documentation is regenerated
by a command rather than drawn by hand:

- ``grid``: the paper's figure, clean, noisy and denoised test digits of one trained model;
- ``curve``: its validation PSNR against training images seen, with the time-to-quality target.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from aebench import atomic, plots
from aebench.timetoquality import CURVE_ARTIFACTS
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import Store

KINDS = ("grid", "curve")
EPOCH_MARKS = (1, 2, 5, 10, 20, 50, 100)  # the epochs ``curve_points`` reads the curve at (the README's row)


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


def curve_points(result: CellResult) -> str:
    """The curve's figures in words: the validation PSNR of the last evaluation by the end of each epoch of
    ``EPOCH_MARKS`` the training reached, and of its last (the numbers behind the picture, for a README's table)."""
    stored = result.artifacts
    images, psnr = np.asarray(stored["curve_images"]), np.asarray(stored["curve_val_psnr_db"])
    epochs = len(stored["curve_epoch_loss"])
    per_epoch = images[-1] / epochs if epochs else math.nan
    marks = [epoch for epoch in EPOCH_MARKS if epoch < epochs] + [epochs]
    if not (epochs and np.isfinite(per_epoch)):
        return f"{len(psnr)} evaluations, last {psnr[-1]:.2f} dB"
    read = [psnr[np.searchsorted(images, epoch * per_epoch, side="right") - 1] for epoch in marks]
    return (f"validation PSNR after epoch {' / '.join(map(str, marks))}: {' / '.join(f'{v:.2f}' for v in read)} dB "
            f"({len(psnr)} evaluations, {per_epoch:,.0f} images per epoch)")


def write_figure(store: Store, run: str | None, kind: str, out: Path, variant: str | None = None,
                 noise: float | None = None) -> tuple[Path, str | None]:
    """Write the figure as a PNG at ``out``; returns the path and, for a curve, its figures in words
    (``curve_points``)."""
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
    return Path(out), curve_points(result) if kind == "curve" else None
