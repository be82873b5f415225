"""Timing loops after MLPerf LoadGen's scenarios, with an injectable clock so tests never sleep.

SingleStream: one image at a time, sequentially; every query is timed. Offline: large batches back to back;
throughput is images per second. Both warm up first and stop only once a minimum count AND a minimum duration are
met (or a cap on duration is hit, which the result says). The callable must return only when the device has finished
(see ``aebench.backends``): timing an asynchronous dispatch would time nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aebench.results import UNSTABLE_CV

Clock = Callable[[], float]


@dataclass(frozen=True)
class Samples:
    """Raw per-call durations in seconds and how the loop ended."""

    seconds: np.ndarray
    duration_s: float
    hit_cap: bool

    @property
    def count(self) -> int:
        return int(len(self.seconds))


def run_timed_loop(
    call: Callable[[], object],
    *,
    warmup: int,
    min_count: int,
    min_duration_s: float,
    max_duration_s: float,
    clock: Clock = time.perf_counter,
) -> Samples:
    for _ in range(warmup):
        call()
    durations: list[float] = []
    start = clock()
    elapsed = 0.0
    while True:
        before = clock()
        call()
        after = clock()
        durations.append(after - before)
        elapsed = after - start
        if len(durations) >= min_count and elapsed >= min_duration_s:
            return Samples(np.asarray(durations), elapsed, hit_cap=False)
        if elapsed >= max_duration_s:
            return Samples(np.asarray(durations), elapsed, hit_cap=True)


def latency_metrics(samples: Samples, prefix: str) -> dict[str, float]:
    """Percentiles in milliseconds plus mean, stdev and the stability flag (1.0 = stdev > 10% of mean)."""
    ms = samples.seconds * 1e3
    mean, stdev, unstable = _spread(ms)
    return {
        f"{prefix}_p50_ms": float(np.percentile(ms, 50)),
        f"{prefix}_p90_ms": float(np.percentile(ms, 90)),
        f"{prefix}_p99_ms": float(np.percentile(ms, 99)),
        f"{prefix}_p999_ms": float(np.percentile(ms, 99.9)),
        f"{prefix}_mean_ms": mean,
        f"{prefix}_stdev_ms": stdev,
        f"{prefix}_count": float(samples.count),
        f"{prefix}_duration_s": samples.duration_s,
        f"{prefix}_unstable": unstable,
    }


def throughput_metrics(samples: Samples, batch_size: int, prefix: str) -> dict[str, float]:
    """Images per second over the whole loop, and the spread of per-batch rates."""
    per_batch = batch_size / samples.seconds
    total = batch_size * samples.count / float(samples.seconds.sum())
    _, stdev, unstable = _spread(per_batch)
    return {
        f"{prefix}_ips": total,
        f"{prefix}_ips_stdev": stdev,
        f"{prefix}_batches": float(samples.count),
        f"{prefix}_duration_s": samples.duration_s,
        f"{prefix}_unstable": unstable,
    }


def _spread(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, sample stdev, unstable flag): 1.0 when the stdev exceeds UNSTABLE_CV of the mean, as pyperf warns."""
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return mean, stdev, float(mean > 0 and stdev / mean > UNSTABLE_CV)


class EpochClock:
    """Records the wall time of each training epoch; the first epoch (tracing, compilation) is kept apart."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self.epoch_seconds: list[float] = []

    def begin(self) -> None:
        self._started = self._clock()

    def end(self) -> None:
        if self._started is None:
            raise RuntimeError("EpochClock.end() without begin()")
        self.epoch_seconds.append(self._clock() - self._started)
        self._started = None

    def metrics(self, images_per_epoch: int) -> dict[str, float | None]:
        """Steady throughput over epochs 2.. of this process; None when fewer than 2 epochs ran here (a resumed
        cell that had one epoch left)."""
        if not self.epoch_seconds:
            raise ValueError("no epoch was timed")
        first, steady = self.epoch_seconds[0], np.asarray(self.epoch_seconds[1:])
        out: dict[str, float | None] = {
            "speed.train_first_epoch_s": first,
            "speed.train_s": float(sum(self.epoch_seconds)),
            "speed.train_epochs_timed": float(len(self.epoch_seconds)),
        }
        if len(steady) == 0:
            return out | {"speed.train_ips": None, "speed.train_ips_stdev": None, "speed.train_steady_epoch_s": None,
                          "speed.train_compile_overhead_s": None, "speed.train_unstable": None}
        _, spread, unstable = _spread(images_per_epoch / steady)
        return out | {
            "speed.train_ips": images_per_epoch * len(steady) / float(steady.sum()),
            "speed.train_ips_stdev": spread,
            "speed.train_steady_epoch_s": float(np.median(steady)),
            # What the first epoch costs beyond a steady one: tracing and compilation.
            "speed.train_compile_overhead_s": max(0.0, first - float(np.median(steady))),
            "speed.train_unstable": unstable,
        }
