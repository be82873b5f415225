"""``aebench hardware``: one matrix run on several machines. Which is faster, by how much, with what confidence, and
do the results agree?

Each operand names one machine's runs: ``RUN`` in the default store, or ``PATH.sqlite:RUN`` in another store file,
with RUN in any form ``aebench compare`` accepts (several runs of one machine are its repeats). The first operand
is the reference. Every run of an operand must come from one machine fingerprint, the operands from different
machines (or, with devices named, different machine and device pairs), and the runs' settings must agree
(``--force`` overrides the last, as in compare).

``OPERAND@DEVICE`` (``@cpu2``, ``@gpu``: the device part of a cell key) keeps one device configuration of an operand
and matches cells across operands without it, so that one workload (variant, noise, backend, precision, seed) is
compared on a CPU with N threads against a GPU, on one machine or two. Either every operand names a device or none
does; two operands may then be one machine on different devices.

- **Speed**: per cell group (the cell without its seed) and gated speed metric, "X is N times as fast": X's throughput
  over the reference's, or the reference's latency over X's, so above 1 always means faster (the ratio of geometric
  means over each machine's figures). With two or more runs on both machines, the interval is Welch's on the runs'
  log figures, one per run (its seeds' geometric mean: seeds share their run's minutes, so they are not repeats;
  ``aebench.stats.compare_runs``), and the verdict tests the metric's margin, adjusted over the table
  (Benjamini-Hochberg). With one figure per machine, a latency gets a bootstrap interval from the two runs' raw
  batch-1 samples, which sees only the noise within a run and so understates the noise between runs; a throughput,
  one number per run, gets none.
- **Geometric means** of the ratios per variant and overall (SPEC, MLPerf), with the number of cells in each.
- **Environment**: the keys that differ between the machines, side by side; the rest in one line.
- **Quality**: the same seed on other hardware may differ in the last bits (other kernels, another summation order).
  Every difference is reported; it is flagged as **numerical divergence** when it exceeds the spread over seeds of
  its cell group (the larger of the two machines' standard deviations) or the metric's margin, whichever is smaller.

A hardware comparison is information, not a gate: exit status 0, or 2 on bad input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup
from scipy.stats import gmean

from aebench import atomic, compare, stats
from aebench.config import Cell, settings_differences
from aebench.errors import UserError
from aebench.load import CONTAMINATED
from aebench.machine import FINGERPRINT_KEYS
from aebench.metrics import REGISTRY, flag_is_set
from aebench.scenarios import Latency
from aebench.report.page import Section, render, render_document
from aebench.report.table import key_value_table, styled_table, text, times
from aebench.store import REPORTS_DIR, Store, open_store, store_key, timed_on

PAGES_DIR = REPORTS_DIR / "hardware"
_STORE_OPERAND = re.compile(r"^(?P<path>.+?\.sqlite):(?P<run>.*)$")
_DEVICE_SUFFIX = re.compile(r"^(?P<operand>.+)@(?P<device>[a-z]+[0-9]*)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
ALL_VARIANTS = "all"
# The raw-sample statistic behind each batch-1 latency figure (aebench.scenarios.Latency.metrics computes the figures
# from the same samples; a test holds the two together).
SAMPLE_STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "speed.latency_b1_p50_ms": partial(np.percentile, q=50),
    "speed.latency_b1_p90_ms": partial(np.percentile, q=90),
    "speed.latency_b1_p99_ms": partial(np.percentile, q=99),
    "speed.latency_b1_p999_ms": partial(np.percentile, q=99.9),
    "speed.latency_b1_mean_ms": np.mean,
}
# Where a ratio's interval comes from.
WELCH = "welch"
WITHIN_RUN = "within-run"
NO_INTERVAL = "none"
VERDICT_WORDS = {"improvement": "faster", "regression": "slower", "same": "same", "unknown": "unknown"}
RATIO_NOTE = ("X is N times as fast as the reference: X's throughput / the reference's, or the reference's latency / "
              "X's, so above 1 is faster; figures are geometric means over each machine's runs x seeds of the cell "
              "(seed left out).")
# What each interval method means, said once under the tables that use it.
METHOD_NOTES = {
    WELCH: "Welch: 95% interval on log figures, each run or seed one sample (aebench.stats.compare_runs); the verdict "
           "is tested against the metric's margin, adjusted over the table: faster / slower beyond it, same within "
           "it, unknown when the data cannot tell.",
    WITHIN_RUN: "within-run samples only: a 95% bootstrap interval from the raw batch-1 latency samples of one run per "
                "machine; it understates run-to-run noise. Repeat the runs on each machine for a Welch interval.",
    NO_INTERVAL: "none: a throughput is one figure per run, with no samples to resample, and a figure with repeats on "
                 "one machine only has no Welch interval; repeat the runs on each machine for one.",
}
GEOMEAN_NOTE = ("Geometric mean of the per-cell ratios (SPEC / MLPerf style), per variant and over all variants, "
                "with the number of cells in each.")
QUALITY_NOTE = ("The same cell and seed on other hardware may differ in the last bits (other kernels, summation "
                "order). Every difference is shown; numerical divergence is a difference beyond the spread over "
                "seeds of the cell group (the larger standard deviation of the two machines) or, with one seed, the "
                "metric's margin.")


@dataclass(frozen=True)
class Machine:
    """One operand: one machine's runs, their ok cells (with a ``group`` column: the key without its seed) and the
    raw batch-1 latency samples of each (run id, cell index). Where the operand chose a device, only that device's
    cells are kept and their ``key`` (so their group too) lacks the device part, to match other devices' cells."""

    operand: str
    store_location: str
    run_ids: tuple[str, ...]
    records: tuple[dict, ...]
    frame: pd.DataFrame
    samples: Mapping[tuple[str, int], np.ndarray]
    machine_id: str  # the machine that timed the cells (a cluster's node: each cell says which), else the runs'
    device: str | None = None  # OPERAND@DEVICE: the one device configuration (cpu2, gpu) kept of its cells
    other_devices: int = 0  # ok cells left out because they ran on another device configuration

    @property
    def label(self) -> str:
        """What names this operand in the tables: its machine, and its device where the operand chose one."""
        return f"{self.machine_id}@{self.device}" if self.device else self.machine_id

    @property
    def environment(self) -> dict[str, str]:
        """Each environment key as its distinct values over this machine's runs ("a / b" where runs differ)."""
        values: dict[str, list[str]] = {}
        for record in self.records:
            for key, value in (record.get("environment") or {}).items():
                shown = values.setdefault(key, [])
                if text(value) not in shown:
                    shown.append(text(value))
        # A cell's own fingerprint names the machine that ran it, where that was not the run's (a cluster's node).
        # The device the cells really ran on (cuda:0 (NVIDIA H200), ...) tells GPUs apart that one fingerprint hides.
        for column in (f"info.{key}" for key in (*FINGERPRINT_KEYS, "machine_id", "backend_device")):
            if column in self.frame.columns and self.frame[column].notna().any():
                values[column.removeprefix("info.")] = list(dict.fromkeys(map(text, self.frame[column].dropna())))
        return {key: " / ".join(shown) for key, shown in values.items()}

    def describe(self) -> str:
        commits = sorted({str(record.get("git_commit"))[:10] for record in self.records})
        left_out = f"  ({self.other_devices} ok cells on other devices left out)" if self.other_devices else ""
        return (f"{self.label}  {self.environment.get('cpu_model', 'unknown CPU')}  runs {', '.join(self.run_ids)}"
                f"  commit {', '.join(commits)}  ({self.store_location}){left_out}")


@dataclass(frozen=True)
class SpeedRatio:
    """One gated speed metric of one cell group: how many times as fast ``machine`` is as the reference."""

    machine: str
    group: str
    variant: str
    metric: str
    reference: float  # geometric mean of the reference's figures, in the metric's unit
    other: float
    counts: tuple[int, int]  # runs on the reference and on the machine (seeds of one run are not repeats)
    ratio: float  # > 1: the machine is faster
    low: float = math.nan
    high: float = math.nan
    method: str = NO_INTERVAL
    verdict: str = ""  # Welch only: faster / slower / same / unknown


@dataclass(frozen=True)
class QualityCheck:
    """One gated quality metric of one cell (seed included) on ``machine`` against the reference."""

    machine: str
    key: str
    metric: str
    reference: float
    other: float
    threshold: float
    basis: str  # "seed spread" or "margin"

    @property
    def difference(self) -> float:
        return self.other - self.reference

    @property
    def diverges(self) -> bool:
        return abs(self.difference) > self.threshold


@dataclass(frozen=True)
class HardwareComparison:
    machines: tuple[Machine, ...]  # the reference first
    ratios: tuple[SpeedRatio, ...]
    geomeans: pd.DataFrame  # machine, metric, variant, cells, geomean
    environment: pd.DataFrame  # key, then one column per machine id: the keys that differ
    same_environment: dict[str, str]
    quality: tuple[QualityCheck, ...]
    differences: tuple[str, ...]  # settings that differ (only with --force)
    unmatched: tuple[str, ...]  # cells (seed included) that only one of a pair of machines has

    @property
    def reference(self) -> Machine:
        return self.machines[0]


# -- loading -----------------------------------------------------------------------------------------------------------


def split_device(operand: str) -> tuple[str, str | None]:
    """``OPERAND@DEVICE`` -> (OPERAND, DEVICE); an operand without a device -> (operand, None)."""
    match = _DEVICE_SUFFIX.match(operand)
    return (match["operand"], match["device"]) if match else (operand, None)


def parse_operand(operand: str, default_store: str | Path) -> tuple[str | Path, str]:
    """``RUN`` (in the default store) or ``PATH.sqlite:RUN`` -> (store path, RUN)."""
    match = _STORE_OPERAND.match(operand)
    if match:
        path, run = Path(match["path"]), match["run"].strip()
    elif ":" not in operand or operand.startswith("commit:"):
        path, run = default_store, operand.strip()
    else:
        path, run = default_store, ""
    if not run:
        raise UserError(f"operand {operand!r} is invalid: allowed RUN (a run id or prefix, 'latest', a comma list, "
                        "commit:REV) in --store, or PATH.sqlite:RUN for another store file")
    return path, run


def _load(operand: str, store: Store, run: str, device: str | None = None) -> Machine:
    side = compare.load_side(store, run)
    frame, other_devices = side.frame, 0
    if device is not None:
        devices = [Cell.device_part(key) for key in frame["key"]] if not frame.empty else []
        if device not in devices:
            raise UserError(f"operand {operand!r}: no ok cell ran on device {device!r}: allowed "
                            f"{', '.join(sorted(set(devices))) or 'none (the runs have no ok cell)'}")
        kept = [found == device for found in devices]
        frame, other_devices = frame[kept], kept.count(False)
    machine_ids = sorted({str(machine) for machine in timed_on(frame)} if not frame.empty
                         else {str(record.get("machine_id")) for record in side.records})
    if len(machine_ids) > 1:
        raise UserError(f"operand {operand!r} mixes machines ({', '.join(machine_ids)}): allowed the runs of one "
                        "machine per operand; name each machine's runs in an operand of its own")
    if not frame.empty:
        # Cells are matched across operands on their key, which leaves the device out where the operands chose
        # devices (the same workload on a CPU and a GPU); the group leaves the seed out as well.
        if device:
            frame = frame.assign(key=[Cell.workload_key(key) for key in frame["key"]])
        frame = frame.assign(group=[Cell.group_key(key) for key in frame["key"]])
    # The raw latency samples of the cells whose figures count: those kept (of the chosen device), less the
    # contaminated ones, whose samples are left out with their figures.
    counted = {(row["run_id"], int(row["cell"])) for row in frame.to_dict(orient="records")
               if not flag_is_set(row.get(CONTAMINATED))} if not frame.empty else set()
    samples = {(run_id, int(cell)): np.asarray(arrays[Latency.ARTIFACT], dtype=np.float64)
               for run_id in side.run_ids
               for cell, arrays in store.artifacts(run_id, names=[Latency.ARTIFACT]).items()
               if (run_id, int(cell)) in counted}
    return Machine(operand, store.location, side.run_ids, side.records, frame, samples, machine_ids[0], device,
                   other_devices)


def load_machines(operands: Sequence[str], default_store: str | Path) -> tuple[Machine, ...]:
    """Read every operand's runs (each store opened once and closed again) and check that each operand is one
    machine and that the operands are different machines, or different machine and device pairs."""
    if len(operands) < 2:
        raise UserError(f"aebench hardware needs at least two operands (got {len(operands)}): allowed "
                        "RUN RUN [RUN...], one per machine (or RUN@DEVICE, one per machine and device), the "
                        "reference first")
    split = [split_device(operand) for operand in operands]
    chosen = [operand for operand, (_, device) in zip(operands, split) if device]
    if chosen and len(chosen) < len(operands):
        bare = next(operand for operand, (_, device) in zip(operands, split) if not device)
        raise UserError(f"operand {bare!r} names no device while {chosen[0]!r} does: allowed a device on every "
                        "operand (RUN@cpu2 RUN@gpu: one workload across devices) or on none (one machine per operand)")
    parsed = [parse_operand(operand, default_store) for operand, _ in split]
    with ExitStack() as stack:
        stores: dict[str, Store] = {}
        machines = []
        for operand, (location, run), (_, device) in zip(operands, parsed, split):
            where = store_key(location)
            if where not in stores:
                stores[where] = stack.enter_context(open_store(location, create=False))
            machines.append(_load(operand, stores[where], run, device))
    seen: dict[str, str] = {}
    for machine in machines:
        if machine.label in seen:
            what = "machine and device" if machine.device else "machine"
            raise UserError(f"operands {seen[machine.label]!r} and {machine.operand!r} are the same {what} "
                            f"({machine.label}): allowed one operand per {what}; 'aebench compare' compares "
                            "runs of one machine")
        seen[machine.label] = machine.operand
    return tuple(machines)


# -- speed -------------------------------------------------------------------------------------------------------------


def _figures(frame: pd.DataFrame, metric: str) -> dict[str, list[tuple[float, str, int]]]:
    """Cell group -> its (figure, run id, cell index) over runs and seeds, in frame order."""
    if frame.empty or metric not in frame.columns:
        return {}
    groups: dict[str, list[tuple[float, str, int]]] = {}
    values = pd.to_numeric(frame[metric], errors="coerce")
    for group, value, run_id, cell in zip(frame["group"], values, frame["run_id"], frame["cell"]):
        if pd.notna(value) and value > 0:
            groups.setdefault(group, []).append((float(value), str(run_id), int(cell)))
    return groups


def speed_ratios(reference: Machine, machine: Machine) -> list[SpeedRatio]:
    """Every gated speed metric of every cell group both machines ran, in the reference's order."""
    variants = dict(zip(reference.frame["group"], reference.frame["variant"])) if not reference.frame.empty else {}
    ratios: list[SpeedRatio] = []
    judged: list[tuple[int, stats.SpeedComparison]] = []
    for metric in REGISTRY.gated("speed"):
        higher = metric.better == "higher"
        ours, theirs = _figures(reference.frame, metric.name), _figures(machine.frame, metric.name)
        # One figure per run (its seeds' geometric mean): seeds share their run's minutes of the machine, so only
        # runs sample the noise between runs (as aebench compare judges).
        our_runs, their_runs = compare.run_figures(reference.frame, metric.name), \
            compare.run_figures(machine.frame, metric.name)
        for group in (g for g in ours if g in theirs):
            a, b = [f[0] for f in ours[group]], [f[0] for f in theirs[group]]
            runs_a, runs_b = our_runs[group], their_runs[group]
            log_ratio = math.log(gmean(b) / gmean(a)) * (1 if higher else -1)
            row = dict(machine=machine.label, group=group, variant=str(variants[group]), metric=metric.name,
                       reference=float(gmean(a)), other=float(gmean(b)), counts=(len(runs_a), len(runs_b)),
                       ratio=math.exp(log_ratio))
            if len(runs_a) >= 2 and len(runs_b) >= 2:
                judged.append((len(ratios), stats.compare_runs(group, metric.name, runs_a, runs_b,
                                                               higher_is_better=higher,
                                                               margin_pct=metric.margin or 0.0)))
            elif len(a) == 1 and len(b) == 1 and metric.name in SAMPLE_STATISTICS:
                pair = [m.samples.get(f[0][1:]) for m, f in ((reference, ours[group]), (machine, theirs[group]))]
                if all(s is not None and len(s) >= 2 for s in pair):
                    base, candidate = pair if higher else pair[::-1]  # so that a positive log ratio is faster
                    gain = stats.bootstrap_log_ratio(base, candidate, SAMPLE_STATISTICS[metric.name])
                    row.update(ratio=math.exp(gain.estimate), low=math.exp(gain.low), high=math.exp(gain.high),
                               method=WITHIN_RUN)
            ratios.append(SpeedRatio(**row))
    # One family of adjusted tests per machine: every Welch comparison of its cells and metrics.
    for index, comparison in zip([i for i, _ in judged], stats.decide([c for _, c in judged])):
        gain = comparison.gain
        ratios[index] = replace(ratios[index], ratio=math.exp(gain.estimate), low=math.exp(gain.low),
                                high=math.exp(gain.high), method=WELCH, verdict=VERDICT_WORDS[comparison.verdict])
    return ratios


def geometric_means(ratios: Sequence[SpeedRatio]) -> pd.DataFrame:
    """Per machine and metric: the geometric mean of the cells' ratios over all variants, then per variant."""
    columns = ["machine", "metric", "variant", "cells", "geomean"]
    if not ratios:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"machine": [r.machine for r in ratios], "metric": [r.metric for r in ratios],
                          "variant": [r.variant for r in ratios], "ratio": [r.ratio for r in ratios]})
    rows = []
    for (machine, metric), part in frame.groupby(["machine", "metric"], sort=False):
        rows.append((machine, metric, ALL_VARIANTS, len(part), float(gmean(part["ratio"]))))
        for variant, cells in part.groupby("variant", sort=False):
            rows.append((machine, metric, variant, len(cells), float(gmean(cells["ratio"]))))
    return pd.DataFrame(rows, columns=columns)


# -- environment and quality -------------------------------------------------------------------------------------------


def environment_diff(machines: Sequence[Machine]) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the keys whose values differ, one column per machine; the keys every machine shares -> their value). The
    machine id is left out: it differs by construction and heads the columns."""
    environments = [machine.environment for machine in machines]
    keys = list(dict.fromkeys(key for env in environments for key in env if key != "machine_id"))
    differ, same = [], {}
    for key in keys:
        values = [env.get(key, text(None)) for env in environments]
        if len(set(values)) == 1:
            same[key] = values[0]
        else:
            differ.append([key, *values])
    return pd.DataFrame(differ, columns=["key", *(m.label for m in machines)]), same


def _per_key(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of the figure per cell key (seed included) over this machine's runs."""
    if frame.empty or metric not in frame.columns:
        return pd.Series(dtype="float64")
    values = pd.to_numeric(frame[metric], errors="coerce")
    return values.groupby(frame["key"], sort=False).mean().dropna()


def _seed_spread(frame: pd.DataFrame, metric: str) -> dict[str, float]:
    """Cell group -> the standard deviation over its seeds (each seed the mean of its runs), where it has two or
    more seeds."""
    per_key = _per_key(frame, metric)
    spread = per_key.groupby([Cell.group_key(key) for key in per_key.index], sort=False).std(ddof=1)
    return {group: float(sd) for group, sd in spread.items() if pd.notna(sd)}


def quality_checks(reference: Machine, machine: Machine) -> list[QualityCheck]:
    checks = []
    for metric in REGISTRY.gated("quality"):
        ours, theirs = _per_key(reference.frame, metric.name), _per_key(machine.frame, metric.name)
        spreads = [_seed_spread(reference.frame, metric.name), _seed_spread(machine.frame, metric.name)]
        for key in (k for k in ours.index if k in theirs.index):
            seen = [spread[Cell.group_key(key)] for spread in spreads if Cell.group_key(key) in spread]
            # Beyond the cell's seed spread or beyond the metric's margin, whichever is smaller, is divergence: more
            # than a seed changes, or more than the practical margin that `compare` and `ab` gate on.
            threshold, basis = float(metric.margin or 0.0), "margin"
            if seen and max(seen) < threshold:
                threshold, basis = max(seen), "seed spread"
            checks.append(QualityCheck(machine.label, key, metric.name, float(ours[key]), float(theirs[key]),
                                       threshold, basis))
    return checks


def compare_machines(machines: Sequence[Machine], *, force: bool = False) -> HardwareComparison:
    """Every machine after the first against the first."""
    reference, others = machines[0], machines[1:]
    differences = [f"{machine.label}: {line}" for machine in others
                   for line in settings_differences(reference.records, machine.records)]
    compare.refuse_different_settings(differences, force)
    ratios = [ratio for machine in others for ratio in speed_ratios(reference, machine)]
    environment, same = environment_diff(machines)
    quality = [check for machine in others for check in quality_checks(reference, machine)]
    keys = [set(machine.frame["key"]) if not machine.frame.empty else set() for machine in machines]
    unmatched = sorted({key for other in keys[1:] for key in keys[0] ^ other})
    return HardwareComparison(tuple(machines), tuple(ratios), geometric_means(ratios), environment, same,
                              tuple(quality), tuple(differences), tuple(unmatched))


# -- tables: the same frames for the terminal and the page -------------------------------------------------------------


def _metric_heading(metric: str) -> str:
    return REGISTRY[metric].heading(REGISTRY.label(metric))


def _interval_source(ratio: SpeedRatio) -> str:
    if ratio.method == WELCH:
        return f"Welch, {ratio.counts[0]}+{ratio.counts[1]} runs"
    if ratio.method == WITHIN_RUN:
        return "within-run samples only: understates run-to-run noise"
    if ratio.metric in SAMPLE_STATISTICS:
        if max(ratio.counts) > 1:
            return "none: repeats on one machine only"
        return "none: one run per machine, of several seeds or without raw samples"
    return "none: one figure per run (throughput)" if max(ratio.counts) == 1 else "none: repeats on one machine only"


def speed_notes(comparison: HardwareComparison) -> list[str]:
    """The ratio's meaning, then each interval method the table uses."""
    used = {ratio.method for ratio in comparison.ratios}
    return [RATIO_NOTE, *(note for method, note in METHOD_NOTES.items() if method in used)]


def speed_table(comparison: HardwareComparison) -> pd.DataFrame:
    rows = comparison.ratios
    return pd.DataFrame({
        "machine": [r.machine for r in rows],
        "cell": [r.group for r in rows],
        "metric": [_metric_heading(r.metric) for r in rows],
        "reference": [REGISTRY.format(r.metric, r.reference) for r in rows],
        "this machine": [REGISTRY.format(r.metric, r.other) for r in rows],
        "times as fast": [times(r.ratio) for r in rows],
        "95% interval": [f"[{times(r.low)}, {times(r.high)}]" if r.method != NO_INTERVAL else "—" for r in rows],
        "interval from": [_interval_source(r) for r in rows],
        "verdict": [r.verdict or "—" for r in rows],
    })


def geomean_table(comparison: HardwareComparison) -> pd.DataFrame:
    """Rows: machine and variant (all variants first); columns: each metric's geometric mean and its cell count."""
    frame = comparison.geomeans
    if frame.empty:
        return pd.DataFrame(columns=["machine", "variant"])
    shown = frame.assign(value=[f"{times(g)} ({n} cells)" if n != 1 else f"{times(g)} (1 cell)"
                                for g, n in zip(frame["geomean"], frame["cells"])])
    table = shown.pivot(index=["machine", "variant"], columns="metric", values="value")
    order = list(dict.fromkeys(zip(frame["machine"], frame["variant"])))
    table = table.reindex(pd.MultiIndex.from_tuples(order, names=["machine", "variant"]))
    table = table[list(dict.fromkeys(frame["metric"]))].rename(columns=_metric_heading).fillna("—")
    table.columns.name = None
    return table.reset_index()


def quality_table(comparison: HardwareComparison) -> pd.DataFrame:
    rows = comparison.quality
    return pd.DataFrame({
        "machine": [q.machine for q in rows],
        "cell": [q.key for q in rows],
        "metric": [_metric_heading(q.metric) for q in rows],
        "reference": [REGISTRY.format(q.metric, q.reference) for q in rows],
        "this machine": [REGISTRY.format(q.metric, q.other) for q in rows],
        "difference": [f"{q.difference:+.6g}" if q.difference else "0 (bit-identical)" for q in rows],
        "threshold": [f"{q.threshold:.6g} ({q.basis})" for q in rows],
        "numerical divergence": ["DIVERGES" if q.diverges else "no" for q in rows],
    })


def _same_line(same: Mapping[str, str]) -> str:
    return ("same on every machine: " + "; ".join(f"{key}={value}" for key, value in same.items())) if same else \
        "no environment key is the same on every machine"


def _divergence_line(comparison: HardwareComparison) -> str:
    diverging = sum(check.diverges for check in comparison.quality)
    return f"{diverging} of {len(comparison.quality)} quality figures diverge numerically"


def _unmatched_line(comparison: HardwareComparison) -> str:
    return (f"ok cells on only one machine of a pair (not compared): {', '.join(comparison.unmatched)}"
            if comparison.unmatched else "every ok cell ran on every machine")


def format_text(comparison: HardwareComparison) -> str:
    lines = [f"reference: {comparison.reference.describe()}"]
    lines += [f"machine:   {machine.describe()}" for machine in comparison.machines[1:]]
    if comparison.differences:
        lines.append("note: --force: the settings differ (" + "; ".join(comparison.differences) + ")")
    lines += ["", "speed: how many times as fast as the reference (> 1: faster)"]
    speed = speed_table(comparison)
    lines += [speed.to_string(index=False) if not speed.empty else "no gated speed figure in both machines' ok cells"]
    lines += [f"- {note}" for note in speed_notes(comparison)]
    if comparison.ratios:
        lines += ["", "geometric means of the ratios:", geomean_table(comparison).to_string(index=False)]
    lines += ["", "environment: the keys that differ"]
    if not comparison.environment.empty:
        lines.append(comparison.environment.to_string(index=False))
    lines.append(_same_line(comparison.same_environment))
    lines += ["", "quality across hardware (same cell and seed):"]
    quality = quality_table(comparison)
    if not quality.empty:
        lines.append(quality.to_string(index=False))
    lines += [_divergence_line(comparison), f"- {QUALITY_NOTE}"]
    if comparison.unmatched:
        lines += ["", _unmatched_line(comparison)]
    return "\n".join(lines)


# -- the page ----------------------------------------------------------------------------------------------------------


def _part(notes: Sequence[str], table: pd.DataFrame | None, table_id: str) -> Markup:
    rendered = styled_table(table, {}, table_id) if table is not None and not table.empty else None
    return render("sections/hardware.html", notes=list(notes), table=rendered)


def build_page(comparison: HardwareComparison) -> str:
    """The self-contained HTML page: the report's template, CSS and escaped Styler tables."""
    header = {"reference": comparison.reference.describe()}
    header.update({f"machine {index}": machine.describe() for index, machine in enumerate(comparison.machines[1:], 1)})
    if comparison.differences:
        header["--force: settings differ"] = "; ".join(comparison.differences)
    header["cells"] = _unmatched_line(comparison)
    bodies = (
        ("speed", "Speed ratios", _part(speed_notes(comparison), speed_table(comparison), "hardware-speed")),
        ("geomeans", "Geometric means", _part([GEOMEAN_NOTE], geomean_table(comparison), "hardware-geomeans")),
        ("environment", "Environment", _part([_same_line(comparison.same_environment)], comparison.environment,
                                             "hardware-environment")),
        ("quality", "Quality across hardware", _part([QUALITY_NOTE, _divergence_line(comparison)],
                                                     quality_table(comparison), "hardware-quality")),
    )
    title = "aebench hardware: " + " vs ".join(machine.label for machine in comparison.machines)
    return render_document(title, key_value_table(header, "hardware-machines"),
                           [(Section(anchor, heading), body) for anchor, heading, body in bodies])


def default_page_path(machines: Sequence[Machine]) -> Path:
    """``reports/hardware/<first run of each operand, @device where it names one, joined by -vs->.html``."""
    names = [_UNSAFE.sub("_", machine.run_ids[0] + (f"@{machine.device}" if machine.device else ""))
             for machine in machines]
    return PAGES_DIR / ("-vs-".join(names) + ".html")


def write_page(comparison: HardwareComparison, path: Path) -> Path:
    atomic.write_text(path, build_page(comparison))
    return path
