"""A run's record in the store: begun, or resumed with the cells it still lacks, and finished with its summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aebench import machine
from aebench.config import Cell, Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import Store
from aebench.summary import summarize


@dataclass(frozen=True)
class RunStart:
    """A run ready to go: its id, the cells still to run and, for a resumed run, what its earlier parts left."""

    run_id: str
    cells: list[Cell]
    resumed: bool = False
    stored_cells: int = 0  # cells the earlier parts already stored (and keeps)
    prior_wall_s: float = 0.0  # wall time of the earlier parts
    retried: tuple[str, ...] = ()  # keys of failed or timed-out cells run again (--retry-failed)


def start(store: Store, matrix: Matrix, cells: Sequence[Cell], argv: Sequence[str], resume: str | None,
          retry_failed: bool = False) -> RunStart:
    """Begin a new run, or continue ``resume`` (a run id, a unique prefix or 'latest'): the cells it stored are kept,
    except, with ``retry_failed``, the failed and timed-out ones, which run again."""
    if resume is None:
        return RunStart(store.begin_run(matrix, machine.collect_environment(), argv), list(cells))
    run_id = store.resolve_run(resume)
    record = store.run_record(run_id)
    check_resumable(record, matrix, retry_failed)
    stored = store.results(run_id, with_artifacts=False)
    retried = tuple(r.cell.key for r in stored if retry_failed and r.status in ("failed", "timeout"))
    done = {r.cell.key for r in stored} - set(retried)
    remaining = [cell for cell in cells if cell.key not in done]
    return RunStart(run_id, remaining, resumed=True, stored_cells=len(cells) - len(remaining),
                    prior_wall_s=record["wall_s"] or 0.0, retried=retried)


def check_resumable(record: Mapping[str, Any], matrix: Matrix, retry_failed: bool = False) -> None:
    """Refuse to resume a run that is complete (resuming would rewrite its record) unless its failed cells are to be
    retried, or one with a matrix other than the one it was made with."""
    if record["status"] == "complete" and not retry_failed:
        raise UserError(f"run {record['run_id']} is complete: allowed --resume of a run that did not finish "
                        "(interrupted, running or abandoned), or --retry-failed; start a new run instead")
    if record["matrix"] != json.loads(json.dumps(matrix.to_dict())):
        raise UserError(
            f"run {record['run_id']} was made with a different matrix than {matrix.name!r} with these --set values: "
            f"resume it with the same matrix file and --set options ({' '.join(record['argv'][1:])})"
        )


def finish(store: Store, run_id: str, status: str, results: Sequence[CellResult], wall_s: float,
           prepared: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Record the run's status and the summary of ``results`` (every cell it stored); returns the summary."""
    summary = summarize(results, wall_s, prepared)
    store.finish_run(run_id, status, summary["wall_s"], summary)
    return summary
