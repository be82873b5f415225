"""The calibration spike-in: known extra work, never switched on by accident."""

from __future__ import annotations

import numpy as np
import pytest

from aebench import spike
from aebench.backends import Forward
from aebench.runner import worker_environment


class FakeClock:
    """Each reading advances by ``step``; ``advance`` moves it as a call's own work would."""

    def __init__(self, step: float = 1e-4) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_spiked_call_takes_its_share_longer_and_returns_the_same_output() -> None:
    clock = FakeClock()

    def run(x: np.ndarray) -> np.ndarray:
        clock.advance(0.010)  # the model's own 10 ms
        return x * 2

    forward = Forward("fake", np.asarray, run, np.asarray)
    slower = spike.spiked_forward(forward, 0.2, clock)
    started = clock.now
    out = slower(np.ones(3))
    np.testing.assert_array_equal(out, np.full(3, 2.0))
    assert clock.now - started == pytest.approx(0.012, abs=0.0005)  # 10 ms of work + 20% of it spun


def test_a_spiked_training_epoch_takes_its_share_longer_without_a_batch_end_hook() -> None:
    import keras

    clock = FakeClock()
    callback = spike.training_callback(0.2, clock)
    started = clock.now
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        clock.advance(0.030)  # the epoch's own 30 ms of steps
        callback.on_epoch_end(epoch)
    assert clock.now - started == pytest.approx(2 * 0.036, abs=0.002)
    # A batch-end hook would make Keras (on JAX and torch) call the callbacks synchronously: a different loop.
    for hook in ("on_train_batch_end", "on_batch_end", "on_train_batch_begin", "on_batch_begin"):
        assert getattr(type(callback), hook) is getattr(keras.callbacks.Callback, hook)


@pytest.mark.parametrize(("text", "expected"), [("", 0.0), ("0.1", 0.1), ("1", 1.0)])
def test_fraction(text: str, expected: float) -> None:
    assert spike.fraction({spike.ENV: text} if text else {}) == expected


@pytest.mark.parametrize("text", ["-0.1", "2", "lots"])
def test_bad_fraction(text: str) -> None:
    with pytest.raises(ValueError, match="AEBENCH_SPIKE"):
        spike.fraction({spike.ENV: text})


def test_the_runner_never_passes_a_spike_on_to_its_workers() -> None:
    env = worker_environment("tensorflow", {"AEBENCH_SPIKE": "0.2", "AEBENCH_DATA": "/data", "PATH": "/bin"})
    assert "AEBENCH_SPIKE" not in env and env["AEBENCH_DATA"] == "/data"
