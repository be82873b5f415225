"""Cross-check the harness's timings against hand-written loops on the same model, in the same process.

A benchmark harness must not add its own cost to what it reports. For the paper's conv AE this times, interleaved
round by round so machine drift hits both alike:

- batch-1 latency: a hand-written ``tf.function`` loop (``f(x).numpy()`` under ``perf_counter``) against the
  harness's compiled call and SingleStream loop;
- Offline throughput at a large batch: the same two paths;
- training: plain ``model.fit(x, y, batch_size=128)`` on NumPy arrays with Keras' default compile settings against
  the harness's training path (``aebench.scenarios.train``), from the same initial weights, comparing steady-epoch
  throughput (beside the step ceiling: the compiled step on one resident batch, which no feed can beat) and the
  held-out loss: gated on a pair trained in the arrays' order (the same batches, so only the feed differs), and
  shown for the shuffled rounds beside plain fit's own spread over shuffle seeds.

Run it as ``aebench crosscheck`` (it starts this module in a child pinned to N CPUs) or
``python -m aebench.crosscheck --threads 2``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tabulate import tabulate

from aebench import backends, scenarios
from aebench.backends import Forward
from aebench.backends.tensorflow import TensorFlowBackend, data_options_without_autotune
from aebench.config import LatencySettings
from aebench.errors import UserError
from aebench.models import build_autoencoder

# Gates from the measurement issue: what "the harness adds nothing" means, in numbers.
GATES = {
    "latency_ratio_max": 1.2,  # harness p50 / hand p50
    "offline_ratio_min": 0.9,  # harness img/s / hand img/s
    "train_speedup_min": 1.5,  # harness training img/s / plain fit img/s
    "loss_rel_diff_max": 0.02,  # |harness loss - plain loss| / plain loss, on the same held-out images
}


HAND_WARMUP = 20  # warm-up calls before each round's batch-1 loop, on both paths
TRAIN_BATCH = 128


@dataclass(frozen=True)
class Images:
    """The cross-check's data: training pairs, and held-out noisy images (the inference batch) with their clean
    originals."""

    source: str
    noisy: np.ndarray
    clean: np.ndarray
    test: np.ndarray
    clean_test: np.ndarray


class TrainRound(NamedTuple):
    """One interleaved training round: plain fit, then the harness's path, then the step ceiling."""

    plain_ips: float
    plain_loss: float
    plain_outside_s: float
    harness_ips: float
    harness_loss: float
    harness_outside_s: float
    ceiling_ips: float


class Fitted(NamedTuple):
    """One path's training: steady img/s, held-out loss, seconds fit() spent outside its epochs (set-up before,
    teardown after), and the input path's label."""

    ips: float
    loss: float
    outside_s: float
    feed: str


def _paired(hand: Callable[[], float], harness: Callable[[], float], first_hand: bool) -> tuple[float, float]:
    """(hand, harness) figures of one round, measured in the order given."""
    if first_hand:
        hand_value = hand()
        return hand_value, harness()
    harness_value = harness()
    return hand(), harness_value


def load_images(train_size: int, offline_batch: int, data_dir: str | None) -> Images:
    """MNIST when it is there; the timing check works on any images, so random ones otherwise."""
    from aebench import data

    try:
        dataset = data.load_dataset("mnist", data.find_dataset("mnist", data_dir, download=None))
        source = f"mnist ({dataset.path})"
        clean, clean_test = dataset.x_train[:train_size], dataset.x_test[:offline_batch]
    except UserError as error:
        if data_dir is not None:  # a folder given by hand that lacks the file is a mistake, not a reason to go on
            raise
        source = f"random images ({error})"
        rng = np.random.default_rng(0)
        clean = rng.random((train_size, 28, 28, 1), dtype=np.float32)
        clean_test = rng.random((offline_batch, 28, 28, 1), dtype=np.float32)
    return Images(source, data.add_noise(clean, "gaussian", 0.2, seed=0), clean,
                  data.add_noise(clean_test, "gaussian", 0.2, seed=1), clean_test)


# -- inference -------------------------------------------------------------------------------------------------------


def _hand_latency_ms(function: Any, x: Any, count: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        function(x).numpy()
    samples = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        function(x).numpy()
        samples[i] = time.perf_counter() - start
    return samples * 1e3


def _hand_p50_ms(hand: Any, image: Any, count: int) -> float:
    return float(np.median(_hand_latency_ms(hand, image, count, warmup=HAND_WARMUP)))


def _harness_p50_ms(forward: Forward, image: np.ndarray, count: int) -> float:
    settings = LatencySettings(warmup=HAND_WARMUP, min_count=count, min_duration_s=0.0, max_duration_s=60.0)
    return scenarios.single_stream(forward, image, settings).p50_ms


@dataclass(frozen=True)
class Paths:
    """The same model through a hand-written ``tf.function`` and through the harness's compiled call, with the
    batch-1 image and the Offline batch ready on each, both shapes already traced."""

    hand: Any
    forward: Forward
    image: np.ndarray
    hand_image: Any
    hand_batch: Any
    harness_batch: Any
    batch_size: int


def inference_paths(model: Any, images: np.ndarray) -> Paths:
    """The two paths over ``model``; ``images`` is the Offline batch, its first image the batch-1 input."""
    import tensorflow as tf

    hand = tf.function(lambda x: model(x, training=False))
    forward = backends.current().compiled_forward(model)
    paths = Paths(hand, forward, images[:1], tf.constant(images[:1]), tf.constant(images), forward.prepare(images),
                  len(images))
    hand(paths.hand_batch).numpy()
    forward(paths.harness_batch)  # a new input shape traces once more; keep that out of the rounds
    return paths


def latency_rounds(paths: Paths, rounds: int, count: int) -> list[tuple[float, float]]:
    """(hand, harness) batch-1 p50 in ms per round. Rounds alternate which path goes first (hand-harness, then
    harness-hand, ...): over an even number of rounds a steady drift of the machine's speed then favours neither."""
    hand = functools.partial(_hand_p50_ms, paths.hand, paths.hand_image, count)
    harness = functools.partial(_harness_p50_ms, paths.forward, paths.image, count)
    return [_paired(hand, harness, first_hand=i % 2 == 0) for i in range(rounds)]


def _hand_batch_s(hand: Any, batch: Any) -> float:
    start = time.perf_counter()
    hand(batch).numpy()
    return time.perf_counter() - start


def _harness_batch_s(forward: Forward, batch: Any) -> float:
    samples = scenarios.run_timed_loop(functools.partial(forward, batch), warmup=0, min_count=1, min_duration_s=0.0,
                                       max_duration_s=60.0)
    return float(samples.seconds[0])


def offline_rounds(paths: Paths, rounds: int, count: int) -> list[tuple[float, float]]:
    """(hand, harness) images per second per round. A batch takes about 0.1 s, and this machine's speed moves by tens
    of percent within seconds: the two paths take turns batch by batch, and each round compares their median batch
    times."""
    hand = functools.partial(_hand_batch_s, paths.hand, paths.hand_batch)
    harness = functools.partial(_harness_batch_s, paths.forward, paths.harness_batch)
    result = []
    for _ in range(rounds):
        pairs = [_paired(hand, harness, first_hand=k % 2 == 0) for k in range(count)]
        result.append((paths.batch_size / float(np.median([h for h, _ in pairs])),
                       paths.batch_size / float(np.median([h for _, h in pairs]))))
    return result


# -- training --------------------------------------------------------------------------------------------------------


def _held_out_loss(model: Any, images: Images) -> float:
    # Both models scored on the same unseen images: the two paths shuffle differently, so their last training-batch
    # losses differ by chance more than their models do.
    return float(model.evaluate(images.test, images.clean_test, batch_size=500, verbose=0))


def fit_plain(images: Images, epochs: int, shuffle_seed: int, shuffle: bool = True) -> Fitted:
    """Plain ``fit`` on NumPy arrays with Keras' default compile settings, as a user would write it."""
    import keras

    model = build_autoencoder("conv", seed=0)
    keras.utils.set_random_seed(shuffle_seed)  # same initial weights; only the batch order follows the round
    model.compile(optimizer="adam", loss="binary_crossentropy")
    timer = scenarios.EpochClock()
    start = time.perf_counter()
    history = model.fit(images.noisy, images.clean, batch_size=TRAIN_BATCH, epochs=epochs, verbose=0,
                        shuffle=shuffle, callbacks=[timer.callback()])
    fit_s = time.perf_counter() - start
    training = scenarios.Training(tuple(timer.epoch_seconds), len(images.noisy), TRAIN_BATCH,
                                  float(history.history["loss"][-1]), "numpy arrays")
    return Fitted(training.steady_ips, _held_out_loss(model, images), fit_s - training.seconds, training.feed)


def fit_harness(images: Images, epochs: int, shuffle_seed: int, shuffle: bool = True) -> Fitted:
    """The harness's training path (``scenarios.train``) from the same initial weights."""
    model = build_autoencoder("conv", seed=0)
    scenarios.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)
    start = time.perf_counter()
    training = scenarios.train(model, images.noisy, images.clean, batch_size=TRAIN_BATCH, epochs=epochs,
                               seed=shuffle_seed, shuffle=shuffle)
    fit_s = time.perf_counter() - start
    return Fitted(training.steady_ips, _held_out_loss(model, images), fit_s - training.seconds, training.feed)


def step_ceiling(images: Images, epochs: int) -> float:
    """The compiled training step alone: one resident batch, repeated, so no input path costs anything. No feed,
    however clever, can train faster than this."""
    import tensorflow as tf

    model = build_autoencoder("conv", seed=0)
    scenarios.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)
    steps = len(images.noisy) // TRAIN_BATCH
    resident = (tf.data.Dataset.from_tensors((images.noisy[:TRAIN_BATCH], images.clean[:TRAIN_BATCH])).repeat(steps)
                .with_options(data_options_without_autotune()))  # as in the harness's feed
    timer = scenarios.EpochClock()
    history = model.fit(resident, epochs=max(2, min(epochs, 3)), verbose=0, callbacks=[timer.callback()])
    return scenarios.Training(tuple(timer.epoch_seconds), steps * TRAIN_BATCH, TRAIN_BATCH,
                              float(history.history["loss"][-1]), "one resident batch").steady_ips


def training_rounds(images: Images, epochs: int, count: int) -> tuple[list[TrainRound], str]:
    """The rounds, and the harness's (shuffled) input path.

    Interleaved like the inference rounds: this machine's speed drifts by tens of percent from minute to minute.
    Each round shuffles with its own seed, the same for both paths: after a few epochs the batch order alone moves the
    loss by several percent, so shuffled losses are compared as medians over the rounds, with their spread."""
    rounds = []
    for seed in range(max(1, count)):
        plain, harness = fit_plain(images, epochs, seed), fit_harness(images, epochs, seed)
        rounds.append(TrainRound(plain.ips, plain.loss, plain.outside_s, harness.ips, harness.loss, harness.outside_s,
                                 step_ceiling(images, epochs)))
    return rounds, harness.feed


def loss_pair(images: Images, epochs: int) -> tuple[Fitted, Fitted]:
    """(plain, harness), both in the arrays' order from the same weights, so the batches are the same and only the
    feed differs: any gap in their held-out loss is the feed's doing."""
    return fit_plain(images, epochs, 0, shuffle=False), fit_harness(images, epochs, 0, shuffle=False)


# -- the whole check -------------------------------------------------------------------------------------------------


def measure(threads: int, rounds: int, latency_count: int, offline_batch: int, offline_count: int,
            train_size: int, epochs: int, data_dir: str | None, train_rounds_count: int = 3) -> dict[str, Any]:
    from aebench.worker import pin_cpus

    pin_cpus(threads)  # as a cell's worker pins itself: CPUs, and NumPy's BLAS threads with them
    # The hand-written loops are TensorFlow's: Keras must run on it.
    os.environ.setdefault("KERAS_BACKEND", TensorFlowBackend.name)
    import keras
    import tensorflow as tf

    backends.current().configure_threads(threads)
    images = load_images(train_size, offline_batch, data_dir)
    paths = inference_paths(build_autoencoder("conv", seed=0), images.test)
    latency = latency_rounds(paths, rounds, latency_count)
    offline = offline_rounds(paths, rounds, offline_count)
    train, harness_feed = training_rounds(images, epochs, train_rounds_count)
    in_order_plain, in_order_harness = loss_pair(images, epochs)
    setup = {
        "model": "conv (2,561 parameters)", "threads": threads, "rounds": rounds, "data": images.source,
        "latency": f"batch 1, {latency_count} timed calls per round after {HAND_WARMUP} warm-up calls, median of "
                   f"per-round p50, rounds alternating which path goes first; ratio = median of the per-round ratios",
        "offline": f"batch {len(images.test)}, {offline_count} batches per path per round, the paths taking turns batch "
                   f"by batch, images / median batch time, median over rounds; ratio = median of the per-round ratios",
        "training": f"{train_size} images x {epochs} epochs, batch {TRAIN_BATCH}, first epoch excluded, "
                    f"median of {max(1, train_rounds_count)} interleaved rounds; loss gate on one extra pair "
                    f"trained in the arrays' order",
        TensorFlowBackend.name: tf.__version__, "keras": keras.__version__,
    }
    result = {"setup": setup, "latency_b1_p50_ms": _paired_summary(latency), "offline_ips": _paired_summary(offline),
              "training": _training_summary(train, harness_feed, in_order_plain, in_order_harness)}
    result["gates"] = {
        "latency": result["latency_b1_p50_ms"]["ratio"] <= GATES["latency_ratio_max"],
        "offline": result["offline_ips"]["ratio"] >= GATES["offline_ratio_min"],
        "training_speed": result["training"]["speedup"] >= GATES["train_speedup_min"],
        "training_loss": result["training"]["loss_rel_diff"] <= GATES["loss_rel_diff_max"],
    }
    return result


def _paired_summary(rounds: list[tuple[float, float]]) -> dict[str, Any]:
    """Medians of both paths over the rounds. The ratio is the median of the per-round ratios: each round's two
    figures were taken side by side, so their ratio is free of the drift between rounds that a ratio of the two
    overall medians would mix in."""
    return {"hand_tf_function": statistics.median(h for h, _ in rounds),
            "harness": statistics.median(h for _, h in rounds),
            "per_round": rounds, "ratio": statistics.median(harness / hand for hand, harness in rounds)}


def _training_summary(rounds: list[TrainRound], harness_feed: str, in_order_plain: Fitted,
                      in_order_harness: Fitted) -> dict[str, Any]:
    def median(field: str) -> float:
        return statistics.median(getattr(r, field) for r in rounds)

    plain_ips, harness_ips, ceiling_ips = median("plain_ips"), median("harness_ips"), median("ceiling_ips")
    plain_loss, harness_loss = median("plain_loss"), median("harness_loss")
    plain_losses = [r.plain_loss for r in rounds]
    return {
        "plain_fit_ips": plain_ips, "plain_fit_loss": plain_loss,
        "plain_fit_path": "numpy arrays, compile defaults (jit_compile=auto)",
        "harness_ips": harness_ips, "harness_loss": harness_loss,
        "harness_path": f"{harness_feed}, jit_compile=False",
        "step_ceiling_ips": ceiling_ips, "feed_headroom": ceiling_ips / plain_ips,
        "plain_fit_outside_epochs_s": median("plain_outside_s"),
        "harness_outside_epochs_s": median("harness_outside_s"),
        "per_round": rounds, "plain_loss_spread": (max(plain_losses) - min(plain_losses)) / plain_loss,
        "speedup": harness_ips / plain_ips,
        "shuffled_loss_rel_diff": abs(harness_loss - plain_loss) / plain_loss,
        "in_order_plain_loss": in_order_plain.loss, "in_order_harness_loss": in_order_harness.loss,
        "in_order_harness_path": in_order_harness.feed,
        "loss_rel_diff": abs(in_order_harness.loss - in_order_plain.loss) / in_order_plain.loss,
    }


def format_result(result: dict[str, Any]) -> str:
    lat, off, train, gates = result["latency_b1_p50_ms"], result["offline_ips"], result["training"], result["gates"]
    mark = {True: "ok", False: "FAIL"}
    table = [
        ("batch-1 p50 latency (ms)", f"{lat['hand_tf_function']:.3f}", f"{lat['harness']:.3f}", f"{lat['ratio']:.2f}",
         f"<= {GATES['latency_ratio_max']} {mark[gates['latency']]}"),
        ("offline throughput (img/s)", f"{off['hand_tf_function']:,.0f}", f"{off['harness']:,.0f}", f"{off['ratio']:.2f}",
         f">= {GATES['offline_ratio_min']} {mark[gates['offline']]}"),
        ("training (img/s)", f"{train['plain_fit_ips']:,.0f}", f"{train['harness_ips']:,.0f}", f"{train['speedup']:.2f}",
         f">= {GATES['train_speedup_min']} {mark[gates['training_speed']]}  (plain fit vs harness path)"),
        ("held-out BCE, same order", f"{train['in_order_plain_loss']:.4f}", f"{train['in_order_harness_loss']:.4f}",
         f"{train['loss_rel_diff']:.2%}", f"<= {GATES['loss_rel_diff_max']:.0%} {mark[gates['training_loss']]}  "
         f"(both unshuffled: the same batches, only the feed differs)"),
        ("held-out BCE, shuffled", f"{train['plain_fit_loss']:.4f}", f"{train['harness_loss']:.4f}",
         f"{train['shuffled_loss_rel_diff']:.2%}",
         f"(medians; plain fit's own spread over the shuffle seeds: {train['plain_loss_spread']:.2%})"),
    ]
    lines = [f"{key}: {value}" for key, value in result["setup"].items()]
    lines += [
        "",
        tabulate(table, ("measure", "hand-written", "harness", "ratio", "gate"), tablefmt="plain",
                 disable_numparse=True, colalign=("left", "right", "right", "right", "left")),
        f"plain fit: {train['plain_fit_path']}; harness: {train['harness_path']}",
        f"training step ceiling (one resident batch, no input path): {train['step_ceiling_ips']:,.0f} img/s = "
        f"{train['feed_headroom']:.2f}x plain fit, the most any input feed could gain on this machine",
        f"fit() time outside its epochs (median): plain fit {train['plain_fit_outside_epochs_s']:.2f} s, "
        f"harness {train['harness_outside_epochs_s']:.2f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latency-count", type=int, default=500)
    parser.add_argument("--offline-batch", type=int, default=1000)
    parser.add_argument("--offline-count", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw result here")
    parser.add_argument("--allow-concurrent", action="store_true",
                        help="run although another aebench run holds this machine (the result says so)")
    args = parser.parse_args(argv)
    from aebench import atomic, machine, machinelock

    usable = len(machine.usable_cpus())
    if not 1 <= args.threads <= usable:
        raise UserError(f"--threads {args.threads} is invalid: allowed 1 to {usable} (the CPUs aebench may use here)")
    for option in ("rounds", "latency_count", "offline_batch", "offline_count", "train_size", "epochs",
                   "train_rounds"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} {getattr(args, option)} is invalid: allowed integers >= 1")
    if args.data_dir is not None:  # a folder without the file is found now, before any CPU is pinned (measure reads it)
        from aebench import data

        data.find_dataset("mnist", args.data_dir, download=None)
    if args.json is not None:  # known now, not after minutes of timing
        atomic.check_writable_file("--json", args.json)

    with machinelock.hold("crosscheck", allow_concurrent=args.allow_concurrent) as lock:
        result = measure(args.threads, args.rounds, args.latency_count, args.offline_batch, args.offline_count,
                         args.train_size, args.epochs, args.data_dir, args.train_rounds)
    result["contaminated"] = lock.contamination  # None when it held the machine alone
    if args.json:
        atomic.write_json(args.json, result)
    print(format_result(result))
    return 0 if all(result["gates"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
