"""Timing logic and the scenarios' records, checked with a fake clock: nothing here sleeps or times real work."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aebench.metrics import REGISTRY
from aebench.config import LatencySettings, ThroughputSettings
from aebench.scenarios import (ColdStart, EpochClock, FrameworkLatency, Latency, Samples, Throughput, Training,
                               cold_start, offline, run_timed_loop, single_stream)


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
    metrics = Latency(steady).metrics()
    assert metrics["speed.latency_b1_p50_ms"] == pytest.approx(2.0)
    assert metrics["speed.latency_b1_p99_ms"] == pytest.approx(2.0)
    assert metrics["speed.latency_b1_unstable"] == 0.0
    spiky = Samples(np.array([0.001] * 90 + [0.010] * 10), 0.2, False)
    metrics = Latency(spiky).metrics()
    assert metrics["speed.latency_b1_p50_ms"] == pytest.approx(1.0)
    assert metrics["speed.latency_b1_p99_ms"] == pytest.approx(10.0)
    assert metrics["speed.latency_b1_unstable"] == 1.0


def test_throughput_is_images_over_time() -> None:
    metrics = Throughput(Samples(np.array([0.5, 0.5, 0.5, 0.5]), 2.0, False), 1000).metrics()
    assert metrics["speed.infer_ips"] == pytest.approx(2000.0)
    assert metrics["speed.infer_unstable"] == 0.0
    assert metrics["speed.infer_batch_size"] == 1000.0


def test_training_keeps_the_first_epoch_apart() -> None:
    ticks = iter([0.0, 5.0, 5.0, 6.0, 6.0, 7.0])
    clock = EpochClock(clock=lambda: next(ticks))
    for _ in range(3):
        clock.begin()
        clock.end()
    training = Training(tuple(clock.epoch_seconds), images_per_epoch=1000, batch_size=64, final_loss=0.25,
                        feed="arrays")
    metrics = training.metrics()
    assert metrics["speed.train_first_epoch_s"] == 5.0
    assert metrics["speed.train_ips"] == pytest.approx(1000.0) == training.steady_ips
    assert metrics["speed.train_compile_overhead_s"] == pytest.approx(4.0)
    assert metrics["speed.train_s"] == pytest.approx(7.0) == training.seconds
    # The loss is the training run's (the worker reports it); a record of timed steps says nothing about quality.
    assert "quality.train_loss" not in metrics and metrics["speed.batch_size"] == 64.0


def test_training_with_one_epoch_has_no_steady_speed() -> None:
    metrics = Training((1.0,), 10, 64, 0.5, "arrays").metrics()
    assert metrics["speed.train_ips"] is None and metrics["speed.train_first_epoch_s"] == 1.0
    with pytest.raises(ValueError, match=r"Training.epoch_seconds is empty"):
        Training((), 10, 64, 0.5, "arrays")
    # A diverged run's loss is a result, not a bad measurement.
    assert math.isnan(Training((1.0, 1.0), 10, 64, float("nan"), "arrays").final_loss)


@pytest.mark.parametrize(("seconds", "message"), [
    ([], r"Samples.seconds is empty: allowed one or more durations"),
    ([0.1, -0.001], r"Samples.seconds\[1\] = -0.001 is invalid: allowed finite durations >= 0 s"),
    ([float("nan")], r"Samples.seconds\[0\] = nan is invalid: allowed finite"),
    ([0.1, float("inf")], r"Samples.seconds\[1\] = inf is invalid: allowed finite"),
])
def test_samples_reject_empty_negative_and_non_finite_durations(seconds: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Samples(np.array(seconds), 1.0, False)


def test_records_reject_bad_values_and_stay_frozen() -> None:
    with pytest.raises(ValueError, match=r"Samples.duration_s = -1.0 is invalid"):
        Samples(np.array([0.1]), -1.0, False)
    with pytest.raises(ValueError, match=r"Throughput.batch_size = 0 is invalid: allowed integers >= 1"):
        Throughput(Samples(np.array([0.1]), 0.1, False), 0)
    with pytest.raises(ValueError, match=r"Training.epoch_seconds\[1\] = nan"):
        Training((1.0, float("nan")), 10, 64, 0.5, "arrays")
    with pytest.raises(ValueError, match=r"ColdStart\[1\] = -0.5"):
        ColdStart(0.1, -0.5)
    # A rate divides by these: a clock that did not move measured nothing (a batch-1 call may round to 0 s).
    with pytest.raises(ValueError, match=r"Throughput.samples.seconds\[1\] = 0.0 is invalid: allowed .* > 0 s"):
        Throughput(Samples(np.array([0.1, 0.0]), 0.1, False), 8)
    with pytest.raises(ValueError, match=r"Training.epoch_seconds\[0\] = 0.0 is invalid"):
        Training((0.0, 1.0), 10, 64, 0.5, "arrays")
    samples = Samples(np.array([0.1, 0.2]), 0.3, False)
    with pytest.raises(ValueError):
        samples.seconds[0] = -1.0  # read-only: the record validated these values
    with pytest.raises(AttributeError):
        samples.duration_s = 2.0  # type: ignore[misc]


class FakeForward:
    """A compiled call that takes a scripted time on the fake clock; ``prepare`` records what it was given."""

    path = "fake"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.prepared: list[np.ndarray] = []

    def prepare(self, images: np.ndarray) -> np.ndarray:
        self.prepared.append(images)
        return images

    def __call__(self, prepared: np.ndarray) -> np.ndarray:
        self.clock.work()
        return prepared


def test_scenarios_time_the_compiled_call_and_flatten_to_registered_names() -> None:
    clock = FakeClock([3.0] + [0.002] * 6 + [0.5] + [0.25] * 2)  # cold start, 1 + 5 batch-1 calls, 1 + 2 batches
    forward = FakeForward(clock)
    images = np.zeros((8, 28, 28, 1), np.float32)
    cold = cold_start(forward, images[:1], build_s=1.0, clock=clock)
    assert cold.metrics() == {"speed.first_call_s": 3.0, "speed.cold_start_s": 4.0}
    latency = single_stream(forward, images[:1], LatencySettings(warmup=1, min_count=5, min_duration_s=0.0,
                                                                 max_duration_s=10.0), clock=clock)
    assert latency.samples.count == 5 and latency.p50_ms == pytest.approx(2.0)
    # The batch's first call (a new shape traces again) stays out of the loop: the 0.5 s call is not a sample.
    throughput = offline(forward, images, ThroughputSettings(batch_size=4, warmup=0, min_count=2, min_duration_s=0.0,
                                                             max_duration_s=10.0), clock=clock)
    assert len(forward.prepared[-1]) == 4 and throughput.samples.count == 2
    assert throughput.images_per_s == pytest.approx(16.0)
    framework = FrameworkLatency(Samples(np.array([0.02, 0.03]), 0.05, False))  # stdev 20% of the mean: unstable
    for record in (cold, latency, throughput, framework, Training((1.0, 0.5), 100, 10, 0.1, "arrays")):
        unknown = [name for name in record.metrics() if REGISTRY.find(name) is None]
        assert not unknown, (type(record).__name__, unknown)
    assert set(framework.metrics()) == {f"speed.predict_b1_{key}" for key in ("p50_ms", "p90_ms", "p99_ms",
                                                                              "p999_ms", "count", "unstable",
                                                                              "hit_cap")}
    assert framework.metrics()["speed.predict_b1_unstable"] == 1.0  # the report reads it to mark the figure


def test_a_tail_percentile_is_stated_only_from_enough_calls() -> None:
    def latency(count: int, capped: bool = False) -> dict[str, float | None]:
        return Latency(Samples(np.linspace(1e-3, 2e-3, count), 1.0, capped)).metrics()

    few, hundred, thousand = latency(99, capped=True), latency(100), latency(1000)
    assert few["speed.latency_b1_p99_ms"] is None and few["speed.latency_b1_p999_ms"] is None
    assert few["speed.latency_b1_p90_ms"] is not None and few["speed.latency_b1_hit_cap"] == 1.0
    assert hundred["speed.latency_b1_p99_ms"] == pytest.approx(1.99) and hundred["speed.latency_b1_p999_ms"] is None
    assert thousand["speed.latency_b1_p999_ms"] == pytest.approx(1.999, abs=1e-3)
    assert thousand["speed.latency_b1_hit_cap"] == 0.0


def test_compile_with_decay_steps_gives_adam_a_cosine_schedule() -> None:
    import keras

    from aebench.models import build_autoencoder
    from aebench.scenarios import compile_autoencoder

    model = build_autoencoder("undercomplete", {"latent_dim": 2, "hidden_units": 4})
    compile_autoencoder(model, 0.01, False, decay_steps=10)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
    compile_autoencoder(model, 0.01, False)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
