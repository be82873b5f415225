from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebench import compare
from aebench.cli import main
from aebench.config import Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import Store
from support import tiny_matrix_dict

GOLDEN = Path(__file__).parent / "golden" / "compare.txt"


def _store_two_runs(path: Path, *, candidate_speed: float, candidate_psnr: float, latency_shift_s: float) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
    rng = np.random.default_rng(0)
    with Store(path) as store:
        for run_id, speed, psnr, shift, machine in (("20260101T000000-aaaaaa", 1000.0, 20.0, 0.0, "m1"),
                                                    ("20260102T000000-bbbbbb", candidate_speed, candidate_psnr, latency_shift_s, "m1")):
            store.begin_run(matrix, {"git_commit": run_id[-6:] * 2, "machine_id": machine}, [], run_id=run_id)
            samples = 1e-3 + shift + rng.normal(0, 2e-5, 200)
            store.add_result(run_id, CellResult(
                cell=matrix.cells()[0], status="ok", duration_s=1.0,
                metrics={"quality.psnr_db": psnr, "speed.train_ips": speed, "speed.latency_b1_p50_ms": float(np.median(samples) * 1e3)},
                artifacts={"latency_b1_s": samples}))
            store.finish_run(run_id, "complete", 1.0, {})


def test_no_change_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _store_two_runs(tmp_path / "s.sqlite", candidate_speed=1000.0, candidate_psnr=20.0, latency_shift_s=0.0)
    assert main(["compare", "20260101T", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "0 regressions" in capsys.readouterr().out


@pytest.mark.golden  # compares with tests/golden/compare.txt (`make golden` regenerates it)
def test_regressions_are_reported_then_fail(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _store_two_runs(tmp_path / "s.sqlite", candidate_speed=900.0, candidate_psnr=19.0, latency_shift_s=2e-4)
    assert main(["compare", "20260101", "20260102", "--store", str(tmp_path / "s.sqlite")]) == 1
    out = capsys.readouterr().out
    if os.environ.get("AEBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(out)
    assert out == GOLDEN.read_text(), "compare output changed; regenerate with AEBENCH_UPDATE_GOLDEN=1 if intended"


def test_a_looser_gate_lets_the_speed_drop_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _store_two_runs(tmp_path / "s.sqlite", candidate_speed=960.0, candidate_psnr=20.0, latency_shift_s=0.0)
    assert main(["compare", "20260101", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert main(["compare", "20260101", "--store", str(tmp_path / "s.sqlite"), "--fail", "speed.train_ips:2%"]) == 1


def test_insignificant_latency_shift_is_not_a_regression() -> None:
    rng = np.random.default_rng(1)
    noisy_a, noisy_b = rng.exponential(1e-3, 50), rng.exponential(1e-3, 50)
    frame = lambda p50: pd.DataFrame([{"key": "k", "status": "ok", "speed.latency_b1_p50_ms": p50}])  # noqa: E731
    table = compare.compare_frames(frame(1.0), frame(1.2), samples={"k": (noisy_a, noisy_b)})
    assert table.loc[0, "improvement_pct"] == pytest.approx(-20.0)
    assert table.loc[0, "verdict"] == ("not significant" if table.loc[0, "p_value"] >= 0.01 else "REGRESSION")
    assert compare.latency_significance(noisy_a, None) is None


@pytest.mark.parametrize("text", ["speed", "speed:x%", "nope:5%", "speed:-1%"])
def test_bad_threshold(text: str) -> None:
    with pytest.raises(UserError, match="--fail"):
        compare.parse_threshold(text)


def test_threshold_forms() -> None:
    assert compare.parse_threshold("speed:5%") == compare.Threshold("speed", 5.0)
    assert compare.parse_threshold("quality.psnr_db:0.5") == compare.Threshold("quality.psnr_db", 0.5)
