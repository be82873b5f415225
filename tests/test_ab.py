"""aebench ab: the round logic with a fake executor and a fake clock, margins, outputs and exit status."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebench import ab, stats
from aebench.config import Cell, Matrix
from aebench.errors import UserError
from aebench.metrics import REGISTRY, parse_margin
from aebench.results import CellResult
from aebench.revisions import Revision
from support import tiny_matrix_dict

SPEED = {"speed.train_ips": 1000.0, "speed.infer_ips": 50000.0, "speed.latency_b1_p50_ms": 0.5,
         "speed.latency_b1_p99_ms": 0.8}
QUALITY = {"quality.psnr_db": 20.0, "quality.ssim": 0.8, "quality.bce": 0.1, "quality.acc_denoised": 0.95,
           "quality.gain_db": 5.0}


def _side(label: str, spike: float = 0.0, matrix: Matrix | None = None) -> ab.Side:
    matrix = matrix or Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete", "conv"], threads=[1]))
    return ab.Side(label, Revision(label, label * 5, f"subject of {label}", "2026-11-27T00:00:00+00:00", Path("/x")),
                   matrix, spike)


class FakeExecutor:
    """Figures = nominal x the side's slowdown (on the conv cells only) x noise; a fake clock advances per run."""

    def __init__(self, slowdown: dict[str, float], noise: float = 0.002, seconds_per_run: float = 1.0,
                 quality_change: dict[str, dict[str, float]] | None = None, sides: int = 2) -> None:
        self.slowdown = slowdown
        self.rng = np.random.default_rng(0)
        self.noise = noise
        self.now = 0.0
        self.seconds_per_run = seconds_per_run
        self.quality_change = quality_change or {}
        self.calls: list[tuple[str, str, int, int]] = []  # side, cell, epochs trained, timed repeats of the steps
        self.trains: list[bool] = []  # per call: whether it trained, or timed weights a pass kept
        self.sides = sides
        self.drift = 1.0
        self.rounds_started = 0
        self.crashes: set[tuple[str, str]] = set()
        self.cores: list[tuple[str, tuple[int, ...] | None]] = []
        self.lose: dict[str, list[str]] = {}  # side label -> metrics it stops reporting

    def clock(self) -> float:
        return self.now

    def new_round(self, sides: Sequence[ab.Side], backends: Sequence[str]) -> None:
        self.rounds_started += 1

    def run(self, side: ab.Side, matrix: Matrix, cell: Cell, cpus: Sequence[int] | None = None,
            trains: bool = True) -> CellResult:
        self.now += self.seconds_per_run
        self.calls.append((side.label, cell.key, matrix.epochs, matrix.train_timing.repeats))
        self.trains.append(trains)
        self.cores.append((side.label, None if cpus is None else tuple(cpus)))
        if (side.label, cell.variant) in self.crashes:
            return CellResult(cell=cell, status="failed", duration_s=1.0, exit_code=1, error="ValueError: boom")
        factor = self.slowdown.get(side.label, 1.0) if cell.variant == "conv" else 1.0
        if len(self.calls) % self.sides == 1:  # the machine's speed this minute: the sides of one cell share it
            self.drift = math.exp(self.rng.normal(0, 0.1))
        drift = self.drift
        metrics = {}
        for name, value in SPEED.items():
            slower = factor * drift * math.exp(self.rng.normal(0, self.noise))
            metrics[name] = value / slower if name.endswith("_ips") else value * slower
        metrics.update(QUALITY)
        metrics.update(self.quality_change.get(side.label, {}))
        for name in self.lose.get(side.label, []):
            metrics[name] = None
        return CellResult(cell=cell, status="ok", duration_s=self.seconds_per_run, metrics=metrics,
                          info={"weights_sha256": "w" + str(sorted(self.quality_change.get(side.label, {}).items()))})


MARGINS = {"speed.train_ips": 5.0, "speed.infer_ips": 5.0, "speed.latency_b1_p50_ms": 5.0,
           "speed.latency_b1_p99_ms": 10.0, "quality.psnr_db": 0.1, "quality.ssim": 0.001, "quality.bce": 0.001,
           "quality.acc_denoised": 0.005}


def _run(executor: FakeExecutor, **settings: object) -> ab.Outcome:
    sides = [_side("base"), _side("cand")]
    options = {"margins": MARGINS, **settings}
    return ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()], ab.Settings(**options), executor,
                     clock=executor.clock)


def test_a_slower_candidate_is_a_regression_once_the_adjusted_tests_allow() -> None:
    """8 figures tested, conv's 4 all worse in every round: p = 2**-n each, and Benjamini-Hochberg calls those 4 once
    2**-n <= 4 x 0.05 / 8, so at round 6 (Holm, asking 8 x 2**-n <= 0.05 of the first, would need 8)."""
    executor = FakeExecutor({"cand": 1.25})
    outcome = _run(executor)
    assert outcome.rounds.count == 6 and outcome.stop_reason == "every verdict settled"
    verdicts = {(c.key.split("/")[0], c.metric): c.verdict for c in outcome.speed["cand"]}
    assert {v for (variant, _), v in verdicts.items() if variant == "conv"} == {"regression"}
    assert {v for (variant, _), v in verdicts.items() if variant == "undercomplete"} == {"same"}
    assert outcome.exit_status(strict=False) == 1
    conv_train = next(c for c in outcome.speed["cand"] if c.key.startswith("conv") and c.metric == "speed.train_ips")
    assert conv_train.change_pct == pytest.approx(-20.0, abs=1.0)


def test_a_faster_candidate_is_an_improvement_and_exits_zero() -> None:
    outcome = _run(FakeExecutor({"cand": 0.8}))
    verdicts = {(c.key.split("/")[0], c.metric): c.verdict for c in outcome.speed["cand"]}
    assert {v for (variant, _), v in verdicts.items() if variant == "conv"} == {"improvement"}
    assert {v for (variant, _), v in verdicts.items() if variant == "undercomplete"} == {"same"}
    assert outcome.regressions() == 0 and outcome.exit_status(strict=True) == 0
    assert "improvement" in ab.format_text(outcome)


def test_rounds_a_load_check_found_contaminated_are_left_out_not_lost() -> None:
    # Every candidate run found the machine busy: 25% slower, but none of it is the code's doing.
    executor = FakeExecutor({"cand": 1.25}, quality_change={"cand": {"speed.contaminated": 1.0}})
    outcome = _run(executor, max_rounds=8)
    assert outcome.rounds.count == 8 and outcome.stop_reason == "max rounds (8)"  # no verdict could settle
    assert outcome.speed["cand"] == [] and outcome.lost_speed() == [] and outcome.regressions() == 0
    assert set(outcome.rounds.contaminated["cand"].values()) == {8}
    assert outcome.unknowns() == 8  # 2 cells x 4 speed metrics without a comparable round: --strict fails
    assert outcome.exit_status(strict=False) == 0 and outcome.exit_status(strict=True) == 1
    assert "16 cell runs found the machine busy" in ab.format_text(outcome)


def test_an_identical_candidate_is_same_and_exits_zero() -> None:
    outcome = _run(FakeExecutor({}))
    assert {c.verdict for c in outcome.speed["cand"]} == {"same"}
    assert {q.verdict for q in outcome.quality["cand"]} == {"same"}
    assert outcome.exit_status(strict=True) == 0
    assert "every quality figure is bit-identical" in ab.format_text(outcome)


def test_noise_keeps_rounds_going_until_max_rounds_and_unknown_fails_only_when_strict() -> None:
    executor = FakeExecutor({}, noise=0.3)
    outcome = _run(executor, max_rounds=8)
    assert outcome.rounds.count == 8 and outcome.stop_reason == "max rounds (8)"
    assert executor.rounds_started == 8  # every round starts its sides afresh
    assert outcome.unknowns() > 0 and outcome.regressions() == 0
    assert outcome.exit_status(strict=False) == 0 and outcome.exit_status(strict=True) == 1


def test_the_time_budget_stops_before_a_round_that_would_not_fit() -> None:
    executor = FakeExecutor({}, noise=0.3, seconds_per_run=10.0)  # 2 cells x 2 sides: 40 s per round
    outcome = _run(executor, budget_s=200.0, max_rounds=50)
    quality_pass_s = 40.0
    assert outcome.stop_reason == "time budget (160 s for the rounds)"  # what the quality pass left of 200 s
    assert outcome.rounds.count == 4 and executor.now == quality_pass_s + 4 * 40.0


def test_speed_rounds_train_briefly_and_the_quality_pass_runs_the_matrix_as_given() -> None:
    executor = FakeExecutor({})
    _run(executor)
    epochs = [epochs for _, _, epochs, _ in executor.calls]
    assert epochs[:4] == [2, 2, 2, 2]  # tiny matrix: 2 epochs already; the speed matrix keeps 2
    matrix = Matrix.from_dict(tiny_matrix_dict(epochs=5, train_size=5000, accuracy=True, predict_path=True))
    speed = ab.speed_matrix(matrix, 2048, noise=0.3)
    assert (speed.epochs, speed.train_size, speed.accuracy, speed.predict_path) == (2, 2048, False, False)
    assert speed.eval_noise == (0.3,) and speed.test_size == matrix.throughput.batch_size
    assert (matrix.epochs, matrix.train_size) == (5, 5000)
    # Timed steps sized to 1.5 s: 20,000 img/s over repeats of 2,048 images (32 steps of 64) needs 15 repeats.
    sized = ab.speed_matrix(matrix, 2048, train_ips=20000.0, train_s=1.5)
    assert (sized.epochs, sized.train_timing.steps, sized.train_timing.repeats) == (2, 32, 15)
    assert ab.speed_matrix(matrix, 2048, train_ips=1e9).train_timing.repeats == ab.MAX_SPEED_EPOCHS - 1
    assert ab.speed_matrix(matrix, 2048, train_ips=10.0).train_timing.repeats == 1
    # An older worker times the steady epochs of its training run: the same work, asked for as epochs, and no key
    # it would refuse.
    plain = Matrix.from_dict({key: value for key, value in tiny_matrix_dict(epochs=5, train_size=5000).items()
                              if key not in ("train_timing", "time_to_quality")})  # as an older revision's file
    older = ab.speed_matrix(plain, 2048, train_ips=20000.0, train_s=1.5, in_steps=False)
    assert older.epochs == 1 + 15 and "train_timing" not in older.to_task()
    assert ab.timed_repeats(older, in_steps=False) == ab.timed_repeats(sized, in_steps=True) == 15


def test_speed_rounds_are_sized_by_the_quality_pass_or_a_sizing_run() -> None:
    executor = FakeExecutor({})  # trains at 1,000 img/s; the tiny matrix has 256 training images
    _run(executor)
    per_cell: dict[str, set[int]] = {}
    for _, key, _, repeats in executor.calls[4:]:
        per_cell.setdefault(key, set()).add(repeats)
    # ceil(1 s x ~1000 img/s / 256 images) = 4 or 5 timed repeats, the same for both sides in every round
    assert all(len(repeats) == 1 and repeats <= {4, 5} for repeats in per_cell.values())
    executor = FakeExecutor({})
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1]))
    ab.run_ab([_side("base", matrix=matrix), _side("cand", matrix=matrix)], [matrix.cells()[0].key],
              ab.Settings(margins=MARGINS), executor, quality=False, clock=executor.clock)
    assert executor.calls[0] == ("base", matrix.cells()[0].key, 2, 1) and executor.calls[1][3] in (4, 5)


def test_each_model_trains_once_per_side_and_the_rounds_time_its_weights() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1, 2]))
    one_thread, two_threads = (next(c.key for c in matrix.cells() if c.threads == n) for n in (1, 2))
    executor = FakeExecutor({}, quality_change={"cand": {"quality.psnr_db": 19.7}})
    outcome = ab.run_ab([_side("base", matrix=matrix), _side("cand", matrix=matrix)], [one_thread, two_threads],
                        ab.Settings(margins=MARGINS, min_rounds=2, max_rounds=2), executor, clock=executor.clock)
    quality_pass = list(zip(executor.calls[:4], executor.trains[:4]))
    # The model trains first, in its most-threads cell, once per side; its 1-thread cell times those weights.
    assert {(label, key) for (label, key, _, _), trains in quality_pass if trains} == {("base", two_threads),
                                                                                      ("cand", two_threads)}
    assert [key for (_, key, _, _), _ in quality_pass] == [two_threads] * 2 + [one_thread] * 2
    for label in ("base", "cand"):
        assert outcome.quality_results[label][one_thread].info["trained_by"] == two_threads
    assert len(executor.trains) == 4 + 2 * 4 and not any(executor.trains[4:])  # rounds: the kept weights only
    # One model, one change: judged once, under the cell that trained it, not once per thread count.
    assert [(q.key, q.verdict) for q in outcome.quality["cand"] if q.metric == "quality.psnr_db"] == [
        (two_threads, "regression")]


def test_rounds_train_their_own_weights_without_a_pass_or_on_an_older_revision(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1]))
    keys = [cell.key for cell in matrix.cells()]
    settings = ab.Settings(margins=MARGINS, min_rounds=2, max_rounds=2)
    executor = FakeExecutor({})
    ab.run_ab([_side("base", matrix=matrix), _side("cand", matrix=matrix)], keys, settings, executor, quality=False,
              clock=executor.clock)
    assert all(executor.trains)  # --no-quality: no weights kept, each run trains its short run
    (tmp_path / "aebench").mkdir()
    (tmp_path / "aebench" / "config.py").write_text("# a worker from before [train_timing]\n")
    old = ab.Side("old", Revision("old", "o" * 40, "old", "2026-01-01T00:00:00+00:00", tmp_path), matrix)
    assert not old.shares_weights
    executor = FakeExecutor({})
    ab.run_ab([old, _side("cand", matrix=matrix)], keys, settings, executor, clock=executor.clock)
    assert [trains for (label, *_), trains in zip(executor.calls, executor.trains) if label == "old"] == [True] * 3


def test_calibration_trains_on_the_base_once_and_every_side_of_its_revision_times_those_weights() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1]))
    revision = _side("base").revision
    sides = [ab.Side("base", revision, matrix), ab.Side("A/A", revision, matrix),
             ab.Side("spike 20%", revision, matrix, 0.2)]
    executor = FakeExecutor({}, sides=3)
    outcome = ab.run_ab(sides, [cell.key for cell in matrix.cells()],
                        ab.Settings(margins=MARGINS, min_rounds=2, max_rounds=2), executor, quality=False,
                        train_on_base=True, clock=executor.clock)
    assert executor.calls[0][0] == "base" and executor.calls[0][2] == matrix.epochs and executor.trains[0]
    assert len(executor.calls) == 1 + 2 * 3 and not any(executor.trains[1:])
    assert outcome.quality == {} and outcome.quality_results["base"] == {}  # a training pass judges no quality


def test_orders_are_balanced_in_every_prefix() -> None:
    orders = ab.balanced_orders(20, 2, random.Random(1))
    # Rounds stop early (settled, budget): whatever prefix ran, AB and BA are within one round of each other.
    for ran in range(1, 21):
        assert abs(orders[:ran].count([0, 1]) - orders[:ran].count([1, 0])) <= 1, ran
    assert orders != [[0, 1], [1, 0]] * 10 and orders != [[1, 0], [0, 1]] * 10  # random within each block
    assert len(ab.balanced_orders(11, 2, random.Random(1))) == 11
    three = ab.balanced_orders(6, 3, random.Random(1))
    assert all(sorted(order) == [0, 1, 2] for order in three)
    for block in (three[:3], three[3:]):  # every side takes every position once per block
        assert all(sorted(order[position] for order in block) == [0, 1, 2] for position in range(3))


def test_one_epoch_fewer_is_a_quality_regression_with_exact_figures() -> None:
    worse = {"quality.psnr_db": 19.7, "quality.acc_denoised": 0.93, "quality.gain_db": 4.7}
    outcome = _run(FakeExecutor({}, quality_change={"cand": worse}))
    regressions = {(q.metric, q.base, q.candidate) for q in outcome.quality["cand"] if q.verdict == "regression"}
    assert ("quality.psnr_db", 20.0, 19.7) in regressions and ("quality.acc_denoised", 0.95, 0.93) in regressions
    assert outcome.exit_status(strict=False) == 1
    text = ab.format_text(outcome)
    assert "19.70" in text and "-0.3" in text and "differ w[] -> w[('qualit" in text  # figures, difference, weights
    rows = ab.quality_rows(outcome)
    assert {(row["weights_sha256_base"], row["weights_identical"]) for row in rows} == {("w[]", False)}


def test_a_quality_difference_inside_the_margin_is_reported_but_passes() -> None:
    outcome = _run(FakeExecutor({}, quality_change={"cand": {"quality.psnr_db": 19.95}}))
    psnr = [q for q in outcome.quality["cand"] if q.metric == "quality.psnr_db"]
    assert {q.verdict for q in psnr} == {"same"} and psnr[0].difference == pytest.approx(-0.05)
    assert outcome.exit_status(strict=False) == 0
    assert "-0.05" in ab.format_text(outcome)


def test_json_rows_carry_what_a_ci_reads(tmp_path: Path) -> None:
    outcome = _run(FakeExecutor({"cand": 1.25}))
    ab.write_json(outcome, tmp_path / "ab.json")
    document = json.loads((tmp_path / "ab.json").read_text())
    assert document["regressions"] == outcome.regressions() > 0
    for row in document["rows"]:
        assert {"key", "metric", "verdict", "change_pct", "ci_low_pct", "ci_high_pct", "rounds"} <= set(row)
        assert row["verdict"] in ("regression", "improvement", "same", "unknown")
    speed = [row for row in document["rows"] if row["kind"] == "speed"]
    assert all(row["ci_low_pct"] <= row["change_pct"] <= row["ci_high_pct"] for row in speed)
    assert "| cell" in ab.format_markdown(outcome)
    # The raw rounds travel with each verdict, with the order the sides ran in, so the verdict can be recomputed.
    for row in speed:
        assert len(row["base_rounds"]) == len(row["candidate_rounds"]) == row["rounds"] == outcome.rounds.count
        recomputed = stats.compare_rounds(row["key"], row["metric"], row["base_rounds"], row["candidate_rounds"],
                                          higher_is_better=row["metric"].endswith("_ips"),
                                          margin_pct=row["margin_pct"])
        assert recomputed.change_pct == pytest.approx(row["change_pct"])
    orders = document["round_orders"]
    assert set(orders) == {row["key"] for row in speed}
    for per_key in orders.values():
        assert len(per_key) == outcome.rounds.count and all(sorted(order) == ["base", "cand"] for order in per_key)
    assert {tuple(order) for order in orders[speed[0]["key"]]} == {("base", "cand"), ("cand", "base")}


@pytest.mark.parametrize(("text", "expected"), [
    ("speed:10%", {"speed.train_ips": 10.0, "speed.latency_b1_p99_ms": 10.0}),
    ("speed.train_ips:2", {"speed.train_ips": 2.0}),
    ("quality.psnr_db:0.2", {"quality.psnr_db": 0.2}),
])
def test_margins(text: str, expected: dict[str, float]) -> None:
    parsed = parse_margin(text, MARGINS)
    for metric, value in expected.items():
        assert parsed[metric] == value


def test_default_margins_call_a_slower_tail_like_a_slower_median() -> None:
    """A steady 8% slowdown of every batch-1 call, its rounds jittered by 1%, is a regression of p50 and p99 alike
    under the registry's default margins: the tail gets no wider margin than the median (a 10% one missed it)."""
    rng = np.random.default_rng(0)
    base = 0.4 * np.exp(rng.normal(0.0, 0.01, 11))
    candidate = base * 1.08 * np.exp(rng.normal(0.0, 0.01, 11))
    margins = REGISTRY.margins()
    comparisons = [stats.compare_rounds("conv", metric, base, candidate, higher_is_better=False,
                                        margin_pct=margins[metric])
                   for metric in ("speed.latency_b1_p50_ms", "speed.latency_b1_p99_ms")]
    assert [c.verdict for c in stats.decide(comparisons)] == ["regression", "regression"]


@pytest.mark.parametrize("text", ["speed", "speed:-1%", "nope:5%", "quality.psnr_db:0.1%", "speed:abc", "quality:0.1"])
def test_bad_margins(text: str) -> None:
    with pytest.raises(UserError, match="--margin"):
        parse_margin(text, MARGINS)


def test_settings_are_validated() -> None:
    with pytest.raises(UserError, match="--max-rounds"):
        ab.Settings(min_rounds=6, max_rounds=3, margins=MARGINS)
    with pytest.raises(UserError, match="--budget-s"):
        ab.Settings(budget_s=0, margins=MARGINS)


def test_calibration_counts_false_alarms_and_detections() -> None:
    executor = FakeExecutor({"spike 20%": 1.2}, sides=3)
    sides = [_side("base"), _side("A/A"), _side("spike 20%", spike=0.2)]
    outcome = ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()], ab.Settings(margins=MARGINS), executor,
                        quality=False, clock=executor.clock)
    table = ab.calibration_summary([outcome])
    aa = table[table["spike_pct"] == 0]
    spiked = table[table["spike_pct"] == 20]
    assert int(aa["regressions"].sum()) == 0 and int(aa["comparisons"].sum()) == 8
    assert int(spiked["regressions"].sum()) == 4  # the conv cell's 4 figures; the dense cell is not spiked here
    assert "false alarms (A/A) on cpu1: 0 of 8" in ab.format_calibration(table)
    by_metric = ab.calibration_summary([outcome], by=("spike_pct", "where", "metric")).set_index(["spike_pct",
                                                                                                 "metric"])
    assert len(by_metric) == 8 and set(by_metric.loc[20, "regressions"]) == {1}  # each metric on the conv cell
    # The median change over both cells: the spiked conv cell's 20% slower figures and the unspiked dense cell's.
    assert by_metric.loc[(20, "speed.latency_b1_p50_ms"), "median_change_pct"] == pytest.approx(10.0, abs=1.5)
    comparisons = ab.calibration_comparisons([outcome])
    assert len(comparisons) == 16 and set(comparisons["experiment"]) == {1}
    cells = ab.calibration_summary([outcome], unit="cell").set_index("spike_pct")
    assert cells.loc[0, "comparisons"] == 2 and cells.loc[0, "regressions"] == 0
    assert cells.loc[20, "comparisons"] == 2 and cells.loc[20, "regressions"] == 1  # the conv cell, once
    runs = ab.calibration_summary([outcome], unit="run").set_index("spike_pct")
    assert list(runs["comparisons"]) == [1, 1] and list(runs["regressions"]) == [0, 1]
    assert "false alarms (A/A): 0 of 1 runs (0.0%)" in ab.format_calibration(runs.reset_index(), "run")


def test_calibration_counts_a_cell_or_a_run_once_whatever_its_figures() -> None:
    rows = [{"experiment": experiment, "side": side, "spike_pct": spike, "where": "cpu1", "key": key, "metric": metric,
             "verdict": verdict, "regression": verdict == "regression", "unknown": verdict == "unknown"}
            for experiment in (1, 2) for side, spike, verdicts in (("A/A", 0, ["same", "unknown"]),
                                                                   ("spike 20%", 20, ["regression", "regression"]))
            for key in ("a", "b") for metric, verdict in zip(("m1", "m2"), verdicts)]
    frame = pd.DataFrame(rows)
    frame.loc[(frame["experiment"] == 2) & (frame["side"] == "spike 20%") & (frame["key"] == "b"), "regression"] = False
    cells = ab.calibration_summary(frame, unit="cell").set_index("spike_pct")
    assert cells.loc[0, "comparisons"] == 4 and cells.loc[0, "regressions"] == 0 and cells.loc[0, "unknown"] == 4
    assert cells.loc[20, "comparisons"] == 4 and cells.loc[20, "regressions"] == 3 and cells.loc[20, "unknown"] == 0
    runs = ab.calibration_summary(frame, unit="run").set_index("spike_pct")
    assert runs.loc[20, "comparisons"] == 2 and runs.loc[20, "regressions"] == 2  # one cell of a run is enough
    with pytest.raises(ValueError, match="unit"):
        ab.calibration_summary(frame, unit="figure")


def test_calibration_json_has_rates_by_metric_and_every_comparison(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import json
    from types import SimpleNamespace

    executor = FakeExecutor({"spike 20%": 1.2}, sides=3)
    sides = [_side("base"), _side("A/A"), _side("spike 20%", spike=0.2)]
    outcome = ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()], ab.Settings(margins=MARGINS), executor,
                        quality=False, clock=executor.clock)
    assert ab._report_calibration([outcome], SimpleNamespace(json=tmp_path / "calibration.json")) == 0
    document = json.loads((tmp_path / "calibration.json").read_text())
    assert document["experiments"] == 1 and len(document["by_metric"]) == 8 and len(document["comparisons"]) == 16
    assert len(document["by_cell"]) == 2 and [row["regressions"] for row in document["by_run"]] == [0, 1]
    assert "by metric:" in capsys.readouterr().out
    # Each comparison carries what its verdict came from: recomputing it from the file gives the same verdict.
    from aebench import stats

    family = [row for row in document["comparisons"] if row["side"] == "spike 20%"]
    again = stats.decide([stats.compare_rounds(row["key"], row["metric"], row["base_rounds"], row["candidate_rounds"],
                                               higher_is_better=REGISTRY[row["metric"]].better == "higher",
                                               margin_pct=row["margin_pct"]) for row in family])
    assert [c.verdict for c in again] == [row["verdict"] for row in family]
    assert [c.p_regression_adjusted for c in again] == pytest.approx([row["p_regression_adjusted"] for row in family])
    assert {len(row["base_rounds"]) for row in family} == {family[0]["rounds"]}


def test_pool_reads_calibrations_run_apart_as_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`aebench ab --pool` gives the rates of several `--calibrate --json` files as if one calibration had run
    their experiments, each file's numbered apart (two files of experiment 1 are two runs, not one)."""
    from types import SimpleNamespace

    from aebench.cli import main

    paths = []
    for name in ("first", "second"):
        executor = FakeExecutor({"spike 20%": 1.2}, sides=3)
        sides = [_side("base"), _side("A/A"), _side("spike 20%", spike=0.2)]
        outcome = ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()], ab.Settings(margins=MARGINS),
                            executor, quality=False, clock=executor.clock)
        paths.append(tmp_path / f"{name}.json")
        assert ab._report_calibration([outcome], SimpleNamespace(json=paths[-1])) == 0
    capsys.readouterr()
    assert main(["ab", "--pool", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "false alarms (A/A) on cpu1: 0 of 16 comparisons" in out
    assert "detections of a 20% spike-in on cpu1: 8 of 16 comparisons" in out  # the conv cell's 4 figures, twice
    assert "false alarms (A/A): 0 of 2 runs" in out and "detections of a 20% spike-in: 2 of 2 runs" in out
    # --margin judges the same rounds again: at the margins they ran with, the recorded rates come back; past the
    # spike's 20%, no round can call it.
    assert main(["ab", "--pool", *map(str, paths), "--margin", "speed.latency_b1_p99_ms:10%"]) == 0
    again = capsys.readouterr().out
    assert "judged again from the rounds" in again and again.split("\n", 3)[3] == out.split("\n", 2)[2]
    assert main(["ab", "--pool", *map(str, paths), "--margin", "speed:30%"]) == 0
    assert "detections of a 20% spike-in on cpu1: 0 of 16 comparisons" in capsys.readouterr().out
    (tmp_path / "other.json").write_text('{"rows": []}')
    for argv, message in ((["ab", "--pool", str(tmp_path / "missing.json")], "missing.json is invalid"),
                          (["ab", "--pool", str(tmp_path / "other.json")], "other.json is invalid"),
                          (["ab", "--calibrate", "--pool", str(paths[0])], "runs nothing"),
                          (["ab", "--pool", str(paths[0]), "--margin", "speed:-1%"], "--margin")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_a_cell_that_crashes_only_on_the_candidate_is_a_regression() -> None:
    executor = FakeExecutor({})
    executor.crashes = {("cand", "conv")}
    outcome = _run(executor, max_rounds=6)
    assert outcome.broken() == [next(c.key for c in Matrix.from_dict(tiny_matrix_dict(variants=["conv"])).cells())]
    assert outcome.exit_status(strict=False) == 1
    text = ab.format_text(outcome)
    assert "failed on the candidate and never on the base" in text and "ValueError: boom" in text
    both = FakeExecutor({})
    both.crashes = {("cand", "conv"), ("base", "conv")}
    assert _run(both, max_rounds=6).broken() == []  # broken on both sides: not this change's doing


def test_each_side_runs_its_own_matrix_and_the_difference_is_named() -> None:
    executor = FakeExecutor({})
    base = _side("base", matrix=Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1], epochs=3)))
    cand = _side("cand", matrix=Matrix.from_dict(tiny_matrix_dict(variants=["conv"], threads=[1], epochs=2)))
    outcome = ab.run_ab([base, cand], [base.matrix.cells()[0].key], ab.Settings(margins=MARGINS), executor,
                        clock=executor.clock)
    quality_epochs = {label: epochs for label, _, epochs, _ in executor.calls[:2]}
    assert quality_epochs == {"base": 3, "cand": 2}
    assert outcome.matrix_differences() == ["epochs: 3 -> 2"]
    assert "the candidate's matrix differs from the base's (part of the change): epochs: 3 -> 2" in ab.format_text(outcome)


def test_quality_figures_without_a_margin_are_reported_as_changed_not_judged(tmp_path: Path) -> None:
    outcome = _run(FakeExecutor({}, quality_change={"cand": {"quality.gain_db": 4.0}}))  # gain has no margin
    assert outcome.exit_status(strict=False) == 0
    table = ab.quality_table(outcome)
    assert set(table.loc[table["metric"] == "gain", "verdict"]) == {"changed"}
    assert "every quality figure is bit-identical" not in ab.format_text(outcome)
    ab.write_json(outcome, tmp_path / "ab.json")
    document = json.loads((tmp_path / "ab.json").read_text())
    assert {row["metric"] for row in document["quality_changes"]} == {"quality.gain_db"}
    assert all(row["metric"] != "quality.gain_db" for row in document["rows"])


def test_side_labels_become_file_names() -> None:
    assert _side("A/A").slug == "A_A" and _side("spike 10%").slug == "spike_10_"


def test_calibration_sides_run_on_worker_hosts(tmp_path: Path) -> None:
    """HostExecutor with the stand-in host (tests/fake_host.py): sides named "A/A" and "spike 10%" start hosts every
    round, run their cells in fresh children and close cleanly."""
    import sys

    fake_host = Path(__file__).with_name("fake_host.py")
    executor = ab.HostExecutor(tmp_path / "data.npz", tmp_path / "cache", tmp_path / "scratch",
                               command=[sys.executable, str(fake_host), "ok,ok"])
    sides = [_side("base"), _side("A/A"), _side("spike 10%", spike=0.1)]
    try:
        outcome = ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()],
                            ab.Settings(margins=MARGINS, min_rounds=2, max_rounds=2), executor, quality=False)
    finally:
        executor.close()
    assert outcome.rounds.count == 2 and not outcome.rounds.failures
    logs = sorted(path.name for path in (tmp_path / "scratch").glob("host-*.log"))
    assert "host-001-A_A-tensorflow.log" in logs and "host-002-spike_10_-tensorflow.log" in logs


def test_allow_concurrent_marks_every_result_so_no_round_counts(tmp_path: Path) -> None:
    import sys

    from aebench import machinelock

    fake_host = Path(__file__).with_name("fake_host.py")
    beside = machinelock.MachineLock(tmp_path / "machine.lock", exclusive=False)  # another run held the machine
    executor = ab.HostExecutor(tmp_path / "data.npz", tmp_path / "cache", tmp_path / "scratch",
                               command=[sys.executable, str(fake_host), "ok,ok"], mark=beside.mark)
    sides = [_side("base"), _side("cand")]
    try:
        outcome = ab.run_ab(sides, [cell.key for cell in sides[0].matrix.cells()],
                            ab.Settings(margins=MARGINS, min_rounds=2, max_rounds=2), executor, quality=False)
    finally:
        executor.close()
    assert set(outcome.rounds.contaminated) == {"base", "cand"} and outcome.speed["cand"] == []


def test_duet_runs_both_sides_at_once_on_swapping_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from aebench import machine

    monkeypatch.setattr(machine, "usable_cpus", lambda: [0, 1])
    executor = FakeExecutor({"cand": 1.25})
    outcome = _run(executor, duet=True, max_rounds=8, min_rounds=8)
    speed_runs = executor.cores[4:]  # after the quality pass, which runs one side at a time on every core
    assert all(cores is None for _, cores in executor.cores[:4])
    assert {cores for _, cores in speed_runs} == {(0,), (1,)}
    base_cores = [cores for label, cores in speed_runs if label == "base"]
    assert base_cores.count((0,)) == base_cores.count((1,))  # the cores swap in balanced order
    assert outcome.regressions() > 0


def test_duet_refuses_more_than_one_thread_and_calibration() -> None:
    cells = Matrix.from_dict(tiny_matrix_dict(threads=[1, 2])).cells()
    with pytest.raises(UserError, match="threads=\\[1\\]"):
        ab.check_duet(cells, 2)
    with pytest.raises(UserError, match="needs 2 usable CPUs"):
        ab.check_duet(cells[:1], 1)


def test_a_figure_the_candidate_stops_reporting_is_a_regression() -> None:
    executor = FakeExecutor({})
    executor.lose = {"cand": ["speed.train_ips", "quality.psnr_db"]}
    outcome = _run(executor, max_rounds=6)
    assert {metric for _, metric in outcome.lost_speed()} == {"speed.train_ips"}
    lost_quality = [q for q in outcome.quality["cand"] if q.metric == "quality.psnr_db"]
    assert {q.verdict for q in lost_quality} == {"regression"}
    assert outcome.exit_status(strict=False) == 1
    assert "never on the candidate" in ab.format_text(outcome)
    assert f"measured {REGISTRY.label('speed.train_ips')} on the base only." in ab.format_markdown(outcome)  # why


def test_too_few_rounds_are_said_and_strict_shows_in_the_exit_line() -> None:
    outcome = _run(FakeExecutor({}, noise=0.3), max_rounds=6)  # a lone change among 8 comparisons needs 8 rounds
    text = ab.format_text(outcome, strict=True)
    # 8 x 2**-6 <= k x 0.05 from k = 3 figures moving together
    assert ("6 rounds cannot call a change in one of these 8 speed comparisons alone: that needs 8 rounds; changes in "
            "3 or more figures at once can be called") in text
    assert "(exit 1)" in text and "(exit 1" not in ab.format_text(outcome)


def test_the_help_states_the_defaults_ab_uses() -> None:
    """`aebench ab --help` restates Settings' defaults (importing ab to read them would slow every command by the
    0.7 s its imports take): this keeps the two in step."""
    import argparse

    from aebench.cli import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in commands.choices["ab"]._actions}
    defaults = ab.Settings()
    for dest, value in [("min_rounds", defaults.min_rounds), ("max_rounds", defaults.max_rounds),
                        ("budget_s", defaults.budget_s), ("speed_train_size", defaults.speed_train_size),
                        ("speed_train_s", defaults.speed_train_s), ("seed", defaults.seed)]:
        assert helps[dest].endswith(f"(default {value:g})"), (dest, helps[dest])
