"""One run of a matrix, from its record in the store to its summary: what ``aebench run`` does once its input has
been checked and the machine lock taken.

The cells run here (aebench.runner) or on a Dask cluster (aebench.cluster). Either way each result is stored as it
comes (marked contaminated when the machine lock says so), the run's status and summary are recorded whatever stops
it, the report is written, and the trained weights the thread counts shared are removed once nothing is left to
resume.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench import session
from aebench.config import Cell, Matrix
from aebench.errors import CannotWrite
from aebench.results import CellResult
from aebench.store import open_store
from aebench.summary import format_summary

if TYPE_CHECKING:
    from aebench.machinelock import MachineLock
    from aebench.runner import SkipCheck


@dataclass(frozen=True)
class SweepOptions:
    """What ``aebench run`` was asked for, beyond the matrix and its cells."""

    store: str | Path
    argv: Sequence[str]
    reports_dir: Path | None  # None: no report (--no-report)
    resume: str | None = None  # a run id, a prefix or 'latest'
    retry_failed: bool = False
    wait_idle_s: float | None = None
    pack: bool = False  # cluster only: a node runs several CPU cells on disjoint cores


def run_sweep(options: SweepOptions, matrix: Matrix, cells: Sequence[Cell], data_path: Path, lock: MachineLock, *,
              skip_check: SkipCheck | None = None, client: Any = None) -> int:
    """Run ``cells`` (on ``client``'s cluster when given) into a new run of the store, or into the resumed one;
    returns how many of the run's cells failed or timed out, a resumed run's earlier ones included."""
    wall_start = time.monotonic()
    with open_store(options.store, create=options.resume is None) as store:
        with store.writing():
            run = session.start(store, matrix, cells, options.argv, options.resume, options.retry_failed)
        run_id = run.run_id
        run_folder = store.local_folder / "checkpoints" / run_id  # its checkpoints and each model's shared weights
        lock.name_run(run_id)
        retried = set(run.retried)

        def store_result(result: CellResult) -> None:
            result = lock.mark(result)
            with store.writing(run_id):
                if result.cell.key in retried:
                    store.replace_failed_result(run_id, result)
                else:
                    store.add_result(run_id, result)

        if run.resumed:
            again = f" ({len(run.retried)} failed, again)" if run.retried else ""
            print(f"aebench: resuming run {run_id}: {run.stored_cells} cells stored, {len(run.cells)} to run{again}",
                  file=sys.stderr)
        print(f"aebench: run {run_id}: {len(run.cells)} cells of matrix {matrix.name!r} -> {store.location}",
              file=sys.stderr)

        def finish(status: str) -> dict[str, Any]:
            """The run's record over every invocation, this one's wall time counted up to now."""
            this_wall_s = time.monotonic() - wall_start
            return session.finish(store, run_id, status, stored, run.prior_wall_s + this_wall_s, prepared,
                                  run.invocations(this_wall_s, status))

        status = "interrupted"
        prepared: list[dict[str, Any]] = []
        stopped_by: BaseException | None = None
        try:
            trained_before = session.stored_training(store, run_id) if run.resumed else None
            with session.Heartbeat(store, run_id):
                if client is not None:
                    from aebench import cluster

                    cluster.run_cells(matrix, run.cells, client=client, data_path=data_path, on_result=store_result,
                                      weights_root=run_folder / "weights", cache_dir=store.local_folder / "cache",
                                      trained_before=trained_before, pack=options.pack, on_prepared=prepared.append)
                else:
                    from aebench import runner

                    runner.run_cells(matrix, run.cells, data_path=data_path, skip_check=skip_check,
                                     on_result=store_result, checkpoint_root=run_folder if matrix.checkpoint else None,
                                     cache_dir=store.local_folder / "cache", on_prepared=prepared.append,
                                     wait_idle_s=options.wait_idle_s, weights_root=run_folder / "weights",
                                     trained_before=trained_before)
            status = "complete"
        except BaseException as error:
            stopped_by = error
            raise
        finally:
            try:
                with store.writing(run_id):
                    stored = store.results(run_id, with_artifacts=False)  # every cell of the run, a resumed part's too
                    summary = finish(status)
            except CannotWrite:
                if stopped_by is None:
                    raise
                # The store refuses the run's status too: the error already on its way says what happened.
        report_path = None
        if options.reports_dir is not None:
            from aebench.report import write_report

            try:
                report_path = write_report(store, run_id, options.reports_dir)
            except OSError as error:
                raise CannotWrite(f"the report cannot be written in {options.reports_dir} ({error.strerror or error}): "
                                  f"the results are stored; `aebench report {run_id}` writes it later") from error
            with store.writing(run_id):
                summary = finish(status)  # the report's time too
        print(format_summary(run_id, summary, report_path), file=sys.stderr)
        failed = sum(r.status in ("failed", "timeout") for r in stored)  # every cell of the run, a resumed one's too
        if status == "complete" and not failed:
            # Nothing left to resume or retry: the trained weights the thread counts shared have served.
            shutil.rmtree(run_folder / "weights", ignore_errors=True)
            with suppress(OSError):
                run_folder.rmdir()  # when nothing else (a checkpoint) is left in it
        return failed
