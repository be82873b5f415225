"""Cell results: immutable, validated records that flatten to dot-keyed columns for pandas.

A failed, timed-out or skipped cell is a result too (asv's rule): it keeps its exit code, a one-line error and the
tail of the worker's stderr, and the sweep goes on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from aebench.config import Cell
from aebench.metrics import REGISTRY, is_metric_column

STATUSES = ("ok", "failed", "timeout", "skipped")
INFO_PREFIX = "info."
# A figure whose spread exceeds this fraction of its mean is flagged unstable (pyperf warns at the same 10%).
UNSTABLE_CV = 0.10


def _freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    status: str
    duration_s: float
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    info: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    exit_code: int | None = None
    error: str = ""
    stderr_tail: str = ""
    artifacts: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is invalid: allowed {', '.join(STATUSES)}")
        if not (isinstance(self.duration_s, (int, float)) and math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ValueError(f"duration_s {self.duration_s!r} is invalid: allowed finite seconds >= 0")
        for key, value in self.metrics.items():
            if "." not in key:
                raise ValueError(f"metric {key!r} is invalid: allowed dotted names such as 'quality.mse'")
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise ValueError(f"metric {key} = {value!r} is invalid: allowed numbers or None")
        if self.status == "ok" and self.error:
            raise ValueError("an ok result carries no error")
        if self.status != "ok" and not self.error:
            raise ValueError(f"a {self.status} result needs an error saying why")
        object.__setattr__(self, "metrics", _freeze({k: _finite_or_none(v) for k, v in self.metrics.items()}))
        object.__setattr__(self, "info", _freeze(self.info))
        object.__setattr__(self, "artifacts", _freeze(self.artifacts))

    def __reduce__(self) -> tuple[Any, ...]:
        # Its mappings are read-only proxies, which pickle cannot copy: a result crosses processes (a Dask cluster's
        # node to its driver) as plain dicts and is validated again on arrival.
        return (CellResult, (self.cell, self.status, self.duration_s, dict(self.metrics), dict(self.info),
                             self.exit_code, self.error, self.stderr_tail, dict(self.artifacts)))

    @property
    def trained_its_model(self) -> bool:
        """An ok cell that trained the weights it and its model's other thread counts timed (aebench.runner)."""
        return self.status == "ok" and self.info.get("trained_by") == self.cell.key

    def flat(self) -> dict[str, Any]:
        """One row: cell axes, status, then ``quality.*``, ``speed.*``, ``memory.*`` ... and ``info.*`` columns."""
        row: dict[str, Any] = {
            "cell": self.cell.index,
            "key": self.cell.key,
            "variant": self.cell.variant,
            "noise": self.cell.noise,
            "noise_type": self.cell.noise_type,
            "device": self.cell.device,
            "threads": self.cell.threads,
            "backend": self.cell.backend,
            "precision": self.cell.precision,
            "seed": self.cell.seed,
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "duration_s": self.duration_s,
        }
        row.update(self.metrics)
        row.update({f"{INFO_PREFIX}{key}": value for key, value in self.info.items()})
        return row


def column_order(columns: Iterable[str]) -> list[str]:
    """A flat table's columns in reading order: run and cell columns as given, the figures in registry order (group by
    group), then ``info.*`` as given. A frame of many cells lists a figure where the first cell with it put it; this
    order does not depend on which cell that was."""
    columns = list(columns)
    figures = REGISTRY.sort_columns(column for column in columns if is_metric_column(column))
    info = [column for column in columns if column.startswith(INFO_PREFIX)]
    rest = [column for column in columns if not is_metric_column(column) and not column.startswith(INFO_PREFIX)]
    return [*rest, *figures, *info]


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
