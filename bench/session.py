"""A run's record in the store: begun, or resumed with the cells it still lacks, and finished with its summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aebench import machine
from aebench.config import Cell, Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import HEARTBEAT_S, Store, utc_now
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
    started_at: str = ""  # when this invocation began (the store's clock)
    prior_invocations: tuple[Mapping[str, Any], ...] = ()  # the earlier parts: started_at, wall_s, status

    def invocations(self, wall_s: float, status: str) -> list[dict[str, Any]]:
        """Every invocation of the run with its own wall time, this one last."""
        return [*map(dict, self.prior_invocations), {"started_at": self.started_at, "wall_s": round(wall_s, 2),
                                                     "status": status}]


def start(store: Store, matrix: Matrix, cells: Sequence[Cell], argv: Sequence[str], resume: str | None,
          retry_failed: bool = False) -> RunStart:
    """Begin a new run, or continue ``resume`` (a run id, a unique prefix or 'latest'): the cells it stored are kept,
    except, with ``retry_failed``, the failed and timed-out ones, which run again."""
    if resume is None:
        started_at = utc_now()
        run_id = store.begin_run(matrix, machine.collect_environment(), argv, started_at=started_at)
        return RunStart(run_id, list(cells), started_at=started_at)
    run_id = store.resolve_run(resume)
    record = store.run_record(run_id)
    check_resumable(record, matrix, retry_failed)
    stored = store.results(run_id, with_artifacts=False)
    retried = tuple(r.cell.key for r in stored if retry_failed and r.status in ("failed", "timeout"))
    done = {r.cell.key for r in stored} - set(retried)
    remaining = [cell for cell in cells if cell.key not in done]
    if record["status"] == "complete" and not remaining:
        raise UserError(f"run {run_id} is complete and has no failed or timed-out cell: nothing to retry")
    prior = list(record["summary"].get("invocations") or [])
    if not prior and record["wall_s"] is not None:  # a run stored before invocations were recorded one by one
        prior = [{"started_at": record["started_at"], "wall_s": record["wall_s"], "status": record["status"]}]
    prior_wall_s = record["wall_s"] or 0.0
    if record["status"] in ("abandoned", "running"):  # its last invocation died without recording its wall time
        lost = store.abandoned_wall_s(record)
        prior.append({"started_at": record.get("invocation_started_at") or record["started_at"],
                      "wall_s": round(lost, 2), "status": "abandoned"})
        prior_wall_s += lost
    started_at = store.claim_run(record)
    return RunStart(run_id, remaining, resumed=True, stored_cells=len(cells) - len(remaining),
                    prior_wall_s=prior_wall_s, retried=retried, started_at=started_at,
                    prior_invocations=tuple(prior))


def stored_training(store: Store, run_id: str) -> dict[str, CellResult]:
    """The run's stored training results by quality key: what a resumed run's remaining thread counts share instead
    of training again."""
    return {result.cell.quality_key: result for result in store.results(run_id, with_artifacts=False)
            if result.trained_its_model}


def check_resumable(record: Mapping[str, Any], matrix: Matrix, retry_failed: bool = False) -> None:
    """Refuse to resume a run that is complete (resuming would rewrite its record) unless its failed cells are to be
    retried, or one with a matrix other than the one it was made with."""
    if record["status"] == "running" and record.get("host"):
        raise UserError(f"run {record['run_id']} is still running (pid {record['pid']} on {record['host']}): allowed "
                        "--resume of a run whose runner is gone (abandoned) or that stopped (interrupted)")
    if record["status"] == "complete" and not retry_failed:
        raise UserError(f"run {record['run_id']} is complete: allowed --resume of a run that did not finish "
                        "(interrupted, running or abandoned), or --retry-failed; start a new run instead")
    if record["matrix"] != json.loads(json.dumps(matrix.to_dict())):
        raise UserError(
            f"run {record['run_id']} was made with a different matrix than {matrix.name!r} with these --set values: "
            f"resume it with the same matrix file and --set options ({' '.join(record['argv'][1:])})"
        )


def finish(store: Store, run_id: str, status: str, results: Sequence[CellResult], wall_s: float,
           prepared: Sequence[Mapping[str, Any]], invocations: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Record the run's status and the summary of ``results`` (every cell it stored) over ``wall_s`` (every
    invocation's); returns the summary, which lists the invocations with their own wall times."""
    summary = summarize(results, wall_s, prepared)
    if invocations:
        summary["invocations"] = [dict(invocation) for invocation in invocations]
    store.finish_run(run_id, status, summary["wall_s"], summary)
    return summary


class Heartbeat:
    """While a run runs, a thread stamps its ``heartbeat_at`` every ``HEARTBEAT_S`` seconds through a connection of
    its own, so that readers on other hosts can tell a live run from one whose runner died (aebench.store.run_status).
    """

    def __init__(self, store: Store, run_id: str, interval_s: float = HEARTBEAT_S) -> None:
        self._store, self._run_id, self._interval_s = store, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="aebench-heartbeat", daemon=True)

    def _beat(self) -> None:
        store: Store | None = None
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    store = store or self._store.reopen()
                    store.beat(self._run_id)
                except (self._store.Error, UserError):
                    # Busy past the timeout, or a server restarting (its connection is then gone for good): the
                    # next beat tries again on a fresh connection, so a live run never looks abandoned for long.
                    if store is not None:
                        store.close()
                    store = None
        finally:
            if store is not None:
                store.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
