"""aebench history: change points over a machine's runs in commit order, on tiny synthetic stores."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from aebench import history
from aebench.cli import main
from aebench.config import Matrix
from aebench.metrics import REGISTRY
from aebench.results import CellResult
from aebench.store import Store, open_store
from support import tiny_matrix_dict

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONV = "conv/gaussian0.2/cpu1/tensorflow/float32/seed0"
DENSE = "undercomplete/gaussian0.2/cpu1/tensorflow/float32/seed0"
BASE = {"quality.bce": 0.1, "quality.psnr_db": 20.0, "quality.ssim": 0.8, "quality.acc_denoised": 0.95,
        "speed.train_ips": 1000.0, "speed.infer_ips": 5000.0, "speed.latency_b1_p50_ms": 0.5,
        "speed.latency_b1_p99_ms": 0.9}


def _commit(day: int) -> str:
    return f"{day:02d}" * 20


def _add_run(store: Store, day: int, *, commit: str | None = None, slow: float = 1.0, psnr: float = 20.0,
             noise: float = 0.02, rng: np.random.Generator, machine: str = "m1", matrix: str = "tiny",
             commit_date: datetime | None = None, run: int = 0, skip: Sequence[str] = (),
             contaminated: bool = False, settings: dict[str, object] | None = None, conv_timed_on: str = "") -> str:
    """One complete run of two cells. ``slow`` divides the conv cell's training throughput; every speed figure gets
    ``noise`` (relative sd); quality figures are exact, ``psnr`` on the conv cell. ``settings`` overrides the
    matrix's; ``conv_timed_on`` names another machine as the conv cell's (a cluster's node)."""
    matrix_obj = Matrix.from_dict(tiny_matrix_dict(name=matrix, **(settings or {})))
    run_id = f"2026{day:04d}T0000{run:02d}-{day:06x}"
    date = commit_date or START + timedelta(days=day)
    store.begin_run(matrix_obj, {"git_commit": commit or _commit(day), "git_commit_date": date.isoformat(),
                                 "machine_id": machine}, [], run_id=run_id)
    for cell in matrix_obj.cells():
        metrics = {}
        for name, value in BASE.items():
            if name.startswith("speed."):
                value *= float(np.exp(noise * rng.standard_normal()))
            if cell.variant == "conv" and name == "speed.train_ips":
                value /= slow
            if cell.variant == "conv" and name == "quality.psnr_db":
                value = psnr
            if not (cell.variant == "conv" and name in skip):
                metrics[name] = value
        if contaminated:  # ran beside another benchmark (--allow-concurrent)
            metrics["speed.contaminated"] = 1.0
        info = {"machine_id": conv_timed_on} if conv_timed_on and cell.variant == "conv" else {}
        store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0, metrics=metrics, info=info))
    store.finish_run(run_id, "complete", 1.0, {})
    return run_id


def _store(path: Path, slow: Sequence[float] = (), psnr: Sequence[float] = (), seed: int = 0,
           days: int | None = None, **kwargs: object) -> Path:
    """One run per commit, one commit per day: the i-th run slowed by slow[i] and with conv PSNR psnr[i]."""
    rng = np.random.default_rng(seed)
    count = days or max(len(slow), len(psnr))
    with open_store(path) as store:
        for day in range(count):
            _add_run(store, day, slow=slow[day] if slow else 1.0, psnr=psnr[day] if psnr else 20.0, rng=rng,
                     **kwargs)
    return path


def _analyse(path: Path, **kwargs: object) -> history.Analysis:
    with open_store(path, create=False) as store:
        return history.analyse(history.load_history(store, commit_date=lambda commit: None), **kwargs)


def _cli(path: Path, tmp_path: Path, *args: str) -> int:
    return main(["history", "--store", str(path), "--out", str(tmp_path / "history.html"), *args])


# -- change points -----------------------------------------------------------------------------------------------------


def test_a_slowed_commit_is_marked_there_and_nowhere_else(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _store(tmp_path / "s.sqlite", slow=[1.0] * 4 + [1.25] * 5)  # 20% fewer images/s from commit 4 on
    analysis = _analyse(path)
    assert [(p.key, p.metric, p.run.commit, p.verdict) for p in analysis.change_points] == [
        (CONV, "speed.train_ips", _commit(4), "regression")]
    point = analysis.change_points[0]
    assert point.judgement.change == pytest.approx(-20, abs=3)  # give or take 2% noise
    assert point.judgement.p_value <= history.MAX_P_VALUE
    assert analysis.series == 2 * len(REGISTRY.gated())

    assert _cli(path, tmp_path) == 1
    out = capsys.readouterr().out
    assert _commit(4)[:7] in out and "regression" in out and "newest segment: regression in 1 of 16 series" in out


def test_runs_of_the_matrix_with_other_settings_are_left_out_and_named(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """A run of the same matrix name with `--set epochs=...` measures something else: were it a point of the series,
    its slower training and lower PSNR would be a change point at its commit."""
    rng = np.random.default_rng(0)
    path = tmp_path / "s.sqlite"
    with open_store(path) as store:
        for day in range(8):
            other = day == 5
            _add_run(store, day, rng=rng, slow=2.0 if other else 1.0, psnr=18.0 if other else 20.0,
                     settings={"epochs": 3} if other else None)
    analysis = _analyse(path)
    assert not analysis.change_points
    assert [run.commit for run in analysis.history.runs] == [_commit(day) for day in range(8) if day != 5]
    assert analysis.history.left_out == (f"2026{5:04d}T000000-{5:06x} (epochs: 3 -> 2)",)
    assert _cli(path, tmp_path) == 0
    out = capsys.readouterr().out
    assert "settings differ from the newest run's (theirs -> newest): 20260005T000000-000005 (epochs: 3 -> 2)" in out
    assert "epochs: 3 -&gt; 2" in (tmp_path / "history.html").read_text()


def test_cells_another_machine_timed_are_left_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A cluster run started here whose conv cell ran on a slower node: that figure is the node's, not a change."""
    rng = np.random.default_rng(0)
    path = tmp_path / "s.sqlite"
    with open_store(path) as store:
        for day in range(8):
            _add_run(store, day, rng=rng, slow=2.0 if day >= 5 else 1.0, conv_timed_on="m9" if day >= 5 else "")
    analysis = _analyse(path)
    assert not analysis.change_points and analysis.history.elsewhere == 3
    assert _cli(path, tmp_path) == 0
    assert "left out: 3 cells of these runs timed on other machines (cluster nodes)" in capsys.readouterr().out


def test_contaminated_runs_speed_figures_are_left_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    with open_store(tmp_path / "s.sqlite") as store:
        for day in range(9):  # the last five ran beside another benchmark and were 20% slower for it
            _add_run(store, day, slow=1.25 if day >= 4 else 1.0, rng=rng, contaminated=day >= 4)
    assert not _analyse(tmp_path / "s.sqlite").change_points
    assert _cli(tmp_path / "s.sqlite", tmp_path) == 0


def test_a_last_commit_that_undoes_the_regression_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    rng = np.random.default_rng(1)
    with open_store(path) as store:
        for day in range(8):
            _add_run(store, day, slow=1.25 if day >= 4 else 1.0, rng=rng)
        for run in range(4):  # the last commit, run four times, is as fast as before the regression
            _add_run(store, 8, slow=1.0, rng=rng, run=run)
    analysis = _analyse(path)
    assert [(p.run.commit, p.verdict) for p in analysis.change_points] == [
        (_commit(4), "regression"), (_commit(8), "improvement")]
    assert analysis.newest_regressions() == []
    assert _cli(path, tmp_path, "--metric", "speed.train_ips") == 0
    assert "newest segment: no regression" in capsys.readouterr().out


def test_an_improvement_is_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _store(tmp_path / "s.sqlite", slow=[1.25] * 4 + [1.0] * 4)
    assert _cli(path, tmp_path, "--metric", "speed.train_ips") == 0
    assert "improvement" in capsys.readouterr().out
    assert [p.verdict for p in _analyse(path).change_points] == ["improvement"]


def test_a_quality_step_beyond_its_margin_is_found(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.sqlite", psnr=[20.0] * 4 + [19.8] * 4)  # margin 0.1 dB
    points = _analyse(path).change_points
    assert [(p.metric, p.run.commit, p.verdict, p.p_text) for p in points] == [
        ("quality.psnr_db", _commit(4), "regression", "exact")]
    assert points[0].judgement.change == pytest.approx(-0.2)


def test_a_quality_step_within_its_margin_is_not(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _store(tmp_path / "s.sqlite", psnr=[20.0] * 4 + [19.95] * 4)
    assert _analyse(path).change_points == ()
    assert _cli(path, tmp_path, "--metric", "quality.psnr_db") == 0
    assert _cli(path, tmp_path, "--metric", "quality.psnr_db", "--margin", "quality.psnr_db:0.01") == 1


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_gives_no_change_point(tmp_path: Path, seed: int) -> None:
    path = _store(tmp_path / "s.sqlite", days=16, seed=seed, noise=0.03)
    assert _analyse(path).change_points == ()


def test_series_change_points_on_pure_noise_and_on_a_step() -> None:
    rng = np.random.default_rng(7)
    false_alarms = sum(bool(history.series_change_points(1000 * np.exp(0.03 * rng.standard_normal(20)),
                                                         "speed.train_ips", 5.0)) for _ in range(200))
    assert false_alarms == 0
    step = 1000 * np.exp(0.03 * rng.standard_normal(12)) * np.r_[np.ones(6), np.full(6, 0.8)]
    assert [index for index, _ in history.series_change_points(step, "speed.train_ips", 5.0)] == [6]
    # a significant step below the margin is not kept: 3% on 0.3% noise, margin 5%
    small = 1000 * np.exp(0.003 * rng.standard_normal(12)) * np.r_[np.ones(6), np.full(6, 0.97)]
    assert history.series_change_points(small, "speed.train_ips", 5.0) == []
    assert [index for index, _ in history.series_change_points(small, "speed.train_ips", 1.0)] == [6]


def test_min_segment_bounds_where_a_change_can_be_found(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.sqlite", slow=[1.0] * 4 + [1.3] * 2)  # only two slow runs
    assert _analyse(path, min_segment=3).change_points == ()
    assert [p.run.commit for p in _analyse(path, min_segment=2).change_points] == [_commit(4)]


# -- order of the runs -------------------------------------------------------------------------------------------------


def test_runs_are_ordered_by_commit_date_then_start_time(tmp_path: Path) -> None:
    """The environment's commit date first, then git's, then the start time; runs of one commit by start time."""
    path = tmp_path / "s.sqlite"
    rng = np.random.default_rng(0)
    with open_store(path) as store:
        late = _add_run(store, 1, commit="a" * 40, commit_date=START + timedelta(days=9), rng=rng)
        early = _add_run(store, 2, commit="b" * 40, commit_date=START + timedelta(days=1), rng=rng)
        second = _add_run(store, 3, commit="b" * 40, commit_date=START + timedelta(days=1), rng=rng)
        from_git = _add_run(store, 4, commit="c" * 40, rng=rng)
        unknown = _add_run(store, 5, commit="d" * 40, rng=rng)
    with sqlite3.connect(path) as db:  # no commit date for the last two; start times as the runner writes them
        for run_id, started in ((early, "2026-03-02T00:00:00+00:00"), (second, "2026-03-01T00:00:00+00:00"),
                                (unknown, "2026-01-05T12:00:00+00:00")):
            db.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", (started, run_id))
        for run_id in (from_git, unknown):
            db.execute("UPDATE runs SET environment_json = json_remove(environment_json, '$.git_commit_date') "
                       "WHERE run_id = ?", (run_id,))
    git_dates = {"c" * 40: START + timedelta(days=3)}
    with open_store(path, create=False) as store:
        found = history.load_history(store, commit_date=git_dates.get)
    assert [run.run_id for run in found.runs] == [second, early, from_git, unknown, late]
    assert [run.source for run in found.runs] == ["environment", "environment", "git", "start time", "environment"]


def test_git_commit_date_reads_the_committer_date_and_tolerates_unknown_commits(tmp_path: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.invalid", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@example.invalid", "GIT_COMMITTER_DATE": "2026-02-03T04:05:06+01:00",
           "GIT_AUTHOR_DATE": "2020-01-01T00:00:00+00:00", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True, env=env)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert history.git_commit_date(sha, cwd=tmp_path) == datetime(2026, 2, 3, 3, 5, 6, tzinfo=timezone.utc)
    assert history.git_commit_date("f" * 40, cwd=tmp_path) is None  # not in this repository
    assert history.git_commit_date("--output=x", cwd=tmp_path) is None  # never handed to git as an option
    assert history.git_commit_date(sha, cwd=tmp_path / "nowhere") is None
    assert not (tmp_path / "x").exists()


# -- outputs -----------------------------------------------------------------------------------------------------------


def test_the_page_has_one_figure_per_headline_metric_and_the_commit(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.sqlite", slow=[1.0] * 4 + [1.25] * 4, machine="<b>m&1</b>")
    assert _cli(path, tmp_path) == 1
    page = (tmp_path / "history.html").read_text()
    assert page.count('<img class="figure"') == len(REGISTRY.gated())
    for metric in REGISTRY.gated():
        assert f"<h3>{REGISTRY[metric.name].heading(metric.label)}</h3>" in page
    assert _commit(4)[:7] in page and "status-failed" in page
    assert "&lt;b&gt;m&amp;1&lt;/b&gt;" in page and "<b>m&1</b>" not in page  # the store's strings are escaped
    # Self-contained: nothing from the network, and the one script is the page's own table sorter.
    assert "http://" not in page and "https://" not in page and page.count("<script") == 1


def test_a_metric_no_run_recorded_is_said_not_drawn(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    rng = np.random.default_rng(0)
    with open_store(path) as store:
        for day in range(6):
            _add_run(store, day, rng=rng, skip=["speed.latency_b1_p99_ms"])
    with open_store(path, create=False) as store:
        found = history.load_history(store, margins={"speed.latency_b1_p99_ms": 10.0, "quality.ssim": 0.001},
                                     commit_date=lambda commit: None)
    analysis = history.analyse(found)
    page = history.build_page(analysis)
    assert page.count('<img class="figure"') == 2  # latency p99 still has the dense cell
    assert list(found.figures["speed.latency_b1_p99_ms"].columns) == [DENSE]


def test_otava_csv_has_a_time_column_attributes_and_one_row_per_run(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    rng = np.random.default_rng(0)
    with open_store(path) as store:
        for day in range(5):
            _add_run(store, day, rng=rng, skip=["speed.infer_ips"] if day == 2 else ())
    assert main(["history", "--store", str(path), "--format", "otava-csv", "--out", str(tmp_path / "h.html")]) == 0
    captured = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(captured.out)))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["time", "commit", "run_id"]
    series = [column.rsplit("/", 1) for column in header[3:]]
    gated = [metric.name for metric in REGISTRY.gated()]
    assert sorted(series) == sorted([key, metric] for key in (CONV, DENSE) for metric in gated
                                    if (key, metric) != (CONV, "speed.infer_ips"))
    assert f"{CONV}/speed.infer_ips" in captured.err  # a run lacks it: left out, and said
    assert len(body) == 5 and [row[1] for row in body] == [_commit(day) for day in range(5)]
    assert [datetime.fromisoformat(row[0]) for row in body] == [START + timedelta(days=day) for day in range(5)]
    psnr = header.index(f"{CONV}/quality.psnr_db")
    assert {float(row[psnr]) for row in body} == {20.0}
    assert not (tmp_path / "h.html").exists()  # the export writes no page


BAD = [
    (["--machine", "m9"], "--machine 'm9' has no complete run"),
    (["--matrix", "other"], "--matrix 'other' has no complete run"),
    (["--metric", "speed.nonsense"], "--metric 'speed.nonsense' is not a metric"),
    (["--metric", "quality.noisy_psnr_db"], "--metric 'quality.noisy_psnr_db' is not a metric"),
    (["--margin", "speed:-1"], "--margin 'speed:-1' is invalid"),
    (["--min-segment", "1"], "--min-segment 1 is invalid"),
    (["--min-segment", "4"], "has 6 complete runs"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_bad_input_exits_2_with_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                                message: str) -> None:
    path = _store(tmp_path / "s.sqlite", days=6)
    assert _cli(path, tmp_path, *args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "history.html").exists()


def test_an_out_path_that_is_a_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _store(tmp_path / "s.sqlite", days=6)
    assert main(["history", "--store", str(path), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["history", "--store", str(path), "--out", str(tmp_path / "a-file" / "history.html")]) == 2
    err = capsys.readouterr().err  # not a traceback and exit 1, which history's gate would read as a regression
    assert "cannot be written" in err and len(err.strip().splitlines()) == 1


def test_a_missing_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _cli(tmp_path / "none.sqlite", tmp_path) == 2
    assert not (tmp_path / "none.sqlite").exists() and not (tmp_path / "history.html").exists()


def test_the_newest_runs_machine_and_matrix_are_the_default(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    rng = np.random.default_rng(0)
    with open_store(path) as store:
        for day in range(3):
            _add_run(store, day, rng=rng, machine="m1", matrix="tiny")
        for day in range(3, 6):
            _add_run(store, day, rng=rng, machine="m2", matrix="other")
    with open_store(path, create=False) as store:
        newest = history.load_history(store, commit_date=lambda commit: None)
        chosen = history.load_history(store, matrix="tiny", commit_date=lambda commit: None)
    assert (newest.machine_id, newest.matrix_name, len(newest.runs)) == ("m2", "other", 3)
    assert (chosen.machine_id, chosen.matrix_name, len(chosen.runs)) == ("m1", "tiny", 3)


def test_plots_of_many_cells_show_cell_groups() -> None:
    """Up to MAX_PLOT_LINES cells, one line each; past that, seeds together, and past that again, one per variant,
    each cell taken against its own median."""
    import pandas as pd

    def keys(variants: int, noises: int, seeds: int) -> list[str]:
        return [f"v{v}/gaussian0.{n}/cpu1/tensorflow/float32/seed{s}"
                for v in range(variants) for n in range(noises) for s in range(seeds)]

    def lines(columns: list[str]) -> list[str]:
        table = pd.DataFrame(np.outer(np.arange(1.0, 5.0), np.arange(1.0, len(columns) + 1)), columns=columns)
        return [str(column) for column in history._plot_lines(table, "speed.train_ips")[0].columns]

    assert lines(keys(2, 2, 2)) == keys(2, 2, 2)
    assert lines(keys(2, 2, 3)) == [key.removesuffix("/seed0") for key in keys(2, 2, 1)]
    assert lines(keys(3, 3, 1)) == ["v0", "v1", "v2"]
    table = pd.DataFrame({key: [100.0 * (index + 1), 200.0 * (index + 1), 300.0 * (index + 1)]
                          for index, key in enumerate(keys(3, 3, 1))})
    relative = history._plot_lines(table, "speed.train_ips")[0]
    assert relative["v0"].tolist() == [50.0, 100.0, 150.0]  # percent of each cell's median
