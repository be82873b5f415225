"""Time-to-quality, after MLPerf Training: how long training takes to reach a quality target, not only images/s.

During a training run the quality clock evaluates validation PSNR every ``every_steps`` training steps (a fixed
cadence, as MLPerf fixes one per benchmark) on the held-out slice of the training set (``aebench.data.
training_split``; never the test set). Its own evaluations are excluded from the training time and reported apart
(``timing.validation_s``). The target is the noisy validation images' own PSNR plus ``target_gain_db`` (3 dB by
default: output twice as close to the clean image as the input, in mean squared error), so one rule covers every
noise level and dataset.

The first evaluation at or above the target gives ``speed.time_to_target_s`` (training seconds, compilation
included, evaluations and checkpoint saves excluded) and ``quality.images_to_target``. A run that never gets there
stores ``quality.target_reached = 0`` and leaves both out: "not reached" is a result, never a zero.

A checkpointed run (``checkpoint = true``) saves the clock's state with every epoch and a resumed run continues its
curve and its training time. Saving checkpoints is not training either: its seconds are left out of the training time
as the evaluations' are, and reported apart (``timing.checkpoint_s``). The clock itself is plain Python with an
injectable clock; ``callback()`` adapts it to Keras.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aebench import atomic

Clock = Callable[[], float]
STATE_FILE = "quality_clock.json"
NOT_REACHED = "not reached"
# The stored arrays of a training run (CellResult artifacts): the report plots validation PSNR against images seen.
CURVE_ARTIFACTS = ("curve_images", "curve_train_s", "curve_val_psnr_db", "curve_epoch_loss")


def to_target_text(metric: str, value: object, reached: object, missing: str = "") -> str:
    """A to-target figure (``speed.time_to_target_s``, ``quality.images_to_target``) as every table shows it:
    "not reached" where the run never got there (``quality.target_reached`` = 0), ``missing`` where nothing was
    stored (a run made before time to quality), else the registry's format."""
    from aebench.metrics import REGISTRY

    try:
        flag, number = float(reached), float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        flag, number = math.nan, math.nan
    if flag == 0.0:
        return NOT_REACHED
    return REGISTRY.format(metric, number) if math.isfinite(number) else missing


def target_psnr_db(noisy_psnr_db: float, target_gain_db: float) -> float:
    """The documented target: the noisy input's own PSNR plus the gain asked for."""
    return noisy_psnr_db + target_gain_db


@dataclass(frozen=True)
class Curve:
    """A training run's quality curve: one point per evaluation, the loss of every epoch, and the target."""

    images_seen: tuple[int, ...]
    train_s: tuple[float, ...]  # training seconds (evaluations and checkpoint saves excluded) at each evaluation
    val_psnr_db: tuple[float, ...]
    epoch_loss: tuple[float, ...]
    noisy_psnr_db: float
    target_psnr_db: float
    # Seconds this process spent on evaluations and on checkpoint saves, both excluded from train_s. A resumed run's
    # earlier processes are not in them: like timing.train_s, they say where this process's time went.
    validation_s: float
    checkpoint_s: float = 0.0

    def __post_init__(self) -> None:
        count = len(self.images_seen)
        if count == 0 or len(self.train_s) != count or len(self.val_psnr_db) != count:
            raise ValueError(f"Curve has {count} images_seen, {len(self.train_s)} train_s and {len(self.val_psnr_db)} "
                             "val_psnr_db: allowed one or more evaluations, each with all three")
        if any(b < a for a, b in zip(self.images_seen, self.images_seen[1:])):
            raise ValueError(f"Curve.images_seen {self.images_seen} is invalid: allowed a non-decreasing count")
        if not all(math.isfinite(s) and s >= 0 for s in (*self.train_s, self.validation_s, self.checkpoint_s)):
            raise ValueError("Curve train_s, validation_s and checkpoint_s are invalid: allowed finite seconds >= 0")

    @property
    def reached_at(self) -> int | None:
        """Index of the first evaluation at or above the target; None when none got there."""
        return next((i for i, psnr in enumerate(self.val_psnr_db) if psnr >= self.target_psnr_db), None)

    def metrics(self) -> dict[str, float | None]:
        reached = self.reached_at
        final = self.val_psnr_db[-1]
        return {
            "quality.target_reached": 0.0 if reached is None else 1.0,
            "quality.target_psnr_db": self.target_psnr_db,
            "quality.images_to_target": None if reached is None else float(self.images_seen[reached]),
            "speed.time_to_target_s": None if reached is None else self.train_s[reached],
            "speed.train_total_s": self.train_s[-1],
            "quality.val_psnr_db": final,
            "quality.val_gain_db": final - self.noisy_psnr_db,
            "timing.validation_s": self.validation_s,
            "timing.checkpoint_s": self.checkpoint_s,
        }

    def artifacts(self) -> dict[str, np.ndarray]:
        return {
            "curve_images": np.asarray(self.images_seen, dtype=np.int64),
            "curve_train_s": np.asarray(self.train_s, dtype=np.float64),
            "curve_val_psnr_db": np.asarray(self.val_psnr_db, dtype=np.float64),
            "curve_epoch_loss": np.asarray(self.epoch_loss, dtype=np.float64),
        }


class QualityClock:
    """Counts training steps and images, evaluates on a fixed cadence and keeps its own time out of the training's.

    Call ``begin()`` when training starts, ``step_done(epoch, batch)`` after every step, ``epoch_done(loss)`` after
    every epoch and ``end()`` when it stops (``callback()`` does that from Keras); ``curve()`` then gives the result.
    """

    def __init__(self, evaluate: Callable[[], float], *, noisy_psnr_db: float, target_gain_db: float,
                 every_steps: int, batch_size: int, images_per_epoch: int,
                 clock: Clock = time.perf_counter, state_path: Path | None = None) -> None:
        if every_steps < 1 or batch_size < 1 or images_per_epoch < 1:
            raise ValueError(f"every_steps={every_steps}, batch_size={batch_size}, images_per_epoch="
                             f"{images_per_epoch}: allowed integers >= 1")
        self._evaluate = evaluate
        self._clock = clock
        self._state_path = state_path
        self.noisy_psnr_db = noisy_psnr_db
        self.target_psnr_db = target_psnr_db(noisy_psnr_db, target_gain_db)
        self.every_steps = every_steps
        self.batch_size = batch_size
        self.images_per_epoch = images_per_epoch
        self.points: list[tuple[int, float, float]] = []  # (images seen, training seconds, validation PSNR)
        self.epoch_loss: list[float] = []
        self.validation_s = 0.0  # this process's evaluations
        self.checkpoint_s = 0.0  # this process's checkpoint saves
        self._steps = 0
        self._images = 0
        self._epoch = 0
        self._train_s_before = 0.0  # training seconds of earlier processes (a resumed run)
        self._started: float | None = None

    def train_s(self) -> float:
        """Training seconds so far, evaluations and checkpoint saves excluded."""
        if self._started is None:
            raise RuntimeError("QualityClock.train_s() before begin()")
        return self._train_s_before + (self._clock() - self._started) - self.validation_s - self.checkpoint_s

    def checkpoint_saved(self, seconds: float) -> None:
        """A checkpoint save took ``seconds`` of the training's wall time: not training, so left out of it."""
        self.checkpoint_s += seconds

    def begin(self) -> None:
        self._load()
        self._started = self._clock()

    def epoch_begin(self, epoch: int) -> None:
        self._epoch = epoch

    def step_done(self, batch: int) -> None:
        self._steps += 1
        self._images = self._epoch * self.images_per_epoch + min((batch + 1) * self.batch_size, self.images_per_epoch)
        if self._steps % self.every_steps == 0:
            self._take_point()

    def epoch_done(self, loss: float) -> None:
        self.epoch_loss.append(float(loss))
        self._images = (self._epoch + 1) * self.images_per_epoch
        if self._state_path is not None:  # the clock's own state is part of the checkpoint
            before = self._clock()
            self._save()
            self.checkpoint_saved(self._clock() - before)

    def end(self) -> None:
        if not self.points or self.points[-1][0] != self._images:
            self._take_point()  # the trained model's own point, whatever the cadence

    def _take_point(self) -> None:
        train_s = self.train_s()
        before = self._clock()
        psnr = float(self._evaluate())
        spent = self._clock() - before
        self.validation_s += spent
        self.points.append((self._images, train_s, psnr))

    def curve(self) -> Curve:
        images, train_s, psnr = zip(*self.points) if self.points else ((), (), ())
        return Curve(tuple(images), tuple(train_s), tuple(psnr), tuple(self.epoch_loss), self.noisy_psnr_db,
                     self.target_psnr_db, self.validation_s, self.checkpoint_s)

    # -- a resumed run continues its curve --------------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_path is None:
            return
        state = {"points": self.points, "epoch_loss": self.epoch_loss, "steps": self._steps,
                 "train_s": self.train_s(), "epoch": self._epoch + 1}
        atomic.write_json(self._state_path, state)

    def _load(self) -> None:
        if self._state_path is None or not self._state_path.exists():
            return
        state = json.loads(self._state_path.read_text(encoding="utf-8"))
        self.points = [tuple(point) for point in state["points"]]
        self.epoch_loss = list(state["epoch_loss"])
        self._steps = int(state["steps"])
        self._train_s_before = float(state["train_s"])
        self._epoch = int(state["epoch"])
        self._images = self._epoch * self.images_per_epoch

    def callback(self) -> Any:
        """A ``keras.callbacks.Callback`` driving this clock."""
        import keras

        clock = self

        class QualityCallback(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                clock.begin()

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                clock.epoch_begin(epoch)

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                clock.step_done(batch)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                clock.epoch_done((logs or {}).get("loss", math.nan))

            def on_train_end(self, logs: Any = None) -> None:
                clock.end()

        return QualityCallback()


def psnr_evaluator(model: Any, clean: np.ndarray, noisy: np.ndarray, batch_size: int) -> Callable[[], float]:
    """Validation PSNR of the model's outputs on ``noisy`` against ``clean``, read from the live weights.

    A plain call of the model, batch by batch: aebench's compiled call would not do (JAX's holds a copy of the
    weights taken when it was made), and ``predict()`` costs tens of milliseconds per call in machinery alone. On
    JAX, ``fit()`` keeps the training state apart from the variables between steps; syncing it first makes the
    variables current."""
    import keras

    from aebench.quality import psnr_db

    def evaluate() -> float:
        sync = getattr(model, "jax_state_sync", None)
        if sync is not None:
            sync()
        outputs = [keras.ops.convert_to_numpy(model(noisy[start:start + batch_size], training=False))
                   for start in range(0, len(noisy), batch_size)]
        return psnr_db(clean, np.concatenate(outputs).astype(np.float32))

    return evaluate

