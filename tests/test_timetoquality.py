"""Time to quality: the quality clock's arithmetic on a fake clock, the curve's record, a resumed run's state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aebench.timetoquality import STATE_FILE, Curve, QualityClock, target_psnr_db


class FakeTime:
    """A clock that moves only when told: a training step costs ``step_s``, an evaluation ``eval_s``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _clock(time: FakeTime, psnrs: list[float], eval_s: float = 0.5, **options: object) -> QualityClock:
    values = iter(psnrs)

    def evaluate() -> float:
        time.now += eval_s  # evaluating costs time that must not count as training
        return next(values)

    settings = {"noisy_psnr_db": 15.0, "target_gain_db": 3.0, "every_steps": 2, "batch_size": 10,
                "images_per_epoch": 35, **options}
    return QualityClock(evaluate, clock=time, **settings)


def _train(clock: QualityClock, time: FakeTime, epochs: range, steps_per_epoch: int = 4, step_s: float = 1.0) -> None:
    for epoch in epochs:
        clock.epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            time.now += step_s
            clock.step_done(batch)
        clock.epoch_done(loss=0.1 * (epoch + 1))


def test_time_to_target_counts_training_only_and_images_exactly() -> None:
    time = FakeTime()
    clock = _clock(time, [16.0, 17.5, 18.2, 19.0, 19.5])
    clock.begin()
    _train(clock, time, range(2))  # 8 steps of 10 images, 35 per epoch: the last batch of an epoch holds 5
    clock.end()
    curve = clock.curve()
    # An evaluation every 2 steps: after 20 images, after 35 (epoch 1's last, partial batch), 55, 70.
    assert curve.images_seen == (20, 35, 55, 70)
    assert curve.train_s == (2.0, 4.0, 6.0, 8.0)  # 1 s per step; the 0.5 s evaluations are not in it
    assert curve.validation_s == pytest.approx(2.0)
    assert target_psnr_db(15.0, 3.0) == curve.target_psnr_db == 18.0
    metrics = curve.metrics()
    assert metrics["speed.time_to_target_s"] == 6.0 and metrics["quality.images_to_target"] == 55
    assert metrics["quality.target_reached"] == 1.0 and metrics["quality.val_gain_db"] == 4.0
    assert metrics["speed.train_total_s"] == 8.0 and curve.epoch_loss == (0.1, 0.2)


def test_a_model_that_never_gets_there_is_stored_as_not_reached() -> None:
    time = FakeTime()
    clock = _clock(time, [15.5, 16.0, 16.5], every_steps=3)
    clock.begin()
    _train(clock, time, range(2))
    clock.end()  # 8 steps: evaluations at 3 and 6, then the end's own point
    metrics = clock.curve().metrics()
    assert clock.curve().images_seen == (30, 55, 70)
    assert metrics["quality.target_reached"] == 0.0
    assert metrics["speed.time_to_target_s"] is None and metrics["quality.images_to_target"] is None  # not 0


def test_a_resumed_run_continues_its_curve_and_its_training_time(tmp_path: Path) -> None:
    state = tmp_path / STATE_FILE
    time = FakeTime()
    first = _clock(time, [16.0, 17.0], state_path=state)
    first.begin()
    _train(first, time, range(1))  # killed after epoch 0: its state was saved with that epoch
    time.now += 1000.0  # the machine sat idle, a new process starts
    resumed = _clock(time, [18.5, 19.0], state_path=state)
    resumed.begin()
    _train(resumed, time, range(1, 2))
    resumed.end()
    curve = resumed.curve()
    assert curve.images_seen == (20, 35, 55, 70)
    assert curve.train_s == (2.0, 4.0, 6.0, 8.0)  # the idle gap is not training
    assert curve.metrics()["speed.time_to_target_s"] == 6.0 and curve.epoch_loss == (0.1, 0.2)


def test_checkpoint_saves_are_left_out_of_the_training_time() -> None:
    """A checkpointed run saves after every epoch (Keras' backup, 3 s on this fake clock, reported by
    ``checkpoint_saved``): not training, so time to target and the curve leave it out and report it apart."""
    time = FakeTime()
    clock = _clock(time, [16.0, 17.5, 18.2, 19.0, 19.5])
    clock.begin()
    for epoch in range(2):
        clock.epoch_begin(epoch)
        for batch in range(4):
            time.now += 1.0
            clock.step_done(batch)
        time.now += 3.0  # the backup's save, at the end of the epoch
        clock.checkpoint_saved(3.0)
        clock.epoch_done(loss=0.1)
    clock.end()
    curve = clock.curve()
    assert curve.train_s == (2.0, 4.0, 6.0, 8.0)  # as without the saves
    assert curve.checkpoint_s == 6.0 and curve.metrics()["timing.checkpoint_s"] == 6.0
    assert curve.metrics()["speed.time_to_target_s"] == 6.0


def test_the_clocks_own_state_file_counts_as_a_checkpoint_save(tmp_path: Path) -> None:
    time = FakeTime()
    clock = _clock(time, [16.0, 17.0, 17.5, 18.5], state_path=tmp_path / STATE_FILE)
    writes = []

    def slow_save(original=clock._save) -> None:  # writing the state takes 2 s on this clock
        time.now += 2.0
        writes.append(time.now)
        original()

    clock._save = slow_save
    clock.begin()
    _train(clock, time, range(2))
    clock.end()
    assert len(writes) == 2 and clock.curve().checkpoint_s == 4.0
    assert clock.curve().train_s == (2.0, 4.0, 6.0, 8.0)  # epoch 0's 2 s save is not in epoch 1's points


def test_curve_records_validate_themselves() -> None:
    with pytest.raises(ValueError, match="one or more evaluations"):
        Curve((), (), (), (), 15.0, 18.0, 0.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        Curve((20, 10), (1.0, 2.0), (16.0, 17.0), (), 15.0, 18.0, 0.0)
    with pytest.raises(ValueError, match="finite seconds"):
        Curve((20,), (math.nan,), (16.0,), (), 15.0, 18.0, 0.0)
    with pytest.raises(ValueError, match="allowed integers >= 1"):
        QualityClock(lambda: 0.0, noisy_psnr_db=1.0, target_gain_db=3.0, every_steps=0, batch_size=1,
                     images_per_epoch=1)
