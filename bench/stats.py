"""Verdicts on speed changes from paired rounds, and on quality changes from exact figures.

Noise on a shared machine lives between processes and between minutes, not within one timing loop, so a speed change
is judged from **rounds**: each round runs the base and the candidate once each, in random order, and gives one
log ratio ``log(candidate / base)`` per figure. Drift that hits a whole round cancels in its ratio.

For each figure this module takes the rounds' log ratios, oriented so that positive means better, and computes:

- the **Hodges-Lehmann estimate** of their centre (the median of the pairwise means, the estimator that goes with the
  Wilcoxon signed-rank test) and its exact **confidence interval** (order statistics of the pairwise means, cut at the
  quantile of the exact signed-rank distribution; Hollander & Wolfe, *Nonparametric Statistical Methods*, 3.2);
- two one-sided **Wilcoxon signed-rank tests** against the practical margin (scipy's exact test): "the change is worse
  than the margin" and "better than the margin". The regression p-values of all figures tested together are adjusted
  by the **Benjamini-Hochberg** step-up method (scipy's ``false_discovery_control``), the improvement p-values likewise.

Why Benjamini-Hochberg and not Holm: what a CI gate reads is the exit status, "any regression at all". When nothing
changed (an A/A comparison) both methods bound the chance of any false regression by the same 5%: under the complete
null Benjamini-Hochberg controls the family-wise error too, and its first step, a lone change, asks for the same
p <= 0.05 / m as Holm's. When something did change, the gate is right to fail, and a real slowdown moves several figures
at once (a slower model trains, infers and answers batch-1 calls more slowly): Holm still asks each of them for
family-wise evidence, Benjamini-Hochberg lets them vouch for each other, and bounds the share of false regressions
among those called by 5%. Figures timed in the same round are positively correlated, under which the method stays
valid (Benjamini & Yekutieli 2001, positive regression dependence).

A margin of m percent is a factor of 1 + m/100 either way (``log1p(m / 100)`` on the log ratios): symmetric in logs, so
a figure half as fast and one twice as fast are as far from "same"; a throughput is past a 5% margin below 1/1.05 of
the base (-4.8%) and a latency above 1.05 times it (+5%).

The verdict, Chromium Pinpoint style:

- ``regression``: the interval lies wholly beyond the margin on the worse side and the adjusted test agrees;
- ``improvement``: the same on the better side;
- ``same``: the interval lies wholly inside the margin;
- ``unknown``: anything else: the data cannot decide yet (more rounds would narrow the interval).

Quality figures need no statistics: the same code with the same seed gives bit-identical figures, so ``quality_verdict``
compares them exactly and calls a regression only past a practical margin in the metric's own unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

Verdict = Literal["regression", "improvement", "same", "unknown"]
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
# The fewest rounds whose exact two-sided 95% signed-rank interval exists: with n pairs the most extreme two-sided
# p-value is 2 / 2**n, under 0.05 from n = 6 on.
MIN_ROUNDS = 6


# -- exact signed-rank distribution and the Hodges-Lehmann interval ---------------------------------------------------


@lru_cache(maxsize=64)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0 .. n(n+1)/2 under the null: every sign pattern of ranks 1..n equally likely."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return np.cumsum(counts) / 2.0**n


def _order_statistic_index(n: int, confidence: float) -> int | None:
    """k such that the k-th smallest and k-th largest Walsh averages bound a ``confidence`` interval (1-based);
    None when n is too small for any interval at that level."""
    if n > 60:  # normal approximation of W+, accurate here and cheaper than the exact table
        mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        k = int(math.floor(mean - scipy_stats.norm.ppf(1 - (1 - confidence) / 2) * sd))
        return k if k >= 1 else None
    cdf = _signed_rank_cdf(n)
    tail = (1 - confidence) / 2
    # The largest c with P(W+ <= c - 1) <= tail; the interval is [W_(c), W_(N - c + 1)].
    allowed = np.nonzero(cdf <= tail + 1e-12)[0]
    if len(allowed) == 0:
        return None
    return int(allowed[-1]) + 1


@dataclass(frozen=True)
class Interval:
    """A location estimate and its confidence interval, in the units of the data it came from."""

    estimate: float
    low: float
    high: float
    n: int

    def __post_init__(self) -> None:
        if not (self.low <= self.estimate <= self.high) and not math.isinf(self.low) and not math.isinf(self.high):
            raise ValueError(f"interval [{self.low}, {self.high}] does not contain its estimate {self.estimate}")


def hodges_lehmann(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Hodges-Lehmann estimate of the centre of ``values`` and its exact signed-rank confidence interval.

    With too few values for an interval at ``confidence`` the bounds are infinite (the estimate is still given)."""
    data = _finite(values)
    n = len(data)
    if n == 0:
        raise ValueError("no finite values: allowed a non-empty sequence of finite numbers")
    pairs = np.add.outer(data, data)[np.triu_indices(n)] / 2.0  # the n(n+1)/2 Walsh averages
    pairs.sort()
    estimate = float(np.median(pairs))
    k = _order_statistic_index(n, confidence)
    if k is None:
        return Interval(estimate, -math.inf, math.inf, n)
    return Interval(estimate, float(pairs[k - 1]), float(pairs[len(pairs) - k]), n)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64).ravel()
    return data[np.isfinite(data)]


def signed_rank_p(values: Sequence[float] | np.ndarray, shift: float, alternative: Literal["less", "greater"]) -> float:
    """One-sided Wilcoxon signed-rank p-value for "the centre of ``values`` is below (less) / above (greater)
    ``shift``", exact for small samples (scipy)."""
    data = _finite(values) - shift
    data = data[data != 0.0]  # a round exactly on the margin says nothing either way
    if len(data) == 0:
        return 1.0
    method = "exact" if len(data) <= 50 else "approx"
    return float(scipy_stats.wilcoxon(data, alternative=alternative, method=method).pvalue)


def adjust(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of a family tested together (see the module's docstring for why)."""
    p = np.asarray(p_values, dtype=np.float64)
    if len(p) == 0:
        return p
    return np.asarray(scipy_stats.false_discovery_control(p, method="bh"), dtype=np.float64)


# -- speed: paired rounds -----------------------------------------------------------------------------------------------


def log_ratios(base: Sequence[float], candidate: Sequence[float]) -> np.ndarray:
    """Per-round ``log(candidate / base)``; a round where either side is missing or not positive is dropped."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired rounds need equal lengths: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return np.log(b[keep] / a[keep])


@dataclass(frozen=True)
class SpeedComparison:
    """One figure of one cell over paired rounds. Percentages are the candidate's change against the base in the
    figure's own direction (+20% latency is slower). ``gain`` is the interval in log units, oriented so that positive
    is better: the verdict is read from it."""

    key: str
    metric: str
    higher_is_better: bool
    margin_pct: float
    gain: Interval
    p_regression: float
    p_improvement: float
    verdict: Verdict = "unknown"
    p_regression_adjusted: float = 1.0
    p_improvement_adjusted: float = 1.0

    @property
    def rounds(self) -> int:
        return self.gain.n

    @property
    def _sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    @property
    def change_pct(self) -> float:
        return _percent(self._sign * self.gain.estimate)

    @property
    def ci_low_pct(self) -> float:
        return min(_percent(self._sign * self.gain.low), _percent(self._sign * self.gain.high))

    @property
    def ci_high_pct(self) -> float:
        return max(_percent(self._sign * self.gain.low), _percent(self._sign * self.gain.high))

    @property
    def margin_log(self) -> float:
        return math.log1p(self.margin_pct / 100)

    def detectable_pct(self, family_size: int = 1, alpha: float = ALPHA) -> float:
        """The smallest slowdown these rounds could call a regression: the margin plus how far the interval reaches
        above its estimate (a true slowdown must push that upper end below -margin), for a slowdown of this figure
        alone. Infinite when the rounds are too few to call a lone change in a family of ``family_size`` comparisons
        (see ``rounds_needed``)."""
        if self.gain.n < rounds_needed(family_size, alpha=alpha):
            return math.inf
        return _percent(self.margin_log + (self.gain.high - self.gain.estimate))


def rounds_needed(family_size: int, changed: int = 1, *, alpha: float = ALPHA) -> int:
    """The fewest paired rounds with which ``changed`` figures that moved together can be called among
    ``family_size`` comparisons: with every round on one side, the exact one-sided signed-rank p-value is 2**-n, and
    Benjamini-Hochberg calls the k smallest of m p-values when the k-th is at most ``k * alpha / m``, so it needs
    ``family_size * 2**-n <= changed * alpha``; the exact two-sided 95% interval also needs MIN_ROUNDS. With
    ``changed=1`` (a lone change, Holm's first step alike) this is when anything at all can be called."""
    if not 1 <= changed <= max(family_size, 1):
        raise ValueError(f"changed {changed!r} is invalid: allowed 1 .. family_size ({family_size})")
    return max(MIN_ROUNDS, math.ceil(math.log2(max(family_size, 1) / (changed * alpha))))


def fewest_callable(family_size: int, rounds: int, *, alpha: float = ALPHA) -> int | None:
    """How many figures must move together for ``rounds`` rounds to call them in a family of ``family_size`` (the
    inverse of ``rounds_needed``); None when not even all of them together can be called."""
    return next((changed for changed in range(1, family_size + 1)
                 if rounds_needed(family_size, changed, alpha=alpha) <= rounds), None)


def _percent(log_value: float) -> float:
    return math.expm1(log_value) * 100 if math.isfinite(log_value) else log_value


def compare_rounds(key: str, metric: str, base: Sequence[float], candidate: Sequence[float], *,
                   higher_is_better: bool, margin_pct: float, confidence: float = CONFIDENCE) -> SpeedComparison:
    """The interval and the one-sided tests of one figure's paired rounds (the verdict comes from ``decide``)."""
    if not (math.isfinite(margin_pct) and margin_pct >= 0):
        raise ValueError(f"margin_pct {margin_pct!r} is invalid: allowed a percentage >= 0")
    ratios = log_ratios(base, candidate)
    if len(ratios) == 0:
        raise ValueError(f"{key} {metric}: no round has both figures")
    gains = ratios if higher_is_better else -ratios  # positive = better, in log units
    margin = math.log1p(margin_pct / 100)
    return SpeedComparison(
        key=key, metric=metric, higher_is_better=higher_is_better, margin_pct=margin_pct,
        gain=hodges_lehmann(gains, confidence),
        p_regression=signed_rank_p(gains, -margin, "less"),
        p_improvement=signed_rank_p(gains, margin, "greater"),
    )


def decide(comparisons: Sequence[SpeedComparison], alpha: float = ALPHA) -> list[SpeedComparison]:
    """Verdicts for a family of comparisons, their p-values adjusted over the family (regressions and improvements
    apart)."""
    regression_adjusted = adjust([c.p_regression for c in comparisons])
    improvement_adjusted = adjust([c.p_improvement for c in comparisons])
    decided = []
    for comparison, p_reg, p_imp in zip(comparisons, regression_adjusted, improvement_adjusted):
        gain, margin = comparison.gain, comparison.margin_log
        if gain.high < -margin and p_reg <= alpha:
            verdict: Verdict = "regression"
        elif gain.low > margin and p_imp <= alpha:
            verdict = "improvement"
        elif -margin <= gain.low and gain.high <= margin:
            verdict = "same"
        else:
            verdict = "unknown"
        decided.append(replace(comparison, verdict=verdict, p_regression_adjusted=float(p_reg),
                               p_improvement_adjusted=float(p_imp)))
    return decided


def settled(comparisons: Sequence[SpeedComparison]) -> bool:
    """True when no verdict is ``unknown``: more rounds would not change what is reported."""
    return all(c.verdict != "unknown" for c in comparisons)


# -- quality: exact figures ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityComparison:
    key: str
    metric: str
    base: float
    candidate: float
    difference: float  # candidate - base, in the metric's unit
    margin: float  # in the metric's unit
    verdict: Verdict


def quality_verdict(key: str, metric: str, base: float, candidate: float, *, higher_is_better: bool,
                    margin: float) -> QualityComparison:
    """Bit-identical figures are ``same``; any difference is reported with its size, and is a regression only when
    worse by more than ``margin`` (an improvement when better by more)."""
    if margin < 0:
        raise ValueError(f"margin {margin!r} is invalid: allowed a number >= 0 in the metric's unit")
    difference = candidate - base
    gain = difference if higher_is_better else -difference
    if base == candidate:
        verdict: Verdict = "same"
    elif gain < -margin:
        verdict = "regression"
    elif gain > margin:
        verdict = "improvement"
    else:
        verdict = "same"
    return QualityComparison(key, metric, base, candidate, difference, margin, verdict)


# -- independent samples: runs against runs ----------------------------------------------------------------------------


def compare_runs(key: str, metric: str, base: Sequence[float], candidate: Sequence[float], *,
                 higher_is_better: bool, margin_pct: float, confidence: float = CONFIDENCE) -> SpeedComparison:
    """Stored runs that were not paired round by round: each run (or seed) is one sample of the machine's run-to-run
    noise. The interval is Welch's on the difference of mean log figures; the one-sided tests are Welch t-tests
    against the margin. The verdict comes from ``decide``, as for paired rounds."""
    if not (math.isfinite(margin_pct) and margin_pct >= 0):
        raise ValueError(f"margin_pct {margin_pct!r} is invalid: allowed a percentage >= 0")
    a, b = _positive_logs(base), _positive_logs(candidate)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{key} {metric}: each side needs at least two runs for run-level statistics")
    sign = 1.0 if higher_is_better else -1.0
    a, b = sign * a, sign * b  # positive = better
    margin = math.log1p(margin_pct / 100)
    difference = float(b.mean() - a.mean())
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        interval = Interval(difference, difference, difference, min(len(a), len(b)))
        p_reg = 0.0 if difference < -margin else 1.0
        p_imp = 0.0 if difference > margin else 1.0
    else:
        dof = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
        half = float(scipy_stats.t.ppf(1 - (1 - confidence) / 2, dof)) * se
        interval = Interval(difference, difference - half, difference + half, min(len(a), len(b)))
        p_reg = float(scipy_stats.t.cdf((difference + margin) / se, dof))  # H0: change no worse than the margin
        p_imp = float(scipy_stats.t.sf((difference - margin) / se, dof))
    return SpeedComparison(key=key, metric=metric, higher_is_better=higher_is_better, margin_pct=margin_pct,
                           gain=interval, p_regression=p_reg, p_improvement=p_imp)


def bootstrap_log_ratio(base: Sequence[float], candidate: Sequence[float],
                        statistic: Callable[..., np.ndarray], *, confidence: float = CONFIDENCE,
                        n_resamples: int = 2000, seed: int = 0) -> Interval:
    """``log(statistic(candidate) / statistic(base))`` and its percentile bootstrap interval, each sample resampled on
    its own (scipy.stats.bootstrap, seeded so a report is reproducible). ``statistic(values, axis=...)`` must be
    vectorised, e.g. ``lambda x, axis: np.percentile(x, 50, axis=axis)``.

    It sees only the spread of the samples it is given: samples from within one run leave out the noise between runs.
    Percentile rather than BCa: BCa's jackknife costs memory quadratic in thousands of samples, and a quantile
    statistic is too discrete for its acceleration estimate."""
    a, b = _finite(base), _finite(candidate)
    a, b = a[a > 0], b[b > 0]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each side needs at least two positive samples for a bootstrap interval")

    def log_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.log(statistic(y, axis=axis) / statistic(x, axis=axis))

    estimate = float(log_ratio(a, b))
    result = scipy_stats.bootstrap((a, b), log_ratio, vectorized=True, paired=False, n_resamples=n_resamples,
                                   confidence_level=confidence, method="percentile", batch=250,
                                   random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    # A percentile interval of a discrete statistic can miss its own estimate by a hair; widen it to include it.
    return Interval(estimate, min(low, estimate), max(high, estimate), min(len(a), len(b)))


def _positive_logs(values: Sequence[float]) -> np.ndarray:
    data = _finite(values)
    return np.log(data[data > 0])


def successive_difference_sd(values_in_time_order: Sequence[float], *, log: bool = True) -> float | None:
    """Run-to-run standard deviation from the median absolute successive difference, of the log figures (``log``,
    for speed figures judged by ratios) or of the values as they are (quality figures, or a signal already logged).

    A store's history mixes noise with real changes. A step change inflates a plain standard deviation over all runs,
    but it makes only one successive difference large, and the median ignores it. For Gaussian noise of standard
    deviation s a successive difference has standard deviation s * sqrt(2), and the median of its absolute value is
    0.6745 times that. None with fewer than three runs."""
    signal = _positive_logs(values_in_time_order) if log else _finite(values_in_time_order)
    if len(signal) < 3:
        return None
    return float(np.median(np.abs(np.diff(signal))) / (scipy_stats.norm.ppf(0.75) * math.sqrt(2)))


def hidden_change_pct(sd_log: float, confidence: float = CONFIDENCE) -> float:
    """The change one run against one run cannot tell from noise: the half-width of the difference of two single
    runs, each with standard deviation ``sd_log`` on the log scale."""
    return _percent(float(scipy_stats.norm.ppf(1 - (1 - confidence) / 2)) * math.sqrt(2) * sd_log)
