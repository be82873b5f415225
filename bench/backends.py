"""What differs between Keras backends inside a worker: threads, the compiled forward call, the training feed.

Imported only in worker processes, after KERAS_BACKEND is set and before the backend runs its first op, because
thread settings are fixed at that point.
"""

from __future__ import annotations

import contextlib
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
        try:
            torch.set_num_interop_threads(threads)  # as on TensorFlow: no more than the pinned cores
        except RuntimeError:
            pass  # torch allows it once, before any parallel work; the count in use is recorded below
        info["intra_op_threads"] = torch.get_num_threads()
        info["inter_op_threads"] = torch.get_num_interop_threads()
    elif name == "jax":
        # XLA's CPU client reads its thread pool size from the affinity mask, already pinned by the worker.
        info["intra_op_threads"] = len(os.sched_getaffinity(0))
    return info


def set_precision(precision: str) -> None:
    keras.mixed_precision.set_dtype_policy(precision)


def find_accelerators(kind: str) -> tuple[list[str], str | None]:
    """The GPUs or TPUs the current backend can use, by name, and why there are none (None when some were found).

    Runs in a probe child only: on TensorFlow, looking may initialise the runtime, after which thread settings are
    fixed. A TensorFlow TPU is found through its cluster resolver, which raises when no TPU is named or attached.
    """
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        if kind == "tpu":
            try:
                resolver = _tpu_resolver()
            except (ValueError, RuntimeError) as error:  # ValueError: "Please provide a TPU Name to connect to."
                return [], f"TPUClusterResolver: {error}"
            return [f"TPU cluster {resolver.master() or 'local'}"], None
        found = tf.config.list_physical_devices("GPU")
        if found:
            return [_tf_gpu_name(tf, device) for device in found], None
        if not tf.test.is_built_with_cuda():
            return [], f"this TensorFlow {tf.__version__} build has no CUDA support (tensorflow-cpu)"
        return [], "TensorFlow found no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"
    if name == "jax":
        import jax

        try:
            return [f"{device} ({device.device_kind})" for device in jax.devices(kind)], None
        except RuntimeError as error:  # "Unknown backend: 'gpu' requested, but no platforms ... are present"
            return [], f"jax.devices({kind!r}): {error}".splitlines()[0]
    if name == "torch":
        import torch

        if kind == "tpu":
            return [], "aebench runs torch on CPUs and CUDA GPUs only (torch_xla is not supported)"
        if torch.cuda.is_available():
            return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())], None
        if torch.version.cuda is None:
            return [], f"this torch {torch.__version__} build has no CUDA support (CPU wheel)"
        return [], "torch.cuda found no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"
    return [], f"backend {name!r} is not supported"


def _tf_gpu_name(tf: Any, device: Any) -> str:
    details = tf.config.experimental.get_device_details(device)
    return f"{device.name} {details.get('device_name', '')}".strip()


def _tpu_resolver() -> Any:
    """The TensorFlow TPU cluster: the one TPU_NAME names (a Cloud TPU node) or, on a TPU VM, the local chips."""
    import tensorflow as tf

    if os.environ.get("TPU_NAME") or not tf.config.list_physical_devices("TPU"):
        # Without TPU_NAME this raises ValueError at once, without any network call: that is the skip reason.
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")


# Scopes entered by place(): never closed, because a cell's child process lives for that one cell.
_PLACEMENT = contextlib.ExitStack()
_TPU_STRATEGY: Any = None


def place(device: str) -> None:
    """Put everything this process creates from now on onto ``device`` (cpu, gpu or tpu) of the current backend.

    Called once per cell child, after ``configure_threads`` and before the backend's first op.

    - cpu: JAX is told to use its CPU platform; Keras on torch keeps its tensors on the CPU (it picks CUDA at import
      when a GPU is present). TensorFlow already sees no GPU: the worker empties CUDA_VISIBLE_DEVICES first.
    - gpu: the backend's first GPU, named explicitly so that a missing GPU fails the cell instead of running it
      silently on the CPU.
    - tpu on TensorFlow: connect to the cluster (``_tpu_resolver``), initialise it, and enter
      ``TPUStrategy(resolver).scope()``: the model's variables are created on the TPU and ``fit()`` runs its steps
      there, with batches of a static shape (``training_feed`` drops the remainder); the compiled forward call runs
      through ``strategy.run``. tpu on JAX: the first TPU core, JAX's default device on a TPU VM. Neither TPU path can
      run here (no TPU); the detection and the skip path are what the tests cover.
    """
    global _TPU_STRATEGY
    name = backend_name()
    if device == "cpu":
        if name == "jax":
            import jax

            jax.config.update("jax_platforms", "cpu")
        elif name == "torch":
            _PLACEMENT.enter_context(keras.device("cpu"))
        return
    if device == "tpu" and name == "tensorflow":
        import tensorflow as tf

        resolver = _tpu_resolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        _TPU_STRATEGY = tf.distribute.TPUStrategy(resolver)
        _PLACEMENT.enter_context(_TPU_STRATEGY.scope())
        return
    _PLACEMENT.enter_context(keras.device(f"{device}:0"))


def weights_device(model: keras.Model) -> str:
    """Where the model's first weight lives: the proof of what a cell ran on."""
    value = model.weights[0].value
    devices = getattr(value, "devices", None)  # a jax.Array holds a set of devices
    return ", ".join(sorted(str(d) for d in devices())) if callable(devices) else str(value.device)


def device_description(device: str) -> str:
    """What the cell really ran on, in the backend's own words."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices(device.upper())
        return devices[0].name if devices else f"no {device}"
    if name == "jax":
        import jax

        first = jax.devices()[0]  # the default backend's: place() has set the platform
        return f"{first} ({first.device_kind})"
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

        strategy = _TPU_STRATEGY
        # One exact-shape trace per input shape (a cell uses two or three), as a hand-written loop gets: with
        # reduce_retracing the second shape turns the trace generic, (None, 28, 28, 1), and batch-1 calls on it
        # measured 1.14x a hand-written tf.function's p50 in `aebench crosscheck` (1.01x with exact shapes).
        if strategy is None:
            function = tf.function(lambda x: model(x, training=False))
        else:
            # A TPU runs the call on every core, each with the whole batch; the first core's answer is kept.
            function = tf.function(lambda x: strategy.experimental_local_results(
                strategy.run(lambda y: model(y, training=False), args=(x,)))[0])

        def run(x: Any) -> Any:
            out = function(x)
            out.numpy()  # CPU runs synchronously; on a GPU this waits for the result
            return out

        return Forward("tf.function", lambda a: tf.constant(a), run, lambda t: t.numpy().astype(np.float32))
    if name == "jax":
        import jax

        import jax.numpy as jnp

        # Copies, not the variables' own arrays: Keras' jitted predict() and fit() donate those buffers to XLA,
        # which deletes them, and a later call here would fail with "Array has been deleted".
        trainable = [jnp.copy(v.value) for v in model.trainable_variables]
        non_trainable = [jnp.copy(v.value) for v in model.non_trainable_variables]

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


def training_feed(inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                  shuffle: bool = True) -> tuple[dict[str, Any], str]:
    """Keyword arguments for ``model.fit`` and a label of the input path.

    On TensorFlow the arrays go through tf.data (cached, reshuffled each epoch, two batches prefetched) so the next
    batch is ready while a step runs; elsewhere Keras' own array adapter feeds them. ``shuffle=False`` keeps the
    arrays' order, batch for batch the order of ``fit(x, y, shuffle=False)``: how the cross-check shows that the feed
    leaves training as it was.

    tf.data's autotuner is switched off. Its model thread competes with the training step for the pinned cores, and a
    finished iterator waits for it. On 1 core, ``aebench crosscheck --threads 1 --train-size 6000 --epochs 3
    --train-rounds 2 --rounds 3`` measured plain ``fit`` (Keras' own autotuned pipeline) at 1,172 images/s against
    1,692 for this feed, and 1.60 s against 0.06 s spent in ``fit()`` outside its epochs.
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).cache()
        if shuffle:
            dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        dataset = (
            dataset.batch(batch_size, drop_remainder=_TPU_STRATEGY is not None)  # a TPU step needs a static shape
            .prefetch(2)
            .with_options(tf_data_options_without_autotune())
        )
        label = "tf.data (cache, shuffle, prefetch 2, no autotune)" if shuffle else \
            "tf.data (cache, prefetch 2, no autotune, in order)"
        return {"x": dataset, "shuffle": False}, label  # any shuffling happens in the pipeline
    return {"x": inputs, "y": targets, "batch_size": batch_size, "shuffle": shuffle}, "numpy arrays (Keras adapter)"


def tf_data_options_without_autotune() -> Any:
    """tf.data options with the autotuner off (see training_feed for why)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def epoch_timer_callback(on_begin: Callable[[], None], on_end: Callable[[], None]) -> keras.callbacks.Callback:
    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            on_begin()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            on_end()

    return EpochTimer()


def compile_autoencoder(model: keras.Model, learning_rate: float, jit_compile: bool | str) -> None:
    """The one training configuration every cell and every cross-check uses: Adam on binary cross-entropy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        jit_compile=jit_compile,
    )


def fit_timed(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, *, batch_size: int, epochs: int,
              seed: int, clock: Callable[[], float] | None = None,
              checkpoint_dir: str | None = None, shuffle: bool = True) -> tuple[float, Any, str]:
    """Train with every epoch timed. Returns (final training loss, the EpochClock, the input path's label).

    With ``checkpoint_dir``, Keras' BackupAndRestore saves weights and optimizer state after every epoch and, when
    the folder already holds a backup (an interrupted run being resumed), restores it and trains only the epochs
    left; the EpochClock then holds only the epochs this process ran."""
    from aebench.speed import EpochClock

    timer = EpochClock(clock) if clock is not None else EpochClock()
    feed, label = training_feed(inputs, targets, batch_size, seed, shuffle)
    callbacks: list[keras.callbacks.Callback] = [epoch_timer_callback(timer.begin, timer.end)]
    if checkpoint_dir:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(checkpoint_dir, delete_checkpoint=True))
    history = model.fit(epochs=epochs, verbose=0, callbacks=callbacks, **feed)
    return float(history.history["loss"][-1]), timer, label
