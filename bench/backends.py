"""What differs between Keras backends inside a worker: threads, the compiled forward call, the training feed.

Imported only in worker processes, after KERAS_BACKEND is set and before the backend runs its first op, because
thread settings are fixed at that point.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np


def backend_name() -> str:
    return keras.backend.backend()


def configure_threads(threads: int | None) -> dict[str, Any]:
    """Set intra-op (and inter-op) threads before the backend initialises; returns what was set."""
    name = backend_name()
    info: dict[str, Any] = {}
    if threads is None:
        return info
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # Inter-op threads run independent ops (the input pipeline beside the step) at once; more than the pinned
        # cores would only oversubscribe them.
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        info["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    elif name == "torch":
        import torch

        torch.set_num_threads(threads)
        info["intra_op_threads"] = torch.get_num_threads()
        info["inter_op_threads"] = torch.get_num_interop_threads()
    elif name == "jax":
        # XLA's CPU client reads its thread pool size from the affinity mask, already pinned by the worker.
        info["intra_op_threads"] = len(os.sched_getaffinity(0))
    return info


def set_precision(precision: str) -> None:
    keras.mixed_precision.set_dtype_policy(precision)


def accelerator_count(kind: str) -> int:
    """Visible GPUs or TPUs for the current backend (0 when none)."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices(kind.upper()))
    if name == "jax":
        import jax

        try:
            return len(jax.devices(kind))
        except RuntimeError:
            return 0
    if name == "torch":
        import torch

        return torch.cuda.device_count() if kind == "gpu" else 0
    return 0


def device_description(device: str) -> str:
    """What the cell really ran on, in the backend's own words."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices(device.upper())
        return devices[0].name if devices else f"no {device}"
    if name == "jax":
        import jax

        return str(jax.devices()[0])
    if name == "torch":
        import torch

        if device == "gpu" and torch.cuda.is_available():
            return f"cuda:0 {torch.cuda.get_device_name(0)}"
        return "cpu"
    return device


@dataclass
class Forward:
    """The model's compiled inference call. ``prepare`` moves a batch to the device once, outside the timing;
    ``__call__`` runs the model and returns only when the device has finished; ``to_numpy`` gives float32 whatever
    the precision policy computed in."""

    path: str
    prepare: Callable[[np.ndarray], Any]
    run: Callable[[Any], Any]
    to_numpy: Callable[[Any], np.ndarray]

    def __call__(self, prepared: Any) -> Any:
        return self.run(prepared)

    def predict(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Whole-array inference through the compiled call, batch by batch (the last batch may be smaller)."""
        outputs = [self.to_numpy(self.run(self.prepare(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)]
        return np.concatenate(outputs).astype(np.float32)


def compiled_forward(model: keras.Model) -> Forward:
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def run(x: Any) -> Any:
            out = function(x)
            out.numpy()  # CPU runs synchronously; on a GPU this waits for the result
            return out

        return Forward("tf.function", lambda a: tf.constant(a), run, lambda t: t.numpy().astype(np.float32))
    if name == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def function(trainable: Any, non_trainable: Any, x: Any) -> Any:
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return out

        def run(x: Any) -> Any:
            return function(trainable, non_trainable, x).block_until_ready()

        return Forward("jax.jit", lambda a: jax.device_put(a), run, lambda t: np.asarray(t, dtype=np.float32))
    if name == "torch":
        import torch

        device = next((v.value.device for v in model.weights), torch.device("cpu"))
        synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def run(x: Any) -> Any:
            with torch.no_grad():
                out = model(x, training=False)
            synchronise()
            return out

        return Forward("torch.no_grad (eager)", lambda a: torch.as_tensor(a, device=device), run,
                       lambda t: t.detach().float().cpu().numpy())  # numpy has no bfloat16: widen first
    raise ValueError(f"backend {name!r} is not supported: allowed tensorflow, jax, torch")


def training_feed(inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int) -> tuple[dict[str, Any], str]:
    """Keyword arguments for ``model.fit`` and a label of the input path.

    On TensorFlow the arrays go through tf.data (cached, reshuffled each epoch, prefetched) so the next batch is ready
    while a step runs; elsewhere Keras' own array adapter feeds them.
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        dataset = (
            tf.data.Dataset.from_tensor_slices((inputs, targets))
            .cache()
            .shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        return {"x": dataset, "shuffle": False}, "tf.data (cache, shuffle, prefetch)"  # shuffled in the pipeline
    return {"x": inputs, "y": targets, "batch_size": batch_size, "shuffle": True}, "numpy arrays (Keras adapter)"


def epoch_timer_callback(on_begin: Callable[[], None], on_end: Callable[[], None]) -> keras.callbacks.Callback:
    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            on_begin()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            on_end()

    return EpochTimer()


def compile_autoencoder(model: keras.Model, learning_rate: float, jit_compile: bool) -> None:
    """The one training configuration every cell and every cross-check uses: Adam on binary cross-entropy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        jit_compile=jit_compile,
    )


def fit_timed(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, *, batch_size: int, epochs: int,
              seed: int, clock: Callable[[], float] | None = None,
              checkpoint_dir: str | None = None) -> tuple[float, Any, str]:
    """Train with every epoch timed. Returns (final training loss, the EpochClock, the input path's label).

    With ``checkpoint_dir``, Keras' BackupAndRestore saves weights and optimizer state after every epoch and, when
    the folder already holds a backup (an interrupted run being resumed), restores it and trains only the epochs
    left; the EpochClock then holds only the epochs this process ran."""
    from bench.speed import EpochClock

    timer = EpochClock(clock) if clock is not None else EpochClock()
    feed, label = training_feed(inputs, targets, batch_size, seed)
    callbacks: list[keras.callbacks.Callback] = [epoch_timer_callback(timer.begin, timer.end)]
    if checkpoint_dir:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(checkpoint_dir, delete_checkpoint=True))
    history = model.fit(epochs=epochs, verbose=0, callbacks=callbacks, **feed)
    return float(history.history["loss"][-1]), timer, label
