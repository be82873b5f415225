"""aebench compare on stored runs: exact quality, speed judged only from repeats, noise from the store's history."""

from __future__ import annotations

from pathlib import Path

import pytest

from aebench import config
from aebench.cli import main
from aebench.config import Matrix
from aebench.results import CellResult
from aebench.store import Store, open_store
from support import assert_matches_golden, tiny_matrix_dict

GOLDEN = Path(__file__).parent / "golden" / "compare.txt"


def _add_run(store: Store, run_id: str, commit: str, *, speed: float, psnr: float, machine: str = "m1",
             seeds: int = 1, status: str = "complete", **matrix_overrides: object) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], repeats=seeds, **matrix_overrides))
    store.begin_run(matrix, {"git_commit": commit, "machine_id": machine}, [], run_id=run_id)
    for index, cell in enumerate(matrix.cells()):
        jitter = 1 + 0.002 * (index - (seeds - 1) / 2)  # seeds of one cell differ a little, as processes do
        store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0, metrics={
            "quality.psnr_db": psnr, "speed.train_ips": speed * jitter, "speed.latency_b1_p50_ms": 1000 / speed * jitter}))
    store.finish_run(run_id, status, 1.0, {})


def test_one_run_against_one_run_never_calls_a_speed_regression(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=700.0, psnr=20.0)  # 30% slower, one run each
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "not judged" in out and "-30.0%" in out and "0 regressions" in out
    assert "fewer than 3 earlier runs" in out


def test_the_store_history_says_how_large_a_change_noise_hides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day, speed in enumerate([1000, 1100, 950, 1050, 1000, 900]):  # ~7% run to run
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", f"{day}" * 40, speed=float(speed), psnr=20.0)
    assert main(["compare", "20260105", "20260106", "--store", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "noise hides speed changes up to" in out and "(6 runs)" in out


def test_the_noise_comes_only_from_runs_with_the_same_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day, speed in enumerate([1000, 1100, 950, 1050, 1000, 900]):
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", f"{day}" * 40, speed=float(speed), psnr=20.0,
                     epochs=3 if day < 2 else 2)  # the first two trained longer: another experiment
    assert main(["compare", "20260105", "20260106", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "(4 runs)" in capsys.readouterr().out


def test_a_model_shared_by_its_thread_counts_is_judged_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The 2-thread cell trained; the 1-thread cell timed its weights and repeats its figures: one change, one row."""
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1, 2]))
    trainer = next(cell.key for cell in matrix.cells() if cell.threads == 2)
    with open_store(tmp_path / "s.sqlite") as store:
        for run_id, psnr in (("20260101T000000-aaaaaa", 20.0), ("20260102T000000-bbbbbb", 19.5)):
            store.begin_run(matrix, {"git_commit": run_id[-6:] * 6, "machine_id": "m1"}, [], run_id=run_id)
            for cell in matrix.cells():
                store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0, info={"trained_by": trainer},
                                                    metrics={"quality.psnr_db": psnr, "speed.train_ips": 1000.0}))
            store.finish_run(run_id, "complete", 1.0, {})
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "1 regression" in out and trainer in out and "cpu1" not in out.split("speed")[0]


def test_quality_is_exact_and_gated_by_its_margin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=1000.0, psnr=19.95)  # inside 0.1 dB
        _add_run(store, "20260103T000000-cccccc", "c" * 40, speed=1000.0, psnr=19.5)  # beyond it
    path = str(tmp_path / "s.sqlite")
    assert main(["compare", "20260101", "20260102", "--store", path]) == 0
    assert "-0.05" in capsys.readouterr().out  # reported, though not a regression
    assert main(["compare", "20260101", "20260103", "--store", path]) == 1
    assert main(["compare", "20260101", "20260103", "--store", path, "--margin", "quality.psnr_db:1"]) == 0


def test_repeats_on_both_sides_give_run_level_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day, speed in enumerate([1000.0, 1010.0, 990.0]):
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", "a" * 40, speed=speed, psnr=20.0)
        for day, speed in enumerate([700.0, 705.0, 695.0]):
            _add_run(store, f"2026011{day + 1}T000000-bbbbb{day}", "b" * 40, speed=speed, psnr=20.0)
    path = str(tmp_path / "s.sqlite")
    assert main(["compare", "commit:aaaa", "commit:bbbb", "--store", path]) == 1
    out = capsys.readouterr().out
    assert "run-level" in out and "regression" in out and "3 runs" in out
    assert main(["compare", "commit:aaaa", "commit:bbbb", "--store", path, "--margin", "speed:50%"]) == 0


def test_seeds_of_one_run_are_not_repeats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Seeds share their run's minutes on the machine: one run of 3 seeds against another is still one run against one.
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0, seeds=3)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=700.0, psnr=20.0, seeds=3)
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "not judged" in out and "run-level" not in out and "-30.0%" in out


def test_runs_with_seeds_are_judged_one_sample_per_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day, (base, candidate) in enumerate([(1000.0, 1001.0), (1010.0, 1011.0)]):
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", "a" * 40, speed=base, psnr=20.0, seeds=3)
            _add_run(store, f"2026011{day + 1}T000000-bbbbb{day}", "b" * 40, speed=candidate, psnr=20.0, seeds=3)
    assert main(["compare", "commit:aaaa", "commit:bbbb", "--store", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "run-level" in out and "2 runs" in out and "6 runs" not in out


def test_runs_with_different_settings_are_refused_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=1000.0, psnr=20.0, epochs=3)
    path = str(tmp_path / "s.sqlite")
    assert main(["compare", "20260101", "20260102", "--store", path]) == 2
    err = capsys.readouterr().err
    assert "epochs: 2 -> 3" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", "20260101", "20260102", "--store", path, "--force"]) == 0


def test_a_run_without_cells_compares_to_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
        store.begin_run(matrix, {"git_commit": "a" * 40, "machine_id": "m1"}, [], run_id="20260101T000000-aaaaaa")
        store.finish_run("20260101T000000-aaaaaa", "complete", 1.0, {})
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=1000.0, psnr=20.0)
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "nothing to compare" in capsys.readouterr().out


def test_latest_is_the_newest_complete_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=1000.0, psnr=19.0)
        _add_run(store, "20260103T000000-cccccc", "c" * 40, speed=1000.0, psnr=20.0, status="interrupted")
        matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
        store.begin_run(matrix, {"git_commit": "d" * 40, "machine_id": "m1"}, [], run_id="20260104T000000-dddddd")
    assert main(["compare", "20260101", "--store", str(tmp_path / "s.sqlite")]) == 1  # against bbbbbb's 19 dB
    assert "candidate: 20260102T000000-bbbbbb" in capsys.readouterr().out
    with open_store(tmp_path / "t.sqlite") as store:
        store.begin_run(matrix, {"git_commit": "d" * 40, "machine_id": "m1"}, [], run_id="20260104T000000-dddddd")
    assert main(["compare", "latest", "latest", "--store", str(tmp_path / "t.sqlite")]) == 2
    assert "holds no complete run yet" in capsys.readouterr().err
    # Named by id, an unfinished run is a side, labelled with its status.
    assert main(["compare", "20260101", "20260103", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "(20260103T000000-cccccc interrupted: only the cells it finished)" in capsys.readouterr().out


@pytest.mark.golden
def test_compare_output_golden(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=900.0, psnr=19.0)
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 1
    assert_matches_golden(GOLDEN, capsys.readouterr().out)


@pytest.mark.parametrize("ref", ["commit:", "commit:zzz"])
def test_bad_commit_selection(tmp_path: Path, ref: str, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
    assert main(["compare", ref, "20260101", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "matches no complete run" in capsys.readouterr().err


def test_settings_differences_lists_each_setting() -> None:
    base = [{"matrix": {"epochs": 3, "hparams": {}}}]
    candidate = [{"matrix": {"epochs": 2, "hparams": {"conv": {}}}}]
    assert config.settings_differences(base, candidate) == ["epochs: 3 -> 2", "hparams: {} -> {'conv': {}}"]


def test_a_quality_figure_the_candidate_lost_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        _add_run(store, "20260102T000000-bbbbbb", "b" * 40, speed=1000.0, psnr=float("nan"))  # stored as None
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 1
    assert "1 regressions" in capsys.readouterr().out


def test_a_cell_that_fails_only_in_the_candidate_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, "20260101T000000-aaaaaa", "a" * 40, speed=1000.0, psnr=20.0)
        matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
        crashed = "20260102T000000-bbbbbb"
        store.begin_run(matrix, {"git_commit": "b" * 40, "machine_id": "m1"}, [], run_id=crashed)
        for cell in matrix.cells():
            store.add_result(crashed, CellResult(cell=cell, status="failed", duration_s=1.0, exit_code=1,
                                                 error="ValueError: boom"))
        store.finish_run(crashed, "complete", 1.0, {})
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "failed or timed out in the candidate (each a regression): " + matrix.cells()[0].key in out
    assert f"{len(matrix.cells())} regressions" in out and "cells in only one side" not in out
    # The other way round the baseline's failures are the candidate's fix, not a regression.
    assert main(["compare", "20260102", "20260101", "--store", str(tmp_path / "s.sqlite")]) == 0
