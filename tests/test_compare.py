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


def test_a_latency_shift_is_judged_by_its_samples() -> None:
    """The same -20% median shift is "not significant" when the raw samples cannot be told apart and a REGRESSION when
    they can."""
    n = 50
    # Interleaved: baseline 0, 2, 4, ... and candidate 1, 3, 5, ... (x 1 us): a baseline sample beats a candidate one
    # in n(n-1)/2 = 1225 of the 2500 pairs, against 1250 for identical distributions: p = 0.87.
    interleaved = 1e-3 + 1e-6 * np.arange(0, 2 * n, 2), 1e-3 + 1e-6 * np.arange(1, 2 * n, 2)
    # Separated: every candidate sample is slower than every baseline one, so p is far below 1e-10.
    separated = interleaved[0], interleaved[0] + 1e-3
    frame = lambda p50: pd.DataFrame([{"key": "k", "status": "ok", "speed.latency_b1_p50_ms": p50}])  # noqa: E731

    noise = compare.compare_frames(frame(1.0), frame(1.2), samples={"k": interleaved}).iloc[0]
    shift = compare.compare_frames(frame(1.0), frame(1.2), samples={"k": separated}).iloc[0]
    assert noise["improvement_pct"] == pytest.approx(-20.0) and shift["improvement_pct"] == pytest.approx(-20.0)
    assert noise["p_value"] > 0.5 and shift["p_value"] < 1e-10
    assert noise["verdict"] == "not significant"
    assert shift["verdict"] == "REGRESSION"
    assert compare.latency_significance(interleaved[0], None) is None


def test_gated_metrics_come_from_the_registry() -> None:
    def frame(value: float) -> pd.DataFrame:
        return pd.DataFrame([{"key": "k", "status": "ok", "quality.mse": value, "quality.psnr_db": value}])

    table = compare.compare_frames(frame(1.0), frame(2.0))
    # quality.mse is in the registry but not gated; psnr is gated and higher is better.
    assert list(table["metric"]) == ["quality.psnr_db"] and table.loc[0, "improvement_pct"] == pytest.approx(100.0)


@pytest.mark.parametrize("text", ["speed", "speed:x%", "nope:5%", "speed:-1%"])
def test_bad_threshold(text: str) -> None:
    with pytest.raises(UserError, match="--fail"):
        compare.parse_threshold(text)


def test_threshold_forms() -> None:
    assert compare.parse_threshold("speed:5%") == compare.Threshold("speed", 5.0)
    assert compare.parse_threshold("quality.psnr_db:0.5") == compare.Threshold("quality.psnr_db", 0.5)
