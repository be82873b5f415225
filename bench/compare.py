"""Compare two runs cell by cell and gate on regressions of quality and speed.

Cells are matched by their key (variant, noise, device, threads, backend, precision, seed). For each metric the
registry (aebench.metrics) marks as gated, the change is expressed so that a positive number is always an
improvement; a change worse than the metric's threshold is a regression. Batch-1 latency also gets a Mann-Whitney U
test on the raw samples, so a shift that is within the noise of the measurement is reported as "not significant"
rather than as a regression. The comparison is printed first; the exit status says whether a gate failed
(pytest-benchmark's --benchmark-compare-fail style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aebench.errors import UserError
from aebench.metrics import REGISTRY

# Percent, per group of the gated metrics (aebench.metrics, ``gated=True``): speed figures move more than quality ones.
DEFAULT_THRESHOLDS = {"quality": 1.0, "speed": 5.0}
SIGNIFICANCE_ALPHA = 0.01


@dataclass(frozen=True)
class Threshold:
    group_or_metric: str
    percent: float


def parse_threshold(text: str) -> Threshold:
    """``speed:5%``, ``quality:0.5%`` or ``speed.train_ips:10%``."""
    name, sep, value = text.partition(":")
    known = set(DEFAULT_THRESHOLDS) | {metric.name for metric in REGISTRY.gated()}
    try:
        percent = float(value.rstrip("%"))
    except ValueError:
        percent = -1.0
    if not sep or name not in known or percent < 0:
        raise UserError(f"--fail {text!r} is invalid: allowed NAME:PERCENT% with NAME one of {', '.join(sorted(known))}")
    return Threshold(name, percent)


def latency_significance(baseline: np.ndarray | None, candidate: np.ndarray | None) -> float | None:
    """Two-sided Mann-Whitney U p-value of the raw batch-1 latency samples, or None without samples."""
    if baseline is None or candidate is None or len(baseline) < 5 or len(candidate) < 5:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(baseline, candidate, alternative="two-sided").pvalue)


def compare_frames(baseline: pd.DataFrame, candidate: pd.DataFrame, thresholds: Sequence[Threshold] = (),
                   samples: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]] | None = None) -> pd.DataFrame:
    """One row per (cell key, metric) present in both runs, with the verdict."""
    limits = dict(DEFAULT_THRESHOLDS)
    limits.update({t.group_or_metric: t.percent for t in thresholds})
    samples = samples or {}
    base = baseline[baseline["status"] == "ok"].set_index("key")
    cand = candidate[candidate["status"] == "ok"].set_index("key")
    rows = []
    for key in [k for k in cand.index if k in base.index]:
        for entry in REGISTRY.gated():
            metric = entry.name
            if metric not in base.columns or metric not in cand.columns:
                continue
            old, new = base.at[key, metric], cand.at[key, metric]
            if pd.isna(old) or pd.isna(new) or old == 0:
                continue
            limit = limits.get(metric, limits[entry.group])
            improvement = entry.improvement(float(old), float(new)) * 100
            p_value = latency_significance(*samples[key]) if metric.startswith("speed.latency") and key in samples else None
            if improvement >= -limit:
                verdict = "ok"
            elif p_value is not None and p_value >= SIGNIFICANCE_ALPHA:
                verdict = "not significant"
            else:
                verdict = "REGRESSION"
            rows.append({"key": key, "metric": metric, "baseline": float(old), "candidate": float(new),
                         "improvement_pct": improvement, "threshold_pct": limit, "p_value": p_value, "verdict": verdict})
    return pd.DataFrame(rows, columns=["key", "metric", "baseline", "candidate", "improvement_pct", "threshold_pct",
                                       "p_value", "verdict"])


def format_comparison(table: pd.DataFrame, baseline_run: Mapping, candidate_run: Mapping, unmatched: Sequence[str]) -> str:
    lines = [
        f"baseline:  {baseline_run['run_id']}  commit {str(baseline_run.get('git_commit'))[:10]}  machine {baseline_run.get('machine_id')}",
        f"candidate: {candidate_run['run_id']}  commit {str(candidate_run.get('git_commit'))[:10]}  machine {candidate_run.get('machine_id')}",
    ]
    if baseline_run.get("machine_id") != candidate_run.get("machine_id"):
        lines.append("note: the runs come from different machines: speed differences include the hardware's")
    if table.empty:
        lines.append("no ok cell is in both runs: nothing to compare")
    else:
        shown = table.assign(
            baseline=table["baseline"].map(lambda v: f"{v:.4g}"),
            candidate=table["candidate"].map(lambda v: f"{v:.4g}"),
            change=table["improvement_pct"].map(lambda v: f"{v:+.1f}%"),
            gate=table["threshold_pct"].map(lambda v: f"-{v:g}%"),
            p=table["p_value"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3g}"),
        )[["key", "metric", "baseline", "candidate", "change", "gate", "p", "verdict"]]
        lines.append(shown.to_string(index=False))
        regressions = int((table["verdict"] == "REGRESSION").sum())
        lines.append(f"{len(table)} comparisons, {regressions} regressions (change is positive when better)")
    if unmatched:
        lines.append(f"cells in only one run (not compared): {', '.join(unmatched)}")
    return "\n".join(lines)
