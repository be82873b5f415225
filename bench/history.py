"""``aebench history``: change points in one machine's runs of one matrix, in commit order.

The runs are every complete run of one machine fingerprint and one matrix, ordered by the committer date of their
commit (the run's ``git_commit_date`` when its environment carries one, else ``git show`` in the current repository,
else the run's start time). Several runs of one commit stay separate points, in start order.

Each cell (seed included) and metric is one series. Change points are proposed by ruptures and then judged:

- **Search: Pelt, l2 cost, jump 1, a minimum segment length.** Pelt finds the exact optimum of the penalised cost
  (Binseg is a greedy approximation; histories are tens to hundreds of runs, where exactness is cheap). The l2 cost
  models a shift of the mean, the same model the Welch test below judges. ``jump=1`` lets a change start at any run
  (ruptures' default of 5 would only allow every fifth).
- **Scale.** Speed figures are searched on their logarithm: a slowdown is a ratio, the same on a fast cell as on a
  slow one, and run-to-run noise is closer to constant in log units. Quality figures are searched raw: they are
  judged by differences in their unit.
- **Penalty:** BIC for a mean shift with known noise, ``2 sigma^2 ln(n)``, with sigma the series' run-to-run noise
  from successive differences (robust to the steps it is looking for), floored at ``(margin / 2)^2``: a change
  smaller than the margin is never kept, and without the floor a noiseless (quality) series would have no penalty.
- **Keeping a change point** (as Apache Otava's merge step: the weakest failing candidate is dropped and its
  neighbours re-judged against the segments that grow around them, until every candidate passes).
  Speed (and every figure judged by ratios): Welch's t on the log figures of the two adjacent segments, one-sided
  against the margin (aebench.stats.compare_runs, as ``compare`` judges runs): kept when p <= 0.001 (Otava's
  default level) that the change is no larger than the metric's margin, so the change is both significant and
  beyond the margin. Otava's own test is two-sided against no change, with the margin applied to the estimate; but
  the search picks the split where the segments differ most, and a test against zero then passes too often on noise
  alone: on 20-run series of 3% noise with a 5% margin, 0.35% of series got a change point that way, and none in
  2,000 tested against the margin (a 20% step on 4 + 4 runs is still found 85% of the time).
  Quality: the figures are deterministic for one code and seed, so a step is real when the segments' means differ by
  more than the metric's margin (in its unit); no p-value.

The newest segment of a series is a regression when the series' last kept change point is one: exit status 1.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import ruptures
from markupsafe import Markup

from aebench import atomic, plots, stats
from aebench.config import Cell, settings_differences, split_by_settings
from aebench.errors import UserError
from aebench.metrics import REGISTRY, with_margin_options
from aebench.store import REPORTS_DIR, Store, timed_on, without_contaminated_speed

MIN_SEGMENT = 3  # runs: the fewest on each side of a change point
MAX_P_VALUE = 0.001  # Apache Otava's default max_pvalue
GIT_TIMEOUT_S = 5.0
DEFAULT_OUT = REPORTS_DIR / "history.html"
MAX_PLOT_LINES = 8  # past this many cells a plot shows cell groups instead
TimeSource = Literal["environment", "git", "start time"]
# A commit id handed to git: hex only, so a stored string can never be read as an option.
_COMMIT = re.compile(r"[0-9a-fA-F]{4,64}\Z")


# -- the runs, in commit order -----------------------------------------------------------------------------------------


def _parse_time(text: object) -> datetime | None:
    """An ISO 8601 time as an aware datetime (naive ones are UTC); None when absent or not a time."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def git_commit_date(commit: str, cwd: Path | None = None) -> datetime | None:
    """The committer date of ``commit`` in the git repository at ``cwd`` (default: the current directory); None when
    git, the repository or the commit is unknown, or git takes longer than GIT_TIMEOUT_S."""
    if not _COMMIT.match(commit or ""):
        return None
    try:
        done = subprocess.run(["git", "show", "-s", "--format=%cI", commit], cwd=cwd, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_time(done.stdout)


@dataclass(frozen=True)
class HistoryRun:
    """One complete run, with the time it is ordered by and where that time came from."""

    run_id: str
    commit: str  # "" when the run recorded none
    dirty: bool
    started_at: datetime
    committed_at: datetime | None
    source: TimeSource

    @property
    def order_time(self) -> datetime:
        return self.committed_at or self.started_at

    @property
    def short_commit(self) -> str:
        """Seven characters of the commit, "+" when the tree had uncommitted changes (as ``aebench list``)."""
        return (self.commit[:7] or "?") + ("+" if self.dirty else "")


def _history_run(record: Mapping, lookup: Callable[[str], datetime | None]) -> HistoryRun:
    commit = str(record.get("git_commit") or "")
    started = _parse_time(record.get("started_at")) or datetime.min.replace(tzinfo=timezone.utc)
    committed = _parse_time((record.get("environment") or {}).get("git_commit_date"))
    source: TimeSource = "environment"
    if committed is None and commit:
        committed, source = lookup(commit), "git"
    if committed is None:
        source = "start time"
    return HistoryRun(str(record["run_id"]), commit, bool(record.get("git_dirty")), started, committed, source)


@dataclass(frozen=True)
class History:
    """The runs of one machine and matrix in commit order, and each metric's figures as a table: one row per run
    (position in ``runs``), one column per cell key, NaN where a run lacks the figure."""

    store_location: str
    machine_id: str
    matrix_name: str
    runs: tuple[HistoryRun, ...]
    margins: Mapping[str, float]  # the metrics judged, in registry order, with their margins
    figures: Mapping[str, pd.DataFrame]
    # runs of this machine and matrix left out, their settings not the newest run's: 'RUN (epochs: 3 -> 10)'
    left_out: tuple[str, ...] = ()
    elsewhere: int = 0  # cells of these runs that another machine timed (a cluster's nodes), left out

    @property
    def metrics(self) -> list[str]:
        return list(self.margins)


def judged_by_ratio(metric: str) -> bool:
    """Whether ``metric`` changes by ratios (aebench.metrics.Metric.judged_by_ratio)."""
    return REGISTRY[metric].judged_by_ratio


def resolve_margins(metrics: Sequence[str] | None, margin_options: Sequence[str] = ()) -> dict[str, float]:
    """The metrics to judge (default: the gated ones) with their margins: the registry's, ``--margin NAME:VALUE``
    options, and 0 for a chosen metric the registry gives none (any significant change counts)."""
    defaults = REGISTRY.margins()
    chosen = list(dict.fromkeys(metrics)) if metrics else list(defaults)
    for name in chosen:
        entry = REGISTRY.find(name)
        if entry is None or entry.better is None or name == entry.name and entry.is_family:
            directed = ", ".join(metric.name for metric in REGISTRY if metric.better and not metric.is_family)
            raise UserError(f"--metric {name!r} is not a metric with a better direction: allowed {directed} "
                            "(`aebench metrics` describes them)")
    margins = with_margin_options(margin_options, {name: defaults.get(name, 0.0) for name in chosen})
    return {name: margins[name] for name in REGISTRY.sort_columns(margins)}


def _choose(runs: pd.DataFrame, column: str, wanted: str | None, option: str, store: Store) -> str:
    values = runs[column].fillna("").astype(str)
    if wanted is None:
        return values.iloc[-1]  # the newest complete run's
    if wanted not in set(values):
        allowed = ", ".join(sorted(set(values))) or "none"
        raise UserError(f"{option} {wanted!r} has no complete run in {store.location}: allowed {allowed}")
    return wanted


def load_history(store: Store, *, machine: str | None = None, matrix: str | None = None,
                 margins: Mapping[str, float] | None = None,
                 commit_date: Callable[[str], datetime | None] = git_commit_date) -> History:
    """Every complete run of one machine and one matrix (default: the newest complete run's) in commit order, and
    their ok cells' figures of the metrics in ``margins`` (default: the gated metrics)."""
    margins = dict(margins if margins is not None else resolve_margins(None))
    runs = store.runs_frame()
    runs = runs[runs["status"] == "complete"]
    if runs.empty:
        raise UserError(f"the store {store.location} holds no complete run: run 'aebench run' first")
    if machine is None and matrix is not None:
        matrix = _choose(runs, "matrix_name", matrix, "--matrix", store)
        machine = _choose(runs[runs["matrix_name"] == matrix], "machine_id", None, "--machine", store)
    machine = _choose(runs, "machine_id", machine, "--machine", store)
    runs = runs[runs["machine_id"].fillna("").astype(str) == machine]
    matrix = _choose(runs, "matrix_name", matrix, "--matrix", store)
    runs = runs[runs["matrix_name"] == matrix]
    records = {run_id: store.run_record(run_id) for run_id in runs["run_id"]}
    # One series measures one thing: runs of this matrix name with other settings (a --set epochs=3 run beside the
    # profile's own) are left out, and named, rather than read as a change point at their commit.
    newest = records[runs["run_id"].iloc[-1]]
    same, other = split_by_settings(records, newest)
    left_out = tuple(f"{run_id} ({'; '.join(settings_differences([records[run_id]], [newest]))})" for run_id in other)
    records = {run_id: records[run_id] for run_id in same}

    dates: dict[str, datetime | None] = {}

    def cached(commit: str) -> datetime | None:
        if commit not in dates:
            dates[commit] = commit_date(commit)
        return dates[commit]

    ordered = sorted((_history_run(record, cached) for record in records.values()),
                     key=lambda run: (run.order_time, run.started_at, run.run_id))
    position = {run.run_id: index for index, run in enumerate(ordered)}
    frame = without_contaminated_speed(store.frame([run.run_id for run in ordered]))
    frame = frame[frame["status"] == "ok"] if not frame.empty else frame
    elsewhere = 0
    if not frame.empty:  # a cluster run's cells timed on other nodes: their figures are those machines'
        here = timed_on(frame).astype(str) == machine
        elsewhere, frame = int((~here).sum()), frame[here]
    figures = {}
    for metric in margins:
        if frame.empty or metric not in frame.columns:
            continue
        values = pd.DataFrame({"position": frame["run_id"].map(position), "key": frame["key"],
                               "value": pd.to_numeric(frame[metric], errors="coerce")})
        if judged_by_ratio(metric):
            values.loc[~(values["value"] > 0), "value"] = np.nan  # a ratio needs positive figures
        values = values.dropna(subset=["value"])
        if values.empty:
            continue
        table = values.pivot_table(index="position", columns="key", values="value", aggfunc="mean")
        figures[metric] = table.reindex(range(len(ordered)))
    return History(store.location, machine, matrix, tuple(ordered), margins, figures, left_out, elsewhere)


# -- change points of one series ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Two adjacent segments compared. ``change``: percent for figures judged by ratio (the figure's own direction:
    +20% latency is slower), the metric's unit for quality. ``excess``: how far the change clears the margin (in log
    units or the metric's unit), which ranks candidates that fail."""

    before: float  # the earlier segment's centre: geometric mean for ratio figures, mean for quality
    after: float
    change: float
    excess: float
    # Welch's one-sided p on logs that the change is no larger than the margin; None for quality (compared exactly)
    p_value: float | None
    verdict: stats.Verdict

    @property
    def kept(self) -> bool:
        return self.verdict in ("regression", "improvement")


def judge(before: np.ndarray, after: np.ndarray, metric: str, margin: float) -> Judgement:
    """Is the step from ``before`` to ``after`` (figures in time order) a kept change point of ``metric``?"""
    higher_is_better = REGISTRY[metric].better == "higher"
    if judged_by_ratio(metric):
        # aebench.stats' run-level Welch comparison (as compare's): one-sided tests against the margin
        comparison = stats.compare_runs("", metric, before, after, higher_is_better=higher_is_better, margin_pct=margin)
        gain = comparison.gain.estimate  # mean log figure after - before, positive = better
        p_value = comparison.p_improvement if gain > 0 else comparison.p_regression
        excess = abs(gain) - comparison.margin_log
        verdict: stats.Verdict = "same"
        if p_value <= MAX_P_VALUE:  # significant against the margin: the estimate is beyond it too
            verdict = "improvement" if gain > 0 else "regression"
        return Judgement(float(np.exp(np.log(before).mean())), float(np.exp(np.log(after).mean())),
                         comparison.change_pct, excess, p_value, verdict)
    exact = stats.quality_verdict("", metric, float(before.mean()), float(after.mean()),
                                  higher_is_better=higher_is_better, margin=margin)
    return Judgement(exact.base, exact.candidate, exact.difference, abs(exact.difference) - margin, None,
                     exact.verdict)


def candidates(signal: np.ndarray, min_segment: int, margin_amount: float) -> list[int]:
    """Pelt's change points of ``signal`` (indices where a new segment starts), before any test."""
    n = len(signal)
    if n < 2 * min_segment:
        return []
    noise = stats.successive_difference_sd(signal, log=False) or 0.0  # the signal is already on its scale
    penalty = max(2 * noise**2 * math.log(n), (margin_amount / 2) ** 2, 1e-12)
    breaks = ruptures.Pelt(model="l2", min_size=min_segment, jump=1).fit(signal).predict(pen=penalty)
    return [int(index) for index in breaks[:-1]]


def series_change_points(values: Sequence[float] | np.ndarray, metric: str, margin: float,
                         min_segment: int = MIN_SEGMENT) -> list[tuple[int, Judgement]]:
    """The kept change points of one series (finite figures in time order): (index where the new segment starts,
    judgement against the segment before). Candidates that fail are dropped weakest first (highest p, then smallest
    excess over the margin) and their neighbours re-judged, as Apache Otava's merge step does."""
    values = np.asarray(values, dtype=np.float64)
    ratio = judged_by_ratio(metric)
    signal = np.log(values) if ratio else values
    found = candidates(signal, min_segment, math.log1p(margin / 100) if ratio else margin)
    while found:
        bounds = [0, *found, len(values)]
        judged = [judge(values[bounds[i]:bounds[i + 1]], values[bounds[i + 1]:bounds[i + 2]], metric, margin)
                  for i in range(len(found))]
        failing = [i for i, judgement in enumerate(judged) if not judgement.kept]
        if not failing:
            return list(zip(found, judged))
        weakest = max(failing, key=lambda i: (judged[i].p_value or 0.0, -judged[i].excess))
        del found[weakest]
    return []


# -- change points of a history ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangePoint:
    """A kept change point: the cell and metric, and the run (and its commit) where the new segment starts."""

    key: str
    metric: str
    position: int  # in History.runs
    run: HistoryRun
    judgement: Judgement

    @property
    def verdict(self) -> stats.Verdict:
        return self.judgement.verdict

    @property
    def change_text(self) -> str:
        if judged_by_ratio(self.metric):
            return f"{self.judgement.change:+.1f}%"
        unit = REGISTRY[self.metric].unit
        return f"{self.judgement.change:+.4g}" + (f" {unit}" if unit else "")

    @property
    def p_text(self) -> str:
        return "exact" if self.judgement.p_value is None else f"{self.judgement.p_value:.2g}"


@dataclass(frozen=True)
class Analysis:
    history: History
    min_segment: int
    change_points: tuple[ChangePoint, ...]
    series: int  # how many (cell, metric) series were searched

    def newest_regressions(self) -> list[ChangePoint]:
        """The series whose newest segment is a regression: their last kept change point is one (a later
        improvement would have been their last)."""
        last: dict[tuple[str, str], ChangePoint] = {}
        for point in self.change_points:
            last[(point.key, point.metric)] = point  # change points are in run order within a series
        return [point for point in last.values() if point.verdict == "regression"]


def analyse(history: History, min_segment: int = MIN_SEGMENT) -> Analysis:
    """Every kept change point of every cell and metric of ``history``."""
    if min_segment < 2:
        raise UserError(f"--min-segment {min_segment} is invalid: allowed an integer >= 2 (Welch's test needs two "
                        "runs on each side)")
    if len(history.runs) < 2 * min_segment:
        raise UserError(f"machine {history.machine_id!r}, matrix {history.matrix_name!r} has {len(history.runs)} "
                        f"complete runs in {history.store_location}: change points need at least {2 * min_segment} "
                        f"(2 x --min-segment {min_segment})")
    found: list[ChangePoint] = []
    series = 0
    for metric, table in history.figures.items():
        for key in table.columns:
            column = table[key].dropna()
            series += 1
            for index, judgement in series_change_points(column.to_numpy(), metric, history.margins[metric],
                                                         min_segment):
                position = int(column.index[index])
                found.append(ChangePoint(str(key), metric, position, history.runs[position], judgement))
    order = {metric: index for index, metric in enumerate(history.metrics)}
    found.sort(key=lambda point: (point.position, point.key, order[point.metric]))  # commit order, then cell
    return Analysis(history, min_segment, tuple(found), series)


# -- terminal output ---------------------------------------------------------------------------------------------------


METHOD = ("ruptures Pelt (l2 cost) on log speed and raw quality figures, minimum segment {min_segment} runs; kept "
          f"when Welch's t on log figures gives p <= {MAX_P_VALUE:g} that the change is no larger than the metric's "
          "margin (speed), or when the segments differ by more than the margin (quality, exact)")


def _sources(runs: Iterable[HistoryRun]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.source] = counts.get(run.source, 0) + 1
    return ", ".join(f"{count} from {source}" for source, count in counts.items())


def change_point_table(points: Sequence[ChangePoint]) -> pd.DataFrame:
    return pd.DataFrame({
        "cell": [point.key for point in points],
        "metric": [REGISTRY.label(point.metric) for point in points],
        "commit": [point.run.short_commit for point in points],
        "run": [point.run.run_id for point in points],
        "figures": [f"{REGISTRY.format(point.metric, point.judgement.before)} -> "
                    f"{REGISTRY.format(point.metric, point.judgement.after)}" for point in points],
        "change": [point.change_text for point in points],
        "verdict": [point.verdict for point in points],
        "p": [point.p_text for point in points],
    })


def newest_segment_line(analysis: Analysis) -> str:
    regressions = analysis.newest_regressions()
    if not regressions:
        return f"newest segment: no regression in {analysis.series} series"
    named = ", ".join(f"{point.key} {REGISTRY.label(point.metric)} since {point.run.short_commit}"
                      for point in regressions)
    return f"newest segment: regression in {len(regressions)} of {analysis.series} series ({named})"


def format_text(analysis: Analysis) -> str:
    history = analysis.history
    commits = len({run.commit for run in history.runs})
    lines = [f"history of machine {history.machine_id}, matrix {history.matrix_name}: {len(history.runs)} complete "
             f"runs of {commits} commits, ordered by commit date ({_sources(history.runs)})",
             "change points: " + METHOD.format(min_segment=analysis.min_segment)]
    missing = [metric for metric in history.metrics if metric not in history.figures]
    if missing:
        lines.append(f"not recorded by these runs: {', '.join(missing)}")
    if history.elsewhere:
        lines.append(f"left out: {history.elsewhere} cells of these runs timed on other machines (cluster nodes)")
    if history.left_out:
        lines.append("left out, settings differ from the newest run's (theirs -> newest): "
                     + "; ".join(history.left_out))
    lines.append("")
    if analysis.change_points:
        lines.append(change_point_table(analysis.change_points).to_string(index=False))
    else:
        lines.append("no change points")
    lines.append("")
    lines.append(newest_segment_line(analysis))
    return "\n".join(lines)


# -- Apache Otava's CSV ------------------------------------------------------------------------------------------------


OTAVA_ATTRIBUTES = ("commit", "run_id")


def otava_column(key: str, metric: str) -> str:
    """One series' column: the cell key (slash-separated, seed last), a slash, the metric (which has no slash), so
    ``column.rsplit("/", 1)`` gives both back."""
    return f"{key}/{metric}"


def otava_csv(history: History) -> tuple[str, list[str]]:
    """The history as Apache Otava's CSV import reads it (a ``time`` column, the attribute columns, one column per
    series), one row per run in commit order; and the series left out because a run lacks them: Otava's CSV import
    reads every value as a number, so a gap would stop it."""
    columns: dict[str, list[float]] = {}
    left_out = []
    for metric, table in history.figures.items():
        for key in table.columns:
            name = otava_column(str(key), metric)
            if table[key].isna().any():
                left_out.append(name)
            else:
                columns[name] = [float(value) for value in table[key]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["time", *OTAVA_ATTRIBUTES, *columns])
    for position, run in enumerate(history.runs):
        writer.writerow([run.order_time.isoformat(), run.commit, run.run_id,
                         *(repr(values[position]) for values in columns.values())])
    return buffer.getvalue(), left_out


# -- the HTML page -----------------------------------------------------------------------------------------------------


def _plot_lines(table: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """One line per cell while they are few; else one per cell group (seeds together), or per variant when even the
    groups are many, each the median over its cells of the figure against that cell's own median."""
    heading = REGISTRY[metric].heading(REGISTRY.label(metric))
    if len(table.columns) <= MAX_PLOT_LINES:
        return table, heading
    ratio = judged_by_ratio(metric)
    relative = table / table.median() * 100 if ratio else table - table.median()
    groups = [Cell.group_key(key) for key in table.columns]
    if len(set(groups)) > MAX_PLOT_LINES:
        groups = [key.split("/", 1)[0] for key in table.columns]  # the variant
    lines = relative.T.groupby(groups, sort=False).median().T
    unit = REGISTRY[metric].unit
    label = (f"{REGISTRY.label(metric)}: % of each cell's median" if ratio
             else f"{REGISTRY.label(metric)} - each cell's median" + (f" ({unit})" if unit else ""))
    return lines, label


def _figure(analysis: Analysis, metric: str) -> Markup:
    history = analysis.history
    lines, ylabel = _plot_lines(history.figures[metric], metric)
    changes = {}
    for point in analysis.change_points:
        if point.metric == metric:
            # one line per run, marked a regression when any cell's change there is one
            if changes.get(point.position, ("", ""))[1] != "regression":
                changes[point.position] = (point.run.short_commit, point.verdict)
    figure = plots.history_figure(lines, [run.short_commit for run in history.runs],
                                  [(position, *mark) for position, mark in sorted(changes.items())],
                                  ylabel, f"{REGISTRY.label(metric)} ({metric})")
    return Markup(plots.img_tag(figure, f"{REGISTRY.label(metric)} over {len(history.runs)} runs in commit order"))


def build_page(analysis: Analysis) -> str:
    """The history page: the header, the change-point table with the newest segment's verdict, one small figure per
    metric. Self-contained (inline CSS, PNG data URIs) and escaped, as the run report."""
    from aebench.report.page import Section, render, render_document
    from aebench.report.table import key_value_table, styled_table

    history = analysis.history
    first, last = history.runs[0], history.runs[-1]
    header = key_value_table({
        "store": str(history.store_location),
        "machine id": history.machine_id,
        "matrix": history.matrix_name,
        "runs": f"{len(history.runs)} complete runs of {len({run.commit for run in history.runs})} commits, "
                f"{first.short_commit} ({first.order_time:%Y-%m-%d}) to {last.short_commit} "
                f"({last.order_time:%Y-%m-%d})",
        "ordered by": f"commit date ({_sources(history.runs)}); runs of one commit by start time",
        "metrics": ", ".join(f"{metric} (margin {history.margins[metric]:g}{'%' if judged_by_ratio(metric) else ''})"
                             for metric in history.metrics),
        "method": METHOD.format(min_segment=analysis.min_segment),
        **({"left out": f"{len(history.left_out)} runs whose settings differ from the newest run's (theirs -> newest): "
                        + "; ".join(history.left_out)} if history.left_out else {}),
        **({"timed elsewhere": f"{history.elsewhere} cells of these runs timed on other machines (cluster nodes), left "
                               "out"} if history.elsewhere else {}),
    }, "history")
    table = change_point_table(analysis.change_points)
    classes = pd.DataFrame("", index=table.index, columns=table.columns)
    classes["verdict"] = table["verdict"].map({"regression": "status-failed", "improvement": "status-ok"}).fillna("")
    changes = render("sections/history_changes.html",
                     table=styled_table(table, {}, "changes", classes=classes) if len(table) else None,
                     verdict=newest_segment_line(analysis), regression=bool(analysis.newest_regressions()))
    figures = render("sections/history_figures.html", figures=[
        (REGISTRY[metric].heading(REGISTRY.label(metric)),
         _figure(analysis, metric) if metric in history.figures else None) for metric in history.metrics])
    title = f"aebench history: {history.matrix_name} on machine {history.machine_id}"
    return render_document(title, header, [(Section("changes", "Change points"), changes),
                                           (Section("figures", "Figures"), figures)])


def write_page(analysis: Analysis, path: Path = DEFAULT_OUT) -> Path:
    """Write the history page to ``path`` atomically; return the path."""
    atomic.write_text(path, build_page(analysis))
    return Path(path)
