"""Verdicts from paired rounds and exact quality figures (aebench.stats), on synthetic samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from aebench import stats


def _rounds(n: int, ratio: float, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Base figures around 1000 drifting round to round, candidate = base x ratio x per-round noise."""
    rng = np.random.default_rng(seed)
    base = 1000 * np.exp(rng.normal(0, 0.2, n))  # between-round drift: cancels in the ratio
    candidate = base * ratio * np.exp(rng.normal(0, noise, n))
    return base, candidate


def _verdict(base: np.ndarray, candidate: np.ndarray, *, higher: bool = True, margin: float = 5.0) -> stats.SpeedComparison:
    return stats.decide([stats.compare_rounds("cell", "speed.x", base, candidate, higher_is_better=higher,
                                              margin_pct=margin)])[0]


def test_interval_is_the_exact_signed_rank_inversion() -> None:
    """The interval's ends are the shifts at which scipy's exact two-sided Wilcoxon test turns significant."""
    rng = np.random.default_rng(3)
    for n in (6, 9, 14):
        values = rng.normal(0.1, 0.05, n)
        interval = stats.hodges_lehmann(values)
        for end, inward in ((interval.low, 1), (interval.high, -1)):
            just_inside, just_outside = end + inward * 1e-9, end - inward * 1e-6
            assert scipy_stats.wilcoxon(values - just_inside, method="exact").pvalue >= 0.05
            assert scipy_stats.wilcoxon(values - just_outside, method="exact").pvalue < 0.05


def test_hodges_lehmann_estimate_and_small_samples() -> None:
    assert stats.hodges_lehmann([1.0, 2.0, 3.0]).estimate == 2.0
    too_few = stats.hodges_lehmann([0.1, 0.2, 0.3, 0.4, 0.5])  # 5 rounds: no exact 95% interval exists
    assert math.isinf(too_few.low) and math.isinf(too_few.high) and too_few.estimate == pytest.approx(0.3)
    assert math.isfinite(stats.hodges_lehmann(np.arange(stats.MIN_ROUNDS, dtype=float)).low)
    with pytest.raises(ValueError, match="no finite values"):
        stats.hodges_lehmann([math.nan])


@pytest.mark.parametrize(("higher", "ratio", "expected"), [
    (True, 0.8, "regression"),  # throughput down 20%
    (True, 1.25, "improvement"),
    (False, 1.25, "regression"),  # latency up 25%
    (False, 0.8, "improvement"),
    (True, 1.0, "same"),
    (False, 1.0, "same"),
])
def test_every_verdict_path(higher: bool, ratio: float, expected: str) -> None:
    base, candidate = _rounds(10, ratio, noise=0.005)
    result = _verdict(base, candidate, higher=higher)
    assert result.verdict == expected
    assert result.change_pct == pytest.approx((ratio - 1) * 100, abs=1.0)
    assert result.ci_low_pct <= result.change_pct <= result.ci_high_pct


def _wide() -> tuple[np.ndarray, np.ndarray]:
    """A 3% slowdown under symmetric round-to-round scatter of +-15%: wider than the 5% margin."""
    base = np.full(8, 1000.0)
    return base, base * 0.97 * np.exp([-0.15, 0.15, -0.1, 0.1, -0.05, 0.05, -0.12, 0.12])


def test_noise_wider_than_the_margin_is_unknown_not_a_regression() -> None:
    base, candidate = _wide()
    result = _verdict(base, candidate)
    assert result.verdict == "unknown"
    assert result.ci_low_pct < -5 < result.ci_high_pct


def test_a_change_inside_the_margin_is_same_even_when_real() -> None:
    base, candidate = _rounds(12, 0.98, noise=0.002)  # a real 2% slowdown, below the 5% margin
    assert _verdict(base, candidate).verdict == "same"
    assert _verdict(base, candidate, margin=1.0).verdict == "regression"


def test_too_few_rounds_cannot_call_anything() -> None:
    base, candidate = _rounds(5, 0.5, noise=0.001)
    assert _verdict(base, candidate).verdict == "unknown"


def test_a_lone_change_needs_more_evidence_when_many_figures_are_tested() -> None:
    """6 rounds, all worse: p = 1/64 alone is a regression; among 20 tested figures where nothing else moved, the
    adjustment asks for more (its first step, p <= 0.05 / 20, is Holm's)."""
    base, candidate = _rounds(6, 0.8, noise=0.001)
    alone = _verdict(base, candidate)
    assert alone.verdict == "regression" and alone.p_regression == pytest.approx(1 / 64)
    unchanged = [stats.compare_rounds(f"other{i}", "speed.x", *_rounds(6, 1.0, 0.001, seed=i), higher_is_better=True,
                                      margin_pct=5.0) for i in range(19)]
    crowd = stats.decide([stats.compare_rounds("cell", "speed.x", base, candidate, higher_is_better=True,
                                               margin_pct=5.0), *unchanged])
    assert crowd[0].verdict == "unknown" and crowd[0].p_regression_adjusted == pytest.approx(20 / 64)


def test_figures_that_move_together_vouch_for_each_other() -> None:
    """8 rounds, 8 of 16 figures all worse (p = 1/256 each): Holm would stop at 16/256 > 0.05 and call none;
    Benjamini-Hochberg compares the 8th smallest p with 8 x 0.05 / 16 and calls all 8, and none of the others."""
    moved = [stats.compare_rounds(f"slow{i}", "speed.x", *_rounds(8, 0.8, 0.001, seed=i), higher_is_better=True,
                                  margin_pct=5.0) for i in range(8)]
    still = [stats.compare_rounds(f"other{i}", "speed.x", *_rounds(8, 1.0, 0.001, seed=10 + i), higher_is_better=True,
                                  margin_pct=5.0) for i in range(8)]
    decided = stats.decide(moved + still)
    assert [c.verdict for c in decided] == ["regression"] * 8 + ["same"] * 8
    assert decided[0].p_regression_adjusted == pytest.approx(1 / 256 * 16 / 8)  # p m / k, with k = 8 of m = 16
    assert stats.rounds_needed(16, changed=8) == stats.MIN_ROUNDS and stats.rounds_needed(16, changed=1) == 9
    assert stats.fewest_callable(16, 8) == 2 and stats.fewest_callable(16, 9) == 1
    assert stats.fewest_callable(16, 6) == 5 and stats.fewest_callable(16, 5) is None  # the interval needs 6


def test_benjamini_hochberg_adjustment() -> None:
    """By hand: sorted p 0.01, 0.03, 0.04, 0.5 of m = 4 give m p / rank = 0.04, 0.06, 0.0533, 0.5, then a running
    minimum from the largest down."""
    np.testing.assert_allclose(stats.adjust([0.01, 0.04, 0.03, 0.5]), [0.04, 0.053333, 0.053333, 0.5], rtol=1e-5)
    assert len(stats.adjust([])) == 0


def test_the_detectable_change_is_what_these_rounds_would_call() -> None:
    """The detectable slowdown is the margin plus the interval's upper reach: a slowdown just past it (counted from
    where these A/A rounds happen to sit) is called a regression, one just short of it is not."""
    base, candidate = _rounds(12, 1.0, noise=0.03, seed=4)
    aa = _verdict(base, candidate)
    detectable = aa.detectable_pct(family_size=1)
    assert 5.0 < detectable < 15.0
    threshold = math.log1p(detectable / 100) + aa.gain.estimate  # in log units, from the A/A estimate
    slower = lambda factor: candidate * math.exp(-threshold * factor)  # noqa: E731 - throughput drops
    assert _verdict(base, slower(1.03)).verdict == "regression"
    assert _verdict(base, slower(0.97)).verdict != "regression"


def test_too_few_rounds_for_the_family_detect_no_lone_change() -> None:
    assert stats.rounds_needed(1) == stats.MIN_ROUNDS and stats.rounds_needed(16) == 9 and stats.rounds_needed(144) == 12
    comparison = _verdict(*_rounds(8, 1.0, noise=0.01))
    assert math.isfinite(comparison.detectable_pct(family_size=16 // 4))
    assert math.isinf(comparison.detectable_pct(family_size=16))  # 16 x 2**-8 > 0.05: a lone change cannot be called
    for changed in (0, 17):
        with pytest.raises(ValueError, match="allowed 1 .. family_size"):
            stats.rounds_needed(16, changed)


def test_rounds_with_missing_figures_are_dropped() -> None:
    ratios = stats.log_ratios([1.0, math.nan, 2.0, 0.0], [2.0, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(ratios, [math.log(2.0), 0.0])
    with pytest.raises(ValueError, match="equal lengths"):
        stats.log_ratios([1.0], [1.0, 2.0])


def test_settled_is_false_while_any_verdict_is_unknown() -> None:
    clear = _verdict(*_rounds(10, 0.8, 0.001))
    vague = _verdict(*_wide())
    assert stats.settled([clear]) and not stats.settled([clear, vague])


@pytest.mark.parametrize(("base", "candidate", "higher", "expected"), [
    (20.0, 20.0, True, "same"),
    (20.0, 19.95, True, "same"),  # worse, but by less than the 0.1 dB margin: reported, not a regression
    (20.0, 19.8, True, "regression"),
    (20.0, 20.3, True, "improvement"),
    (0.10, 0.12, False, "regression"),  # a lower-is-better figure that grew past its margin
])
def test_quality_verdicts(base: float, candidate: float, higher: bool, expected: str) -> None:
    result = stats.quality_verdict("cell", "quality.x", base, candidate, higher_is_better=higher, margin=0.1
                                   if higher else 0.01)
    assert result.verdict == expected
    assert result.difference == pytest.approx(candidate - base)


def test_runs_against_runs_use_welch_on_log_figures() -> None:
    slower = stats.decide([stats.compare_runs("cell", "speed.x", [100, 102, 98, 101], [80, 81, 79, 80.5],
                                              higher_is_better=True, margin_pct=5.0)])[0]
    assert slower.verdict == "regression" and slower.change_pct == pytest.approx(-20.1, abs=0.2)
    assert slower.gain.estimate == pytest.approx(np.mean(np.log([80, 81, 79, 80.5])) - np.mean(np.log([100, 102, 98, 101])))
    noisy = stats.decide([stats.compare_runs("cell", "speed.x", [100, 130, 75], [90, 120, 70], higher_is_better=True,
                                             margin_pct=5.0)])[0]
    assert noisy.verdict == "unknown"
    with pytest.raises(ValueError, match="at least two runs"):
        stats.compare_runs("cell", "speed.x", [100], [90, 91], higher_is_better=True, margin_pct=5.0)


def test_history_noise_ignores_a_step_change() -> None:
    steady = [100, 101, 99, 100, 101, 99]
    with_step = steady + [80, 81, 79, 80, 81, 79]
    plain_sd = float(np.std(np.log(with_step), ddof=1))
    robust = stats.successive_difference_sd(with_step)
    assert robust is not None and robust < plain_sd / 5
    rng = np.random.default_rng(0)
    gaussian = 100 * np.exp(rng.normal(0, 0.05, 4000))
    assert stats.successive_difference_sd(gaussian) == pytest.approx(0.05, rel=0.05)
    assert stats.successive_difference_sd([1.0, 2.0]) is None
    assert stats.hidden_change_pct(0.1) == pytest.approx(math.expm1(1.959964 * math.sqrt(2) * 0.1) * 100, rel=1e-4)
