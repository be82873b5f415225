"""Timing logic, checked with a fake clock: nothing here sleeps or times real work."""

from __future__ import annotations

import numpy as np
import pytest

from aebench.speed import EpochClock, Samples, latency_metrics, run_timed_loop, throughput_metrics


class FakeClock:
    """Advances by a scripted amount each time the timed call runs."""

    def __init__(self, step_s: list[float]) -> None:
        self.now = 0.0
        self._steps = iter(step_s)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += next(self._steps)


def test_loop_needs_both_min_count_and_min_duration() -> None:
    clock = FakeClock([0.001] * 10_000)
    samples = run_timed_loop(clock.work, warmup=5, min_count=10, min_duration_s=0.5, max_duration_s=10, clock=clock)
    assert samples.count == 500  # duration, not count, was the binding minimum
    assert clock.calls == 505  # warm-up calls are not timed
    assert samples.duration_s == pytest.approx(0.5) and not samples.hit_cap

    clock = FakeClock([0.1] * 100)
    samples = run_timed_loop(clock.work, warmup=0, min_count=20, min_duration_s=0.5, max_duration_s=10, clock=clock)
    assert samples.count == 20 and samples.duration_s == pytest.approx(2.0)


def test_loop_stops_at_the_cap_and_says_so() -> None:
    clock = FakeClock([1.0] * 100)
    samples = run_timed_loop(clock.work, warmup=0, min_count=50, min_duration_s=0, max_duration_s=3, clock=clock)
    assert samples.count == 3 and samples.hit_cap


def test_latency_percentiles_and_stability_flag() -> None:
    steady = Samples(np.full(100, 0.002), 0.2, False)
    metrics = latency_metrics(steady, "speed.latency_b1")
    assert metrics["speed.latency_b1_p50_ms"] == pytest.approx(2.0)
    assert metrics["speed.latency_b1_p99_ms"] == pytest.approx(2.0)
    assert metrics["speed.latency_b1_unstable"] == 0.0
    spiky = Samples(np.array([0.001] * 90 + [0.010] * 10), 0.2, False)
    metrics = latency_metrics(spiky, "speed.latency_b1")
    assert metrics["speed.latency_b1_p50_ms"] == pytest.approx(1.0)
    assert metrics["speed.latency_b1_p99_ms"] == pytest.approx(10.0)
    assert metrics["speed.latency_b1_unstable"] == 1.0


def test_throughput_is_images_over_time() -> None:
    metrics = throughput_metrics(Samples(np.array([0.5, 0.5, 0.5, 0.5]), 2.0, False), 1000, "speed.infer")
    assert metrics["speed.infer_ips"] == pytest.approx(2000.0)
    assert metrics["speed.infer_unstable"] == 0.0


def test_epoch_clock_keeps_the_first_epoch_apart() -> None:
    ticks = iter([0.0, 5.0, 5.0, 6.0, 6.0, 7.0])
    clock = EpochClock(clock=lambda: next(ticks))
    for _ in range(3):
        clock.begin()
        clock.end()
    metrics = clock.metrics(images_per_epoch=1000)
    assert metrics["speed.train_first_epoch_s"] == 5.0
    assert metrics["speed.train_ips"] == pytest.approx(1000.0)
    assert metrics["speed.train_compile_overhead_s"] == pytest.approx(4.0)
    assert metrics["speed.train_s"] == pytest.approx(7.0)


def test_epoch_clock_with_one_epoch_has_no_steady_speed() -> None:
    ticks = iter([0.0, 1.0])
    clock = EpochClock(clock=lambda: next(ticks))
    clock.begin()
    clock.end()
    metrics = clock.metrics(10)
    assert metrics["speed.train_ips"] is None and metrics["speed.train_first_epoch_s"] == 1.0
    with pytest.raises(ValueError, match="no epoch"):
        EpochClock().metrics(10)
