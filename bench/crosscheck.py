"""Cross-check the harness's timings against hand-written loops on the same model, in the same process.

A benchmark harness must not add its own cost to what it reports. For the paper's conv AE this times, interleaved
round by round so machine drift hits both alike:

- batch-1 latency: a hand-written ``tf.function`` loop (``f(x).numpy()`` under ``perf_counter``) against the
  harness's compiled call and SingleStream loop;
- Offline throughput at a large batch: the same two paths;
- training: plain ``model.fit(x, y, batch_size=128)`` on NumPy arrays with Keras' default compile settings against
  the harness's training path (``bench.backends.fit_timed``), from the same initial weights, comparing steady-epoch
  throughput and the final loss.

Run it as ``aebench crosscheck`` (it starts this module in a child pinned to N CPUs) or
``python -m bench.crosscheck --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def _hand_offline_ips(function: Any, batch: Any, batch_size: int, count: int) -> float:
    function(batch).numpy()
    start = time.perf_counter()
    for _ in range(count):
        function(batch).numpy()
    return batch_size * count / (time.perf_counter() - start)


def measure(threads: int, rounds: int, latency_count: int, offline_batch: int, offline_count: int,
            train_size: int, epochs: int, data_dir: str | None, train_rounds_count: int = 3) -> dict[str, Any]:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    from bench import backends, data
    from bench.speed import EpochClock, latency_metrics, run_timed_loop, throughput_metrics
    from models import build_autoencoder

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

    latency_rounds, offline_rounds = [], []
    for _ in range(rounds):
        hand_ms = _hand_latency_ms(hand, one_hand, latency_count, warmup=20)
        harness = latency_metrics(
            run_timed_loop(lambda: forward(one_harness), warmup=20, min_count=latency_count, min_duration_s=0.0,
                           max_duration_s=60.0), "lat")
        latency_rounds.append((float(np.median(hand_ms)), harness["lat_p50_ms"]))
        hand_ips = _hand_offline_ips(hand, batch_hand, len(test), offline_count)
        forward(batch_harness)
        harness_tput = throughput_metrics(
            run_timed_loop(lambda: forward(batch_harness), warmup=1, min_count=offline_count, min_duration_s=0.0,
                           max_duration_s=60.0), len(test), "tput")
        offline_rounds.append((hand_ips, harness_tput["tput_ips"]))

    def held_out_loss(trained: Any) -> float:
        # Both models scored on the same unseen images: the two paths shuffle differently, so their last
        # training-batch losses differ by chance more than their models do.
        return float(trained.evaluate(test, clean_test, batch_size=500, verbose=0))

    def fit_plain(shuffle_seed: int) -> tuple[float, float]:
        plain = build_autoencoder("conv", seed=0)
        keras.utils.set_random_seed(shuffle_seed)  # same initial weights; only the batch order follows the round
        plain.compile(optimizer="adam", loss="binary_crossentropy")  # Keras defaults, as a user would write it
        timer = EpochClock()
        plain.fit(noisy, clean, batch_size=128, epochs=epochs, verbose=0, shuffle=True,
                  callbacks=[backends.epoch_timer_callback(timer.begin, timer.end)])
        return timer.metrics(train_size)["speed.train_ips"], held_out_loss(plain)

    def fit_harness(shuffle_seed: int) -> tuple[float, float, str, bool]:
        ours = build_autoencoder("conv", seed=0)
        backends.compile_autoencoder(ours, learning_rate=1e-3, jit_compile=False)
        _, timer, label = backends.fit_timed(ours, noisy, clean, batch_size=128, epochs=epochs, seed=shuffle_seed)
        return timer.metrics(train_size)["speed.train_ips"], held_out_loss(ours), label, bool(ours.jit_compile)

    # Interleaved like the inference rounds: this machine's speed drifts by tens of percent from minute to minute.
    # Each round shuffles with its own seed, the same for both paths: after a few epochs the batch order alone moves
    # the loss by several percent, so losses are compared as medians over the rounds, and their spread is reported.
    train_rounds = []
    for shuffle_seed in range(max(1, train_rounds_count)):
        plain_ips, plain_loss = fit_plain(shuffle_seed)
        harness_ips, harness_loss, train_label, harness_jit = fit_harness(shuffle_seed)
        train_rounds.append((plain_ips, harness_ips, plain_loss, harness_loss))
    plain_ips = statistics.median(r[0] for r in train_rounds)
    harness_ips = statistics.median(r[1] for r in train_rounds)
    plain_loss = statistics.median(r[2] for r in train_rounds)
    harness_loss = statistics.median(r[3] for r in train_rounds)
    plain_loss_spread = (max(r[2] for r in train_rounds) - min(r[2] for r in train_rounds)) / plain_loss

    hand_p50 = statistics.median(h for h, _ in latency_rounds)
    harness_p50 = statistics.median(h for _, h in latency_rounds)
    hand_tput = statistics.median(h for h, _ in offline_rounds)
    harness_tput = statistics.median(h for _, h in offline_rounds)
    result = {
        "setup": {
            "model": "conv (2,561 parameters)", "threads": threads, "rounds": rounds, "data": source,
            "latency": f"batch 1, {latency_count} timed calls per round after 20 warm-up calls, median of per-round p50",
            "offline": f"batch {len(test)}, {offline_count} batches per round, median over rounds",
            "training": f"{train_size} images x {epochs} epochs, batch 128, first epoch excluded, "
                        f"median of {max(1, train_rounds_count)} interleaved rounds",
            "tensorflow": tf.__version__, "keras": keras.__version__,
        },
        "latency_b1_p50_ms": {"hand_tf_function": hand_p50, "harness": harness_p50,
                              "per_round": latency_rounds, "ratio": harness_p50 / hand_p50},
        "offline_ips": {"hand_tf_function": hand_tput, "harness": harness_tput,
                        "per_round": offline_rounds, "ratio": harness_tput / hand_tput},
        "training": {"plain_fit_ips": plain_ips, "plain_fit_loss": plain_loss, "plain_fit_path": "numpy arrays, compile defaults (jit_compile=auto)",
                     "harness_ips": harness_ips, "harness_loss": harness_loss, "harness_path": f"{train_label}, jit_compile={harness_jit}",
                     "per_round": train_rounds, "plain_loss_spread": plain_loss_spread, "speedup": harness_ips / plain_ips, "loss_rel_diff": abs(harness_loss - plain_loss) / plain_loss},
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
    lines = [f"{key}: {value}" for key, value in result["setup"].items()]
    lines += [
        "",
        f"{'measure':<28} {'hand-written':>14} {'harness':>14} {'ratio':>8}  gate",
        f"{'batch-1 p50 latency (ms)':<28} {lat['hand_tf_function']:>14.3f} {lat['harness']:>14.3f} {lat['ratio']:>8.2f}  "
        f"<= {GATES['latency_ratio_max']} {mark[gates['latency']]}",
        f"{'offline throughput (img/s)':<28} {off['hand_tf_function']:>14,.0f} {off['harness']:>14,.0f} {off['ratio']:>8.2f}  "
        f">= {GATES['offline_ratio_min']} {mark[gates['offline']]}",
        f"{'training (img/s)':<28} {train['plain_fit_ips']:>14,.0f} {train['harness_ips']:>14,.0f} {train['speedup']:>8.2f}  "
        f">= {GATES['train_speedup_min']} {mark[gates['training_speed']]}  (plain fit vs harness path)",
        f"{'held-out BCE after training':<28} {train['plain_fit_loss']:>14.4f} {train['harness_loss']:>14.4f} "
        f"{train['loss_rel_diff']:>8.2%}  <= {GATES['loss_rel_diff_max']:.0%} {mark[gates['training_loss']]}",
        f"plain fit: {train['plain_fit_path']}; harness: {train['harness_path']}",
        f"plain fit's own held-out BCE spread over the rounds' shuffle seeds: {train['plain_loss_spread']:.2%} "
        f"(max - min over median)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-count", type=int, default=500)
    parser.add_argument("--offline-batch", type=int, default=1000)
    parser.add_argument("--offline-count", type=int, default=10)
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
