"""Cross-check the harness's timings against hand-written loops on the same model, in the same process.

A benchmark harness must not add its own cost to what it reports. For the paper's conv AE this times, interleaved
round by round so machine drift hits both alike:

- batch-1 latency: a hand-written ``tf.function`` loop (``f(x).numpy()`` under ``perf_counter``) against the
  harness's compiled call and SingleStream loop;
- Offline throughput at a large batch: the same two paths;
- training: plain ``model.fit(x, y, batch_size=128)`` on NumPy arrays with Keras' default compile settings against
  the harness's training path (``aebench.backends.fit_timed``), from the same initial weights, comparing steady-epoch
  throughput (beside the step ceiling: the compiled step on one resident batch, which no feed can beat) and the
  held-out loss: gated on a pair trained in the arrays' order (the same batches, so only the feed differs), and
  shown for the shuffled rounds beside plain fit's own spread over shuffle seeds.

Run it as ``aebench crosscheck`` (it starts this module in a child pinned to N CPUs) or
``python -m aebench.crosscheck --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tabulate import tabulate

# Gates from the measurement issue: what "the harness adds nothing" means, in numbers.
GATES = {
    "latency_ratio_max": 1.2,  # harness p50 / hand p50
    "offline_ratio_min": 0.9,  # harness img/s / hand img/s
    "train_speedup_min": 1.5,  # harness training img/s / plain fit img/s
    "loss_rel_diff_max": 0.02,  # |harness loss - plain loss| / plain loss, on the same held-out images
}


def _hand_latency_ms(function: Any, x: Any, count: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        function(x).numpy()
    samples = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        function(x).numpy()
        samples[i] = time.perf_counter() - start
    return samples * 1e3


class TrainRound(NamedTuple):
    """One interleaved training round: plain fit, then the harness's path, then the step ceiling."""

    plain_ips: float
    plain_loss: float
    plain_outside_s: float
    harness_ips: float
    harness_loss: float
    harness_outside_s: float
    ceiling_ips: float


def _paired(hand: Any, harness: Any, first_hand: bool) -> tuple[float, float]:
    """(hand, harness) figures of one round, measured in the order given."""
    if first_hand:
        hand_value = hand()
        return hand_value, harness()
    harness_value = harness()
    return hand(), harness_value


def measure(threads: int, rounds: int, latency_count: int, offline_batch: int, offline_count: int,
            train_size: int, epochs: int, data_dir: str | None, train_rounds_count: int = 3) -> dict[str, Any]:
    from aebench.worker import pin_cpus

    pin_cpus(threads)  # as a cell's worker pins itself: CPUs, and NumPy's BLAS threads with them
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    from aebench import backends, data
    from aebench.speed import EpochClock, latency_metrics, run_timed_loop
    from aebench.models import build_autoencoder

    backends.configure_threads(threads)
    try:
        dataset = data.load_dataset("mnist", data.find_dataset("mnist", data_dir, download=None))
        source = f"mnist ({dataset.path})"
        clean = dataset.x_train[:train_size]
        test = dataset.x_test[:offline_batch]
    except Exception as error:  # noqa: BLE001 - the timing check works on any images
        source = f"random images ({error})"
        rng = np.random.default_rng(0)
        clean = rng.random((train_size, 28, 28, 1), dtype=np.float32)
        test = rng.random((offline_batch, 28, 28, 1), dtype=np.float32)
    noisy = data.add_noise(clean, "gaussian", 0.2, seed=0)
    clean_test = test
    test = data.add_noise(test, "gaussian", 0.2, seed=1)

    model = build_autoencoder("conv", seed=0)
    hand = tf.function(lambda x: model(x, training=False))
    forward = backends.compiled_forward(model)
    one_hand, one_harness = tf.constant(test[:1]), forward.prepare(test[:1])
    batch_hand, batch_harness = tf.constant(test), forward.prepare(test)

    def hand_latency() -> float:
        return float(np.median(_hand_latency_ms(hand, one_hand, latency_count, warmup=20)))

    def harness_latency() -> float:
        return latency_metrics(run_timed_loop(lambda: forward(one_harness), warmup=20, min_count=latency_count,
                                              min_duration_s=0.0, max_duration_s=60.0), "lat")["lat_p50_ms"]

    def hand_batch_s() -> float:
        start = time.perf_counter()
        hand(batch_hand).numpy()
        return time.perf_counter() - start

    def harness_batch_s() -> float:
        samples = run_timed_loop(lambda: forward(batch_harness), warmup=0, min_count=1, min_duration_s=0.0,
                                 max_duration_s=60.0)
        return float(samples.seconds[0])

    def offline_round() -> tuple[float, float]:
        # A batch takes about 0.1 s, and this machine's speed moves by tens of percent within seconds: the two
        # paths take turns batch by batch, and each round compares their median batch times.
        pairs = [_paired(hand_batch_s, harness_batch_s, first_hand=k % 2 == 0) for k in range(offline_count)]
        return (len(test) / float(np.median([h for h, _ in pairs])),
                len(test) / float(np.median([h for _, h in pairs])))

    hand(batch_hand).numpy()
    forward(batch_harness)  # a new input shape traces once more; keep that out of the rounds
    # Rounds alternate which path goes first (hand-harness, then harness-hand, ...): over an even number of rounds a
    # steady drift of the machine's speed then favours neither path.
    latency_rounds = [_paired(hand_latency, harness_latency, first_hand=i % 2 == 0) for i in range(rounds)]
    offline_rounds = [offline_round() for _ in range(rounds)]

    def held_out_loss(trained: Any) -> float:
        # Both models scored on the same unseen images: the two paths shuffle differently, so their last
        # training-batch losses differ by chance more than their models do.
        return float(trained.evaluate(test, clean_test, batch_size=500, verbose=0))

    def trained(model: Any, timer: Any, fit_s: float) -> tuple[float, float, float]:
        # (steady img/s, held-out loss, seconds fit() spent outside its epochs: set-up before, teardown after)
        return (timer.metrics(train_size)["speed.train_ips"], held_out_loss(model),
                fit_s - sum(timer.epoch_seconds))

    def fit_plain(shuffle_seed: int, shuffle: bool = True) -> tuple[float, float, float]:
        plain = build_autoencoder("conv", seed=0)
        keras.utils.set_random_seed(shuffle_seed)  # same initial weights; only the batch order follows the round
        plain.compile(optimizer="adam", loss="binary_crossentropy")  # Keras defaults, as a user would write it
        timer = EpochClock()
        start = time.perf_counter()
        plain.fit(noisy, clean, batch_size=128, epochs=epochs, verbose=0, shuffle=shuffle,
                  callbacks=[backends.epoch_timer_callback(timer.begin, timer.end)])
        return trained(plain, timer, time.perf_counter() - start)

    feed_labels: dict[bool, str] = {}  # the harness's input path, shuffled and in order, as fit_timed names it

    def fit_harness(shuffle_seed: int, shuffle: bool = True) -> tuple[float, float, float]:
        ours = build_autoencoder("conv", seed=0)
        backends.compile_autoencoder(ours, learning_rate=1e-3, jit_compile=False)
        start = time.perf_counter()
        _, timer, feed_labels[shuffle] = backends.fit_timed(ours, noisy, clean, batch_size=128, epochs=epochs, seed=shuffle_seed,
                                         shuffle=shuffle)
        return trained(ours, timer, time.perf_counter() - start)

    def step_ceiling() -> float:
        # The compiled training step alone: one resident batch of 128, repeated, so no input path costs anything.
        # No feed, however clever, can train faster than this.
        model = build_autoencoder("conv", seed=0)
        backends.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)
        steps = train_size // 128
        resident = (tf.data.Dataset.from_tensors((noisy[:128], clean[:128])).repeat(steps)
                    .with_options(backends.tf_data_options_without_autotune()))  # as in the harness's feed
        timer = EpochClock()
        model.fit(resident, epochs=max(2, min(epochs, 3)), verbose=0,
                  callbacks=[backends.epoch_timer_callback(timer.begin, timer.end)])
        return timer.metrics(steps * 128)["speed.train_ips"]

    # Interleaved like the inference rounds: this machine's speed drifts by tens of percent from minute to minute.
    # Each round shuffles with its own seed, the same for both paths: after a few epochs the batch order alone moves
    # the loss by several percent, so shuffled losses are compared as medians over the rounds, with their spread.
    train_rounds = [TrainRound(*fit_plain(seed), *fit_harness(seed), step_ceiling())
                    for seed in range(max(1, train_rounds_count))]

    def median(field: str) -> float:
        return statistics.median(getattr(r, field) for r in train_rounds)

    plain_ips, harness_ips, ceiling_ips = median("plain_ips"), median("harness_ips"), median("ceiling_ips")
    plain_loss, harness_loss = median("plain_loss"), median("harness_loss")
    plain_losses = [r.plain_loss for r in train_rounds]
    plain_loss_spread = (max(plain_losses) - min(plain_losses)) / plain_loss
    # The loss gate: both paths in the arrays' order, from the same weights, so the batches are the same and only
    # the feed differs. Any gap here is the feed's doing.
    in_order_plain_loss = fit_plain(0, shuffle=False)[1]
    in_order_harness_loss = fit_harness(0, shuffle=False)[1]

    hand_p50 = statistics.median(h for h, _ in latency_rounds)
    harness_p50 = statistics.median(h for _, h in latency_rounds)
    hand_tput = statistics.median(h for h, _ in offline_rounds)
    harness_tput = statistics.median(h for _, h in offline_rounds)
    # Gated on the median of the per-round ratios: each round's two figures were taken side by side, so their ratio
    # is free of the drift between rounds that a ratio of the two overall medians would mix in.
    latency_ratio = statistics.median(harness / hand for hand, harness in latency_rounds)
    offline_ratio = statistics.median(harness / hand for hand, harness in offline_rounds)
    result = {
        "setup": {
            "model": "conv (2,561 parameters)", "threads": threads, "rounds": rounds, "data": source,
            "latency": f"batch 1, {latency_count} timed calls per round after 20 warm-up calls, median of per-round p50, "
                       f"rounds alternating which path goes first; ratio = median of the per-round ratios",
            "offline": f"batch {len(test)}, {offline_count} batches per path per round, the paths taking turns batch by "
                       f"batch, images / median batch time, median over rounds; ratio = median of the per-round ratios",
            "training": f"{train_size} images x {epochs} epochs, batch 128, first epoch excluded, "
                        f"median of {max(1, train_rounds_count)} interleaved rounds; loss gate on one extra pair "
                        f"trained in the arrays' order",
            "tensorflow": tf.__version__, "keras": keras.__version__,
        },
        "latency_b1_p50_ms": {"hand_tf_function": hand_p50, "harness": harness_p50,
                              "per_round": latency_rounds, "ratio": latency_ratio},
        "offline_ips": {"hand_tf_function": hand_tput, "harness": harness_tput,
                        "per_round": offline_rounds, "ratio": offline_ratio},
        "training": {
            "plain_fit_ips": plain_ips, "plain_fit_loss": plain_loss,
            "plain_fit_path": "numpy arrays, compile defaults (jit_compile=auto)",
            "harness_ips": harness_ips, "harness_loss": harness_loss,
            "harness_path": f"{feed_labels[True]}, jit_compile=False",
            "step_ceiling_ips": ceiling_ips, "feed_headroom": ceiling_ips / plain_ips,
            "plain_fit_outside_epochs_s": median("plain_outside_s"),
            "harness_outside_epochs_s": median("harness_outside_s"),
            "per_round": train_rounds, "plain_loss_spread": plain_loss_spread, "speedup": harness_ips / plain_ips,
            "shuffled_loss_rel_diff": abs(harness_loss - plain_loss) / plain_loss,
            "in_order_plain_loss": in_order_plain_loss, "in_order_harness_loss": in_order_harness_loss,
            "in_order_harness_path": feed_labels[False],
            "loss_rel_diff": abs(in_order_harness_loss - in_order_plain_loss) / in_order_plain_loss,
        },
    }
    result["gates"] = {
        "latency": result["latency_b1_p50_ms"]["ratio"] <= GATES["latency_ratio_max"],
        "offline": result["offline_ips"]["ratio"] >= GATES["offline_ratio_min"],
        "training_speed": result["training"]["speedup"] >= GATES["train_speedup_min"],
        "training_loss": result["training"]["loss_rel_diff"] <= GATES["loss_rel_diff_max"],
    }
    return result


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
    args = parser.parse_args(argv)
    result = measure(args.threads, args.rounds, args.latency_count, args.offline_batch, args.offline_count,
                     args.train_size, args.epochs, args.data_dir, args.train_rounds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(format_result(result))
    return 0 if all(result["gates"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
