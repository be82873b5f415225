"""Known extra work, for calibration only (``aebench ab --calibrate``).

A benchmark's false-alarm and detection rates are properties of the machine it runs on, so aebench measures them:
calibration runs the same revision against itself, once as is (A/A) and once with this module adding a known
fraction of busy work to every compiled inference call and every training epoch. The work is a spin on the CPU the
cell is pinned to, sized as a fraction of the call or epoch it follows, so a 10% spike-in slows every timed figure
by 10% while the model, its weights and its outputs stay exactly the same.

It is switched on by ``AEBENCH_SPIKE`` in a worker host's environment, which only ``aebench ab --calibrate`` sets:
the runner never passes the variable on, and a spiked cell says so in ``info.spike_fraction``.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

from aebench.backends import Forward

ENV = "AEBENCH_SPIKE"


def fraction(environ: dict[str, str] | None = None) -> float:
    """The spike-in as a fraction of each call's time (0 when unset)."""
    text = (os.environ if environ is None else environ).get(ENV, "")
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{ENV}={text!r} is invalid: allowed a fraction from 0 to 1")
    return value


def spin(seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
    """Busy work for ``seconds``: the CPU stays as occupied as by the model's own work, unlike a sleep."""
    deadline = clock() + seconds
    while clock() < deadline:
        pass


def spiked_forward(forward: Forward, share: float, clock: Callable[[], float] = time.perf_counter) -> Forward:
    """The compiled call followed by busy work for ``share`` of the time the call took."""
    run = forward.run

    def slower(x: Any) -> Any:
        started = clock()
        out = run(x)
        spin((clock() - started) * share, clock)
        return out

    return replace(forward, run=slower)


def training_callback(share: float, clock: Callable[[], float] = time.perf_counter) -> Any:
    """A Keras callback adding busy work for ``share`` of each training epoch's time, at the end of the epoch.

    Per epoch, not per step: it hooks no ``*_batch_end``, since on JAX and torch a callback with one makes Keras call
    the callbacks synchronously instead of on its background thread, which would change how the spiked side's
    training loop runs, not only how much work it does; and between two batch-begin hooks a JAX loop measures only
    its dispatch, which runs ahead of the device. The epoch's wall is what the timed training steps measure (one
    epoch per timed repeat), so it slows their throughput by exactly ``share`` on every backend."""
    import keras

    class SpikeIn(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._epoch_started = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch_started = clock()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            spin((clock() - self._epoch_started) * share, clock)

    return SpikeIn()
