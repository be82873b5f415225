"""Where a run's wall time went: measured speed, quality evaluation, reference classifiers and harness overhead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aebench.results import STATUSES


def summarize(results: Sequence[Any], wall_s: float, prepared: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's cell counts and its wall time in four parts that add up to the wall:

    - measured speed: the training runs (once per model, their evaluations and checkpoint saves excluded), the timed
      training steps and the timed inference loops (the speed columns);
    - quality evaluation: the training runs' time-to-quality evaluations, test-set scoring, classifier accuracy,
      latent probe, diagnostics and the robustness sweep (the quality columns: measurements the product exists for,
      so not counted as overhead);
    - reference classifiers: their one-time training (cached, so a later run only loads them);
    - harness overhead: everything else (process start, imports, data, model build, checkpoint saves, store, report),
      the part that measures nothing. ``overhead_pct`` is its share of the wall; ``overhead_with_quality_pct`` also
      counts the quality evaluation, for readers who count every second that is not a speed figure.

    ``prepared`` holds one record per reference classifier, with the ``seconds`` it took.

    When cells ran side by side (``cells_overlapped``), the parts are seconds summed over cells, which can exceed the
    wall: no overhead is derived from them (``overhead_s`` and its shares are None, ``side_by_side`` true).
    """
    ok = [r for r in results if r.status == "ok"]

    def total(key: str) -> float:
        return sum(r.metrics.get(key) or 0.0 for r in ok)

    validation = total("timing.validation_s")  # inside timing.train_s, but quality work
    checkpoints = total("timing.checkpoint_s")  # inside timing.train_s, but the harness's work
    measured = (total("timing.train_s") - validation - checkpoints + total("timing.train_timing_s")
                + total("timing.speed_s"))
    classifier = sum(info["seconds"] for info in prepared)
    quality = validation + total("timing.eval_s") + total("timing.accuracy_s")
    side_by_side = cells_overlapped(results)
    overhead = None if side_by_side else wall_s - measured - quality - classifier
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}

    def share(seconds: float) -> float:
        return round(100 * seconds / wall_s, 1) if wall_s > 0 else 0.0

    return {
        "wall_s": round(wall_s, 2),
        "measured_s": round(measured, 2),
        "quality_eval_s": round(quality, 2),
        "classifier_s": round(classifier, 2),
        "overhead_s": None if overhead is None else round(overhead, 2),
        "overhead_pct": None if overhead is None else share(overhead),
        "overhead_with_quality_pct": None if overhead is None else share(overhead + quality),
        "side_by_side": side_by_side,
        **{f"cells_{status}": count for status, count in counts.items()},
    }


def cells_overlapped(results: Sequence[Any]) -> bool:
    """Whether some of the run's cells ran at the same time, from what they stored: one packed on a cluster node
    beside others (``info.packed``), or cluster cells on several machines (one machine's nodes take turns on its
    machine lock). Every invocation's cells count: a run resumed locally after a cluster part still overlapped."""
    clustered = [r for r in results if r.info.get("cluster_worker") is not None]
    machines = {r.info.get("machine_id") for r in clustered if r.info.get("machine_id")}
    return any(r.info.get("packed") for r in clustered) or len(machines) > 1


def format_summary(run_id: str, summary: Mapping[str, Any], report_path: Path | None) -> str:
    """The closing lines of ``aebench run``: cell counts, the wall-time split and where the report is."""
    wall = summary["wall_s"]

    side_by_side = summary.get("overhead_s") is None  # their seconds add up past the wall: no shares of it
    shares = wall > 0 and not side_by_side

    def part(seconds: float) -> str:
        return f"{seconds:.1f} s ({100 * seconds / wall:.1f}%)" if shares else f"{seconds:.1f} s"

    parts = (f"measured speed (training runs, timed steps and loops) {part(summary['measured_s'])}, "
             f"quality evaluation (validation, scoring, classifier, probe, robustness) {part(summary['quality_eval_s'])}, "
             f"reference classifier (one-time, cached) {part(summary['classifier_s'])}")
    counts = (f"aebench: run {run_id}: {summary['cells_ok']} ok, {summary['cells_failed']} failed, "
              f"{summary['cells_timeout']} timed out, {summary['cells_skipped']} skipped in {wall:.1f} s\n")
    if side_by_side:
        text = counts + f"aebench: cell time, summed over cells that ran side by side (not shares of the wall): {parts}"
    else:
        text = counts + (f"aebench: wall time: {parts}, harness overhead (process start, imports, data, model build, "
                         f"checkpoint saves, store, report) {part(summary['overhead_s'])}")
    if report_path is not None:
        text += f"\naebench: report {report_path}"
    return text
