"""The measured scenarios of a cell, after MLPerf LoadGen's, each returning a frozen record that validates itself.

- SingleStream (``single_stream`` -> ``Latency``): one image at a time, sequentially; every query is timed.
- Offline (``offline`` -> ``Throughput``): large batches back to back; throughput is images per second.
- The framework path (``framework_path`` -> ``FrameworkLatency``): Keras ``predict()`` on one image.
- Cold start (``cold_start`` -> ``ColdStart``): the compiled call's first run (trace, compile) beside the build.
- Training (``train`` -> ``Training``): ``fit()`` with every epoch timed; the first (tracing, compilation) apart.
  ``training_steps`` times a fixed number of steps from trained weights the same way: what every thread count of a
  model measures, while only one of them trains it (aebench.worker).

The timed loops warm up first and stop only once a minimum count AND a minimum duration are met (or a cap on
duration is hit, which the record says). The timed call must return only when the device has finished (see
``aebench.backends``): timing an asynchronous dispatch would time nothing. Every clock is injectable, so tests never
sleep. A record flattens to its dot-keyed metric columns with ``metrics()`` (names in ``aebench.metrics``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from aebench.results import UNSTABLE_CV

if TYPE_CHECKING:
    import keras

    from aebench.backends import Forward
    from aebench.config import LatencySettings, ThroughputSettings, TrainTimingSettings

Clock = Callable[[], float]


def _check_durations(what: str, values: Sequence[float] | np.ndarray, *, positive: bool = False) -> None:
    """Raise ValueError unless ``values`` holds at least one duration, each finite and >= 0 seconds (> 0 with
    ``positive``: a rate divides by it, and a clock that did not move measured nothing)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError(f"{what} is empty: allowed one or more durations in seconds")
    bad = ~(np.isfinite(values) & ((values > 0) if positive else (values >= 0)))
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{what}[{index}] = {float(values[index])!r} is invalid: allowed finite durations "
                         f"{'>' if positive else '>='} 0 s")


def _check_count(what: str, value: int) -> None:
    if not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{what} = {value!r} is invalid: allowed integers >= 1")


# -- the timed loop --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Raw per-call durations in seconds (read-only) and how the loop ended."""

    seconds: np.ndarray
    duration_s: float
    hit_cap: bool

    def __post_init__(self) -> None:
        seconds = np.array(self.seconds, dtype=np.float64).reshape(-1)
        _check_durations("Samples.seconds", seconds)
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ValueError(f"Samples.duration_s = {self.duration_s!r} is invalid: allowed finite seconds >= 0")
        seconds.flags.writeable = False
        object.__setattr__(self, "seconds", seconds)

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


def _spread(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, sample stdev, unstable flag): 1.0 when the stdev exceeds UNSTABLE_CV of the mean, as pyperf warns."""
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return mean, stdev, float(mean > 0 and stdev / mean > UNSTABLE_CV)


# -- records ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """SingleStream: batch-1 latency through the compiled call."""

    samples: Samples
    PREFIX: ClassVar[str] = "speed.latency_b1"
    ARTIFACT: ClassVar[str] = "latency_b1_s"  # the stored array of the raw samples (the report's CDFs, hardware)

    # A tail percentile is stated only from enough samples to have one: with fewer than 1 / (1 - q) samples beyond
    # it (p99 from 50 calls, p99.9 from 200), it is an interpolated maximum, and would be compared as if it were not.
    MIN_TAIL_SAMPLES: ClassVar[dict[float, int]] = {99: 100, 99.9: 1000}

    @cached_property
    def _ms(self) -> np.ndarray:
        return self.samples.seconds * 1e3

    def percentile_ms(self, q: float) -> float | None:
        if self.samples.count < self.MIN_TAIL_SAMPLES.get(q, 1):
            return None
        return float(np.percentile(self._ms, q))

    @property
    def p50_ms(self) -> float:
        return float(self.percentile_ms(50))  # never None: a Samples record is never empty

    def metrics(self) -> dict[str, float | None]:
        """Percentiles in milliseconds plus mean, stdev and the stability flag (1.0 = stdev > 10% of mean)."""
        prefix = self.PREFIX
        mean, stdev, unstable = _spread(self._ms)
        return {
            f"{prefix}_p50_ms": self.percentile_ms(50),
            f"{prefix}_p90_ms": self.percentile_ms(90),
            f"{prefix}_p99_ms": self.percentile_ms(99),
            f"{prefix}_p999_ms": self.percentile_ms(99.9),
            f"{prefix}_mean_ms": mean,
            f"{prefix}_stdev_ms": stdev,
            f"{prefix}_count": float(self.samples.count),
            f"{prefix}_duration_s": self.samples.duration_s,
            f"{prefix}_unstable": unstable,
            f"{prefix}_hit_cap": float(self.samples.hit_cap),  # stopped by max_duration_s before min_count
        }


@dataclass(frozen=True)
class FrameworkLatency(Latency):
    """The framework path, labelled as such: Keras ``predict()`` on one image, with all its per-call machinery.
    Only its percentiles, call count and stability flag (the report marks an unstable figure) are reported: each
    call costs tens of milliseconds, and only its order of magnitude is news."""

    PREFIX: ClassVar[str] = "speed.predict_b1"

    def metrics(self) -> dict[str, float]:
        kept = ("_p50_ms", "_p90_ms", "_p99_ms", "_p999_ms", "_count", "_unstable", "_hit_cap")
        return {key: value for key, value in super().metrics().items() if key.endswith(kept)}


@dataclass(frozen=True)
class Throughput:
    """Offline: batches of ``batch_size`` images back to back."""

    samples: Samples
    batch_size: int

    def __post_init__(self) -> None:
        _check_count("Throughput.batch_size", self.batch_size)
        _check_durations("Throughput.samples.seconds", self.samples.seconds, positive=True)

    @property
    def images_per_s(self) -> float:
        """Images per second over the whole loop."""
        return self.batch_size * self.samples.count / float(self.samples.seconds.sum())

    def metrics(self) -> dict[str, float]:
        """Images per second over the whole loop, and the spread of per-batch rates."""
        _, stdev, unstable = _spread(self.batch_size / self.samples.seconds)
        return {
            "speed.infer_ips": self.images_per_s,
            "speed.infer_ips_stdev": stdev,
            "speed.infer_batches": float(self.samples.count),
            "speed.infer_duration_s": self.samples.duration_s,
            "speed.infer_unstable": unstable,
            "speed.infer_batch_size": float(self.batch_size),
        }


@dataclass(frozen=True)
class ColdStart:
    """Building the model, then the compiled call's first run (trace and compile) on one image."""

    build_s: float
    first_call_s: float

    def __post_init__(self) -> None:
        _check_durations("ColdStart", (self.build_s, self.first_call_s))

    def metrics(self) -> dict[str, float]:
        return {"speed.first_call_s": self.first_call_s, "speed.cold_start_s": self.build_s + self.first_call_s}


@dataclass(frozen=True)
class Training:
    """Training with every epoch timed. ``feed`` names the input path; ``final_loss`` is the last epoch's training
    loss, whatever it is (a diverged run's NaN is a result, not a bad measurement). A resumed cell holds only the
    epochs its process ran."""

    epoch_seconds: tuple[float, ...]
    images_per_epoch: int
    batch_size: int
    final_loss: float
    feed: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "epoch_seconds", tuple(float(s) for s in self.epoch_seconds))
        _check_durations("Training.epoch_seconds", self.epoch_seconds, positive=True)
        _check_count("Training.images_per_epoch", self.images_per_epoch)
        _check_count("Training.batch_size", self.batch_size)

    @property
    def seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def steady_ips(self) -> float | None:
        """Images per second over epochs 2.. of this process; None when only one ran here."""
        steady = np.asarray(self.epoch_seconds[1:])
        return self.images_per_epoch * len(steady) / float(steady.sum()) if len(steady) else None

    def metrics(self) -> dict[str, float | None]:
        first, steady = self.epoch_seconds[0], np.asarray(self.epoch_seconds[1:])
        out: dict[str, float | None] = {
            "speed.train_first_epoch_s": first,
            "speed.train_s": self.seconds,
            "speed.train_epochs_timed": float(len(self.epoch_seconds)),
        }
        if len(steady) == 0:
            out |= {"speed.train_ips": None, "speed.train_ips_stdev": None, "speed.train_steady_epoch_s": None,
                    "speed.train_compile_overhead_s": None, "speed.train_unstable": None}
        else:
            _, spread, unstable = _spread(self.images_per_epoch / steady)
            out |= {
                "speed.train_ips": self.steady_ips,
                "speed.train_ips_stdev": spread,
                "speed.train_steady_epoch_s": float(np.median(steady)),
                # What the first epoch costs beyond a steady one: tracing and compilation.
                "speed.train_compile_overhead_s": max(0.0, first - float(np.median(steady))),
                "speed.train_unstable": unstable,
            }
        return out | {"speed.batch_size": float(self.batch_size)}


# -- scenarios -------------------------------------------------------------------------------------------------------


def cold_start(forward: Forward, image: np.ndarray, build_s: float, clock: Clock = time.perf_counter) -> ColdStart:
    """Time the compiled call's first run on ``image`` (a batch of one)."""
    prepared = forward.prepare(image)
    started = clock()
    forward(prepared)
    return ColdStart(build_s, clock() - started)


def single_stream(forward: Forward, image: np.ndarray, settings: LatencySettings,
                  clock: Clock = time.perf_counter) -> Latency:
    """SingleStream on ``image`` (a batch of one), after the settings' warm-up."""
    prepared = forward.prepare(image)
    return Latency(run_timed_loop(lambda: forward(prepared), warmup=settings.warmup, min_count=settings.min_count,
                                  min_duration_s=settings.min_duration_s, max_duration_s=settings.max_duration_s,
                                  clock=clock))


def offline(forward: Forward, images: np.ndarray, settings: ThroughputSettings,
            clock: Clock = time.perf_counter) -> Throughput:
    """Offline on the first ``settings.batch_size`` images, resident on the device."""
    batch = forward.prepare(images[: settings.batch_size])
    forward(batch)  # a new input shape traces once more; keep that out of the loop
    samples = run_timed_loop(lambda: forward(batch), warmup=settings.warmup, min_count=settings.min_count,
                             min_duration_s=settings.min_duration_s, max_duration_s=settings.max_duration_s,
                             clock=clock)
    return Throughput(samples, settings.batch_size)


def framework_path(model: keras.Model, image: np.ndarray, max_duration_s: float,
                   clock: Clock = time.perf_counter) -> FrameworkLatency:
    """Keras ``predict()`` on ``image`` (a batch of one): few calls, each costs tens of milliseconds."""
    model.predict(image, verbose=0)
    return FrameworkLatency(run_timed_loop(lambda: model.predict(image, verbose=0), warmup=2, min_count=10,
                                           min_duration_s=0.25, max_duration_s=max_duration_s, clock=clock))


class EpochClock:
    """Records the wall time of each training epoch, through the Keras callback ``callback()`` gives."""

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

    def callback(self) -> Any:
        """A ``keras.callbacks.Callback`` that times every epoch on this clock."""
        import keras

        clock = self

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                clock.begin()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                clock.end()

        return EpochTimer()


def compile_autoencoder(model: keras.Model, learning_rate: float, jit_compile: bool | str,
                        decay_steps: int | None = None) -> None:
    """The one training configuration every cell and every cross-check uses: Adam on binary cross-entropy.

    With ``decay_steps`` the rate follows a cosine from ``learning_rate`` down to 0 over that many steps (Loshchilov
    and Hutter's SGDR without restarts), and stays at 0 after them."""
    import keras

    rate = learning_rate if decay_steps is None else keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=rate),
        loss="binary_crossentropy",
        jit_compile=jit_compile,
    )


def train(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, *, batch_size: int, epochs: int, seed: int,
          clock: Clock = time.perf_counter, checkpoint_dir: str | None = None, shuffle: bool = True,
          callbacks: Sequence[keras.callbacks.Callback] = (),
          on_checkpoint_saved: Callable[[float], None] = lambda seconds: None) -> Training:
    """Train (compiled by ``compile_autoencoder``) through the backend's training feed, every epoch timed.

    With ``checkpoint_dir``, Keras' BackupAndRestore saves weights and optimizer state after every epoch and, when
    the folder already holds a backup (an interrupted run being resumed), restores it and trains only the epochs
    left; the record then holds only the epochs this process ran. Each save's seconds go to ``on_checkpoint_saved``
    (the quality clock leaves them out of the training time)."""
    import keras

    from aebench import backends

    timer = EpochClock(clock)
    feed, label = backends.current().training_feed(inputs, targets, batch_size, seed, shuffle)
    # The epoch timer goes last, so its epoch includes whatever the other callbacks do in that epoch.
    every: list[keras.callbacks.Callback] = [*callbacks, timer.callback()]
    if checkpoint_dir:
        every.insert(0, _timed_backup(checkpoint_dir, on_checkpoint_saved, clock))
    history = model.fit(epochs=epochs, verbose=0, callbacks=every, **feed)
    return Training(tuple(timer.epoch_seconds), len(inputs), batch_size, float(history.history["loss"][-1]), label)


def _timed_backup(folder: str, on_saved: Callable[[float], None], clock: Clock) -> Any:
    """Keras' BackupAndRestore (a save after every epoch), telling ``on_saved`` how long each save took."""
    import keras

    class TimedBackupAndRestore(keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            started = clock()
            super().on_epoch_end(epoch, logs)
            on_saved(clock() - started)

    return TimedBackupAndRestore(folder, delete_checkpoint=True)


def training_steps(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, settings: TrainTimingSettings, *,
                   batch_size: int, seed: int, clock: Clock = time.perf_counter,
                   callbacks: Sequence[keras.callbacks.Callback] = ()) -> Training:
    """Time ``settings.steps`` training steps, ``settings.repeats`` times after one warm-up repeat, through the same
    feed as the training run (the first ``steps * batch_size`` images; fewer steps when there are fewer images).

    The weights move: the caller restores them afterwards. Each repeat is one ``fit()`` epoch, so the Training
    record's first epoch is the warm-up and its steady rate is the timed repeats'."""
    images = min(len(inputs), settings.steps * batch_size)
    return train(model, inputs[:images], targets[:images], batch_size=batch_size, epochs=1 + settings.repeats,
                 seed=seed, clock=clock, callbacks=callbacks)
