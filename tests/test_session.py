"""A run's record: begun or resumed (fast, on a real SQLite store), and the summary of where its wall time went."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from aebench import session
from aebench.config import Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import open_store
from aebench.summary import format_summary, summarize
from support import tiny_matrix_dict

ENV = {"git_commit": "abc123", "git_dirty": False, "machine_id": "m1", "cpu_model": "Test CPU"}


def _timed(status: str, info: dict | None = None, **timing: float) -> SimpleNamespace:
    return SimpleNamespace(status=status, metrics={f"timing.{k}": v for k, v in timing.items()}, info=info or {})


def test_run_summary_parts_add_up_to_the_wall() -> None:
    # The training cell's run includes its 2 s of validation, which is quality work, and 3 s of checkpoint saves,
    # which are the harness's; the other cell only times.
    results = [_timed("ok", train_s=32.0, validation_s=2.0, checkpoint_s=3.0, train_timing_s=1.0, speed_s=9.0,
                      eval_s=4.0, accuracy_s=4.0),
               _timed("ok", train_timing_s=3.0, speed_s=25.0),
               _timed("failed", train_s=99.0)]  # a failed cell's partial timings are not measured work
    summary = summarize(results, wall_s=100.0, prepared=[{"seconds": 12.0}])
    assert summary["measured_s"] == 65.0
    assert summary["quality_eval_s"] == 10.0
    assert summary["classifier_s"] == 12.0
    assert summary["overhead_s"] == 13.0 and summary["overhead_pct"] == 13.0
    assert summary["overhead_with_quality_pct"] == 23.0
    assert (summary["cells_ok"], summary["cells_failed"]) == (2, 1)


def test_format_summary_names_each_part_with_its_share() -> None:
    summary = summarize([_timed("ok", train_s=30.0, speed_s=10.0, eval_s=5.0), _timed("skipped")], 100.0, [])
    lines = format_summary("r1", summary, Path("reports/r1/index.html")).splitlines()
    assert lines[0] == "aebench: run r1: 1 ok, 0 failed, 0 timed out, 1 skipped in 100.0 s"
    assert "measured speed (training runs, timed steps and loops) 40.0 s (40.0%)" in lines[1]
    assert ("harness overhead (process start, imports, data, model build, checkpoint saves, store, report) 55.0 s "
            "(55.0%)") in lines[1]
    assert lines[2] == "aebench: report reports/r1/index.html"
    assert len(format_summary("r1", summary, None).splitlines()) == 2


def test_cells_that_ran_side_by_side_give_cell_seconds_and_no_overhead() -> None:
    # Two nodes of a cluster, 60 s of measured work each, in 70 s of wall: the parts exceed the wall.
    nodes = [{"cluster_worker": f"tcp://{m}", "machine_id": m} for m in ("m1", "m2")]
    sequential = [_timed("ok", train_s=50.0, speed_s=10.0), _timed("ok", train_s=50.0, speed_s=10.0)]
    assert summarize(sequential, 70.0, [])["overhead_s"] == -50.0  # what the sequential arithmetic would claim
    summary = summarize([_timed("ok", node, train_s=50.0, speed_s=10.0) for node in nodes], 70.0, [])
    assert summary["measured_s"] == 120.0 and summary["overhead_s"] is None and summary["overhead_pct"] is None
    text = format_summary("r1", summary, None)
    assert "summed over cells that ran side by side" in text and "%" not in text and "overhead" not in text


def test_cells_overlapped_only_when_packed_or_on_several_machines() -> None:
    from aebench.summary import cells_overlapped

    def cell(**info: object) -> SimpleNamespace:
        return SimpleNamespace(status="ok", metrics={}, info=info)

    one_machine = [cell(cluster_worker="tcp://a", machine_id="m1"), cell(cluster_worker="tcp://b", machine_id="m1")]
    assert not cells_overlapped(one_machine)  # its nodes take turns on the machine lock
    assert cells_overlapped([*one_machine, cell(cluster_worker="tcp://c", machine_id="m2")])
    assert cells_overlapped([cell(cluster_worker="tcp://a", machine_id="m1", packed="--pack: ...")])
    assert not cells_overlapped([cell(machine_id="m1"), cell(machine_id="m2")])  # local cells ran one at a time


def _interrupted_run(path: Path, matrix: Matrix) -> str:
    """A run that stored its first cell and was stopped after 5 s."""
    with open_store(path) as store:
        run_id = store.begin_run(matrix, ENV, ["aebench", "run", "tiny.toml"])
        store.add_result(run_id, CellResult(cell=matrix.cells()[0], status="ok", duration_s=1.0))
        store.finish_run(run_id, "interrupted", 5.0, {})
    return run_id


def test_a_new_run_gets_every_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aebench.machine.collect_environment", lambda: ENV)
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(tmp_path / "s.sqlite") as store:
        run = session.start(store, matrix, matrix.cells(), ["aebench", "run"], resume=None)
        assert store.resolve_run(None) == run.run_id
    assert run.cells == matrix.cells() and not run.resumed and run.prior_wall_s == 0.0


def test_resume_runs_the_missing_cells_and_keeps_the_wall_time(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    run_id = _interrupted_run(tmp_path / "s.sqlite", matrix)
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        run = session.start(store, matrix, matrix.cells(), ["aebench", "run", "--resume"], resume="latest")
    assert run.run_id == run_id and run.resumed
    assert run.cells == matrix.cells()[1:] and run.stored_cells == 1 and run.prior_wall_s == 5.0


def test_resume_with_another_matrix_is_refused(tmp_path: Path) -> None:
    run_id = _interrupted_run(tmp_path / "s.sqlite", Matrix.from_dict(tiny_matrix_dict()))
    other = Matrix.from_dict(tiny_matrix_dict(epochs=3))
    with open_store(tmp_path / "s.sqlite", create=False) as store, \
            pytest.raises(UserError, match=f"run {run_id} was made with a different matrix .*tiny.toml"):
        session.start(store, other, other.cells(), [], resume=run_id[:12])


def test_resume_of_a_complete_run_is_refused(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    run_id = _interrupted_run(tmp_path / "s.sqlite", matrix)
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        session.finish(store, run_id, "complete", store.results(run_id, with_artifacts=False), 12.0, [])
        with pytest.raises(UserError, match=f"run {run_id} is complete: allowed --resume of a run that did not finish"):
            session.start(store, matrix, matrix.cells(), [], resume="latest")
        assert store.run_record(run_id)["wall_s"] == 12.0  # untouched


def test_retrying_a_complete_run_without_failures_is_refused(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
    run_id = _interrupted_run(tmp_path / "s.sqlite", matrix)  # its only cell is ok
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        store.finish_run(run_id, "complete", 5.0, {})
        with pytest.raises(UserError, match="is complete and has no failed or timed-out cell: nothing to retry"):
            session.start(store, matrix, matrix.cells(), [], resume=run_id, retry_failed=True)
        assert store.run_record(run_id)["wall_s"] == 5.0


def test_a_live_run_is_not_resumed(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = store.begin_run(matrix, ENV, ["aebench", "run"])  # its runner, this process, is alive
        with pytest.raises(UserError, match=f"run {run_id} is still running \\(pid {os.getpid()} on "):
            session.start(store, matrix, matrix.cells(), [], resume=run_id)


def test_an_abandoned_run_resumes_with_its_lost_wall_time_and_every_invocation(tmp_path: Path) -> None:
    """A runner killed with SIGKILL records nothing: the resumed run counts the dead invocation's wall time from its
    last sign of life, so the summary never credits cells without their time (a negative overhead)."""
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = store.begin_run(matrix, ENV, ["aebench", "run"])
        store.add_result(run_id, CellResult(cell=matrix.cells()[0], status="ok", duration_s=4.0,
                                            metrics={"timing.train_s": 3.0, "timing.speed_s": 0.5}))
        with store._transaction() as db:  # the runner started 7 s before its last heartbeat, then died
            db.execute("UPDATE runs SET pid = -1, invocation_started_at = '2026-11-27T12:00:00.000+00:00',"
                       " heartbeat_at = '2026-11-27T12:00:07.000+00:00' WHERE run_id = ?", (run_id,))
        assert store.run_record(run_id)["status"] == "abandoned"
        run = session.start(store, matrix, matrix.cells(), [], resume="latest")
        assert run.cells == matrix.cells()[1:] and run.prior_wall_s >= 7.0
        assert store.run_record(run_id)["status"] == "running" and store.run_record(run_id)["pid"] == os.getpid()
        summary = session.finish(store, run_id, "complete", store.results(run_id, with_artifacts=False),
                                 run.prior_wall_s + 2.0, [], run.invocations(2.0, "complete"))
    assert summary["overhead_s"] >= 0
    assert [(i["status"], i["wall_s"]) for i in summary["invocations"]][-1] == ("complete", 2.0)
    assert summary["invocations"][0]["status"] == "abandoned" and summary["invocations"][0]["wall_s"] >= 7.0


def test_finish_records_the_status_and_summary(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    run_id = _interrupted_run(tmp_path / "s.sqlite", matrix)
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        summary = session.finish(store, run_id, "complete", store.results(run_id, with_artifacts=False), 12.0, [])
        record = store.run_record(run_id)
    assert record["status"] == "complete" and record["wall_s"] == 12.0
    assert record["summary"] == summary and summary["cells_ok"] == 1
