"""Mean and 95% confidence interval over seeds, for runs with ``repeats > 1``.

A matrix with ``repeats = k`` runs every cell with k seeds. ``aggregate_over_seeds`` collapses those cells to one row
per group (by default every axis but the seed) with, for each figure, its mean over seeds (``<col>``), the half-width
of its 95% confidence interval (``<col>.ci95``) and the number of seeds (``n_seeds``).

The interval is Student's t: ``t(0.975, n - 1) * s / sqrt(n)`` with s the sample standard deviation (ddof 1) over
the n seeds that have the figure; with fewer than two seeds it is undefined (NaN). Cells that share a group and a
seed (for example the same model at two thread counts, when the group leaves threads out) are averaged first, so each
seed counts once: they are not independent repeats.

Pandas and SciPy only: the CLI's ``export --aggregate`` imports this without Keras.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from aebench.metrics import is_metric_column

AXES = ("variant", "noise", "noise_type", "device", "threads", "backend", "precision")
CI_SUFFIX = ".ci95"
CONFIDENCE = 0.95


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's numeric figure columns (``quality.*``, ``speed.*``, ...), in frame order."""
    # CellResult admits only numbers (or None) as metrics, so the group prefix is enough to know a figure column.
    return [column for column in frame.columns if is_metric_column(column)]


def ci_half_width(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t confidence interval of the mean of ``values`` (NaN ignored; NaN if fewer than two)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + confidence / 2, array.size - 1) * array.std(ddof=1) / np.sqrt(array.size))


def aggregate_over_seeds(frame: pd.DataFrame, columns: Sequence[str], by: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per group of ``by`` (default: the axes in AXES the frame has), in first-seen order: the group's axis
    values, ``n_seeds``, then ``<col>`` (mean over seeds) and ``<col>.ci95`` for each column.

    Only ok cells count when the frame has a ``status`` column; a column a seed did not record is left out of that
    column's mean and interval (the others still count it).
    """
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    by = [axis for axis in (AXES if by is None else by) if axis in frame.columns]
    columns = [column for column in columns if column in frame.columns]
    values = frame[by].copy()
    for column in columns:
        values[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    values["seed"] = frame["seed"].to_numpy() if "seed" in frame.columns else 0
    if values.empty:
        return pd.DataFrame(columns=[*by, "n_seeds", *(c for column in columns for c in (column, column + CI_SUFFIX))])
    # Cells of one group and one seed are one repeat: average them before comparing seeds.
    per_seed = values.groupby([*by, "seed"], sort=False, dropna=False)[columns].mean().reset_index()
    groups = per_seed.groupby(by, sort=False, dropna=False) if by else [((), per_seed)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(by, key))
        row["n_seeds"] = int(group["seed"].nunique())
        for column in columns:
            series = group[column]
            row[column] = float(series.mean()) if series.notna().any() else float("nan")
            row[column + CI_SUFFIX] = ci_half_width(series.to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)
