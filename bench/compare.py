"""``aebench compare``: stored runs against stored runs, judged only as far as the data allows.

Cells are matched by their key (variant, noise, device, threads, backend, precision, seed) and judged on the metrics
the registry gives a margin (aebench.metrics):

- **Quality** is compared exactly: the same code with the same seed gives bit-identical figures, so any difference is
  real and reported with its size; it is a regression only when worse than the metric's margin (in its own unit).
- **Speed** moves between processes and between minutes on a shared machine. One run against one run cannot tell a
  change from that noise (within-run samples do not see it), so such a comparison never calls a speed regression:
  it says instead how large a change this machine's noise hides, from the spread of earlier runs of the same machine
  and matrix in the store. Seeds of one run are not repeats for this purpose: they share that run's minutes on the
  machine. When each side has several runs, the runs are the samples (each the geometric mean of its seeds): a Welch
  interval on the mean log figure and one-sided tests against the margin, adjusted over the table
  (Benjamini-Hochberg), give ``regression`` / ``improvement`` / ``same`` / ``unknown`` as ``aebench ab`` does with
  paired rounds.

Runs whose settings differ (aebench.config.matrix_settings: every matrix key but the axes, seeds and run limits) are not
comparable: compare refuses them unless ``--force``. The table comes first; the exit status says whether a gate
failed (pytest-benchmark's ``--benchmark-compare-fail`` style).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aebench import stats
from aebench.config import Cell, settings_differences, split_by_settings
from aebench.errors import UserError
from aebench.metrics import REGISTRY
from aebench.store import Store, flat_frame, timed_on, without_contaminated_speed


@dataclass(frozen=True)
class Side:
    """One side of a comparison: one or more runs of one store, and their ok cells as a flat table."""

    store: Store
    run_ids: tuple[str, ...]
    records: tuple[dict, ...]
    frame: pd.DataFrame
    failed: frozenset[str] = frozenset()  # cells (seed included) that failed or timed out in every run of the side

    @property
    def label(self) -> str:
        commits = sorted({str(r.get("git_commit"))[:10] for r in self.records})
        runs = self.run_ids[0] if len(self.run_ids) == 1 else f"{len(self.run_ids)} runs"
        machines = sorted({str(machine) for machine in timed_on(self.frame)} if not self.frame.empty
                          else {str(r.get("machine_id")) for r in self.records})
        # A run named by id may be unfinished (running, interrupted, abandoned): its figures are the cells it finished.
        unfinished = [f"{r['run_id']} {r['status']}" for r in self.records if r.get("status") not in (None, "complete")]
        status = f"  ({', '.join(unfinished)}: only the cells it finished)" if unfinished else ""
        return f"{runs}  commit {', '.join(commits)}  machine {', '.join(machines)}{status}"


def select_runs(store: Store, ref: str) -> list[str]:
    """A run id or unique prefix, ``latest``, a comma-separated list of them, or ``commit:REV``: every complete run
    of the commit(s) starting with REV."""
    if ref.startswith("commit:"):
        prefix = ref.removeprefix("commit:")
        runs = store.runs_frame()
        chosen = runs[(runs["status"] == "complete") & runs["git_commit"].fillna("").str.startswith(prefix)]
        if not prefix or chosen.empty:
            raise UserError(f"{ref!r} matches no complete run in {store.location}: allowed commit:REV with REV the start "
                            "of a commit that 'aebench list' shows")
        return list(chosen["run_id"])
    return [store.resolve_run(part.strip(), complete=True) for part in ref.split(",") if part.strip()]


def load_side(store: Store, ref: str) -> Side:
    run_ids = select_runs(store, ref)
    records = tuple(store.run_record(run_id) for run_id in run_ids)
    frame = pd.concat([flat_frame(record, store.results(run_id, with_artifacts=False))
                       for run_id, record in zip(run_ids, records)] or [pd.DataFrame()], ignore_index=True)
    ok = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    failed = frame[frame["status"].isin(["failed", "timeout"])] if "status" in frame.columns else frame.iloc[0:0]
    return Side(store, tuple(run_ids), records, without_contaminated_speed(ok).reset_index(drop=True),
                frozenset(set(failed["key"]) - set(ok["key"])) if not failed.empty else frozenset())


def _values(frame: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    if frame.empty or metric not in frame.columns:
        return {}
    numbers = pd.to_numeric(frame[metric], errors="coerce")
    groups: dict[str, list[float]] = {}
    for key, value in zip(frame["key"], numbers):
        if pd.notna(value):
            groups.setdefault(key, []).append(float(value))
    return groups


def run_figures(frame: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """Cell group (seed left out) -> one figure per run, in the frame's order: the geometric mean of the run's seeds.
    Seeds run in the same minutes of the machine as each other, so only runs sample the noise between runs."""
    if frame.empty or metric not in frame.columns:
        return {}
    numbers = pd.to_numeric(frame[metric], errors="coerce")
    logs: dict[str, dict[str, list[float]]] = {}
    for key, run_id, value in zip(frame["key"], frame["run_id"], numbers):
        group = Cell.group_key(key)
        if pd.notna(value) and value > 0:
            logs.setdefault(group, {}).setdefault(run_id, []).append(math.log(float(value)))
    return {group: [math.exp(float(np.mean(values))) for values in runs.values()] for group, runs in logs.items()}


def compare_quality(base: pd.DataFrame, candidate: pd.DataFrame,
                    margins: Mapping[str, float]) -> list[stats.QualityComparison]:
    """Per cell (seed included) and gated quality metric: the mean over a side's runs, compared exactly. A figure
    the baseline has and the candidate lost (a NaN, stored as None) in a cell both ran is a regression. Each model
    is judged once, under the cell that trained it: its other thread counts share its figures."""
    rows = []
    base, candidate = own_quality(base), own_quality(candidate)
    both = set(base["key"]) & set(candidate["key"]) if not (base.empty or candidate.empty) else set()
    for metric in (name for name in margins if REGISTRY[name].group == "quality"):
        a, b = _values(base, metric), _values(candidate, metric)
        for key in [k for k in b if k in a]:
            rows.append(stats.quality_verdict(key, metric, float(np.mean(a[key])), float(np.mean(b[key])),
                                              higher_is_better=REGISTRY[metric].better == "higher",
                                              margin=margins[metric]))
        for key in sorted(k for k in both if k in a and k not in b):
            rows.append(stats.QualityComparison(key, metric, float(np.mean(a[key])), math.nan, math.nan,
                                                margins[metric], "regression"))
    return rows


def own_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose quality figures are their own: a cell that timed the weights another cell of the table trained
    (``info.trained_by``) repeats that cell's figures, and comparing both would count one change twice."""
    if frame.empty or "info.trained_by" not in frame.columns:
        return frame
    trainer = frame["info.trained_by"]
    shared = trainer.notna() & (trainer != frame["key"]) & trainer.isin(set(frame["key"]))
    return frame[~shared]


def compare_speed(base: pd.DataFrame, candidate: pd.DataFrame,
                  margins: Mapping[str, float]) -> tuple[list[stats.SpeedComparison], list[dict]]:
    """Run-level verdicts where both sides have at least two runs of a cell, else a plain row of the two figures with
    no verdict (one run against one run, whatever its seeds). Returns (judged comparisons, unjudged rows)."""
    judged, plain = [], []
    for metric in (name for name in margins if REGISTRY[name].group == "speed"):
        a, b = run_figures(base, metric), run_figures(candidate, metric)
        for group in [g for g in b if g in a]:
            entry = REGISTRY[metric]
            if len(a[group]) >= 2 and len(b[group]) >= 2:
                judged.append(stats.compare_runs(group, metric, a[group], b[group],
                                                 higher_is_better=entry.better == "higher", margin_pct=margins[metric]))
            else:
                plain.append({"key": group, "metric": metric, "baseline": float(np.mean(a[group])),
                              "candidate": float(np.mean(b[group])),
                              "change_pct": (float(np.mean(b[group])) / float(np.mean(a[group])) - 1) * 100})
    return stats.decide(judged), plain


def history_noise(store: Store, like: Mapping[str, Any],
                  metrics: Sequence[str]) -> dict[tuple[str, str], tuple[float, int]]:
    """(cell group, metric) -> (run-to-run standard deviation of its log figure, runs it came from), over the
    complete runs in the store of the machine, matrix and settings of the run record ``like``, in time order
    (aebench.stats.successive_difference_sd)."""
    runs = store.runs_frame()
    runs = runs[(runs["status"] == "complete") & (runs["machine_id"] == like.get("machine_id"))
                & (runs["matrix_name"] == like.get("matrix_name"))]
    run_ids, _ = split_by_settings({run_id: store.run_record(run_id) for run_id in runs["run_id"]}, like)
    if len(run_ids) < 3:
        return {}
    frame = without_contaminated_speed(store.frame(run_ids))
    if not frame.empty:  # not the cells a cluster's other nodes timed
        frame = frame[timed_on(frame).astype(str) == str(like.get("machine_id"))]
    frame = frame[frame["status"] == "ok"].sort_values(["started_at", "cell"], kind="stable")
    noise = {}
    for metric in metrics:
        for group, values in run_figures(frame, metric).items():
            sd = stats.successive_difference_sd(values)
            if sd is not None:
                noise[(group, metric)] = (sd, len(values))
    return noise


@dataclass
class Comparison:
    base: Side
    candidate: Side
    quality: list[stats.QualityComparison]
    speed: list[stats.SpeedComparison]
    unjudged: list[dict]
    noise: dict[tuple[str, str], tuple[float, int]]
    unmatched: list[str]
    differences: list[str]
    broken: list[str] = field(default_factory=list)  # ok in the baseline, failed or timed out in the candidate

    def regressions(self) -> int:
        """Regression verdicts, and cells the candidate broke: a cell that stops running lost every figure."""
        return (sum(c.verdict == "regression" for c in self.quality) + sum(c.verdict == "regression" for c in self.speed)
                + len(self.broken))


def refuse_different_settings(differences: Sequence[str], force: bool) -> None:
    """Bad input unless ``--force``: runs whose settings differ measure different things."""
    if differences and not force:
        raise UserError("the runs' settings differ, so their figures measure different things ("
                        + "; ".join(differences) + "): compare runs of one matrix, or pass --force")


def compare_sides(base: Side, candidate: Side, margins: Mapping[str, float], *, force: bool = False) -> Comparison:
    differences = settings_differences(base.records, candidate.records)
    refuse_different_settings(differences, force)
    quality = compare_quality(base.frame, candidate.frame, margins)
    speed, unjudged = compare_speed(base.frame, candidate.frame, margins)
    noise: dict[tuple[str, str], tuple[float, int]] = {}
    if unjudged:
        noise = history_noise(base.store, base.records[0], sorted({row["metric"] for row in unjudged}))
    keys = [set(side.frame["key"]) if not side.frame.empty else set() for side in (base, candidate)]
    broken = keys[0] & candidate.failed
    return Comparison(base, candidate, quality, speed, unjudged, noise, sorted((keys[0] ^ keys[1]) - broken),
                      differences, sorted(broken))


def _pct(value: float) -> str:
    return f"{value:+.1f}%" if math.isfinite(value) else ""


def quality_frame(quality: Sequence[stats.QualityComparison]) -> pd.DataFrame:
    """Exact quality comparisons as a table (compare, ab): the figures, their difference, the margin, the verdict."""
    return pd.DataFrame({
        "cell": [q.key for q in quality],
        "metric": [REGISTRY.label(q.metric) for q in quality],
        "baseline": [REGISTRY.format(q.metric, q.base) for q in quality],
        "candidate": [REGISTRY.format(q.metric, q.candidate) for q in quality],
        "difference": [f"{q.difference:+.6g}" for q in quality],
        "margin": [f"{q.margin:g}" if math.isfinite(q.margin) else "(not gated)" for q in quality],
        # A figure without a margin is reported, not judged: its difference is evidence of the change, no verdict.
        "verdict": [q.verdict if math.isfinite(q.margin) else "changed" for q in quality],
    })


def speed_frame(speed: Sequence[stats.SpeedComparison], samples: str) -> pd.DataFrame:
    """Speed verdicts as a table (compare, ab): the change with its 95% interval, the margin, how many ``samples``
    (runs or rounds) it rests on, the verdict."""
    return pd.DataFrame({
        "cell": [c.key for c in speed],
        "metric": [REGISTRY[c.metric].heading(REGISTRY.label(c.metric)) for c in speed],
        "change": [_pct(c.change_pct) for c in speed],
        "95% interval": [f"[{_pct(c.ci_low_pct)}, {_pct(c.ci_high_pct)}]" for c in speed],
        "margin": [f"±{c.margin_pct:g}%" for c in speed],
        samples: [c.rounds for c in speed],
        "verdict": [c.verdict for c in speed],
    })


def format_comparison(comparison: Comparison) -> str:
    base, candidate = comparison.base, comparison.candidate
    lines = [f"baseline:  {base.label}", f"candidate: {candidate.label}"]
    machines = {str(machine) for side in (base, candidate) if not side.frame.empty for machine in timed_on(side.frame)}
    if len(machines) > 1:
        lines.append("note: the runs come from different machines: speed differences include the hardware's "
                     "(aebench hardware compares machines)")
    if comparison.differences:
        lines.append("note: --force: the settings differ (" + "; ".join(comparison.differences) + ")")
    quality = comparison.quality
    if quality:
        lines.append("")
        lines.append("quality (exact; the same code and seed give bit-identical figures):")
        lines.append(quality_frame(quality).to_string(index=False))
    if comparison.speed:
        lines.append("")
        lines.append("speed (run-level: each run one sample, its seeds' geometric mean; Welch 95% interval, tests "
                     "adjusted over the table):")
        lines.append(speed_frame(comparison.speed, "runs").to_string(index=False))
    if comparison.unjudged:
        lines.append("")
        lines.append("speed, one run against one run (not judged: within-run samples cannot see the noise between runs):")
        rows = comparison.unjudged
        hidden = [comparison.noise.get((row["key"], row["metric"])) for row in rows]
        lines.append(pd.DataFrame({
            "cell": [row["key"] for row in rows],
            "metric": [REGISTRY.label(row["metric"]) for row in rows],
            "baseline": [REGISTRY.format(row["metric"], row["baseline"]) for row in rows],
            "candidate": [REGISTRY.format(row["metric"], row["candidate"]) for row in rows],
            "change": [_pct(row["change_pct"]) for row in rows],
            "noise hides": [f"±{stats.hidden_change_pct(h[0]):.1f}% ({h[1]} runs)" if h else "unknown" for h in hidden],
        }).to_string(index=False))
        known = [stats.hidden_change_pct(h[0]) for h in hidden if h]
        if known:
            lines.append(f"this machine's run-to-run noise hides speed changes up to {np.median(known):.1f}% "
                         "(median over these figures, from earlier runs of this machine and matrix); to judge speed, "
                         "run `aebench ab` or compare several runs per side")
        else:
            lines.append("the store holds fewer than 3 earlier runs of this machine and matrix, so the noise that "
                         "hides a change is unknown; to judge speed, run `aebench ab` or compare several runs per side")
    if not (quality or comparison.speed or comparison.unjudged):
        lines.append("no ok cell is in both sides: nothing to compare")
    if comparison.broken:
        lines.append("")
        lines.append("cells that ran in the baseline and failed or timed out in the candidate (each a regression): "
                     + ", ".join(comparison.broken))
    lines.append("")
    lines.append(f"{comparison.regressions()} regressions")
    if comparison.unmatched:
        lines.append(f"cells in only one side (not compared): {', '.join(comparison.unmatched)}")
    return "\n".join(lines)
