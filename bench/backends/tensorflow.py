"""Keras on TensorFlow: tf.function inference, a tf.data training feed, TPUs through TPUStrategy."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from aebench.backends.base import Backend, Forward

if TYPE_CHECKING:
    import keras


class TensorFlowBackend(Backend):
    name = "tensorflow"

    def __init__(self) -> None:
        super().__init__()
        self._tpu_strategy: Any = None  # set by place("tpu")

    def _set_threads(self, threads: int) -> dict[str, Any]:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # Inter-op threads run independent ops (the input pipeline beside the step) at once; more than the pinned
        # cores would only oversubscribe them.
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        return {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}

    def place(self, device: str) -> None:
        """tpu: connect to the cluster (``_tpu_resolver``), initialise it, and enter ``TPUStrategy(resolver).scope()``:
        the model's variables are created on the TPU and ``fit()`` runs its steps there, with batches of a static shape
        (``training_feed`` drops the remainder); the compiled forward call runs through ``strategy.run``. Untested
        here (no TPU): the detection and the skip path are what the tests cover."""
        if device != "tpu":
            super().place(device)
            return
        import tensorflow as tf

        resolver = _tpu_resolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        self._tpu_strategy = tf.distribute.TPUStrategy(resolver)
        self._placement.enter_context(self._tpu_strategy.scope())

    def find_accelerators(self, kind: str) -> tuple[list[str], str | None]:
        """A TPU is found through its cluster resolver, which raises when no TPU is named or attached."""
        import tensorflow as tf

        if kind == "tpu":
            try:
                resolver = _tpu_resolver()
            except (ValueError, RuntimeError) as error:  # ValueError: "Please provide a TPU Name to connect to."
                return [], f"TPUClusterResolver: {error}"
            return [f"TPU cluster {resolver.master() or 'local'}"], None
        found = tf.config.list_physical_devices("GPU")
        if found:
            return [_gpu_name(tf, device) for device in found], None
        if not tf.test.is_built_with_cuda():
            return [], f"this TensorFlow {tf.__version__} build has no CUDA support (tensorflow-cpu)"
        return [], "TensorFlow found no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"

    def device_description(self, device: str) -> str:
        import tensorflow as tf

        devices = tf.config.list_logical_devices(device.upper())
        return devices[0].name if devices else f"no {device}"

    def compiled_forward(self, model: keras.Model) -> Forward:
        import tensorflow as tf

        strategy = self._tpu_strategy
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
            self.wait(out)
            return out

        return Forward("tf.function", lambda a: tf.constant(a), run, lambda t: t.numpy().astype(np.float32))

    def wait(self, value: Any) -> None:
        value.numpy()  # CPU runs synchronously; on a GPU this waits for the result

    def training_feed(self, inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                      shuffle: bool = True) -> tuple[dict[str, Any], str]:
        """The arrays go through tf.data (cached, reshuffled each epoch, two batches prefetched) so the next batch is
        ready while a step runs; ``shuffle=False`` keeps the arrays' order.

        tf.data's autotuner is switched off. Its model thread competes with the training step for the pinned cores,
        and a finished iterator waits for it. On 1 core, ``aebench crosscheck --threads 1 --train-size 6000 --epochs 3
        --train-rounds 2 --rounds 3`` measured plain ``fit`` (Keras' own autotuned pipeline) at 1,172 images/s against
        1,692 for this feed, and 1.60 s against 0.06 s spent in ``fit()`` outside its epochs.
        """
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).cache()
        if shuffle:
            dataset = dataset.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        dataset = (
            dataset.batch(batch_size, drop_remainder=self._tpu_strategy is not None)  # a TPU step needs a static shape
            .prefetch(2)
            .with_options(data_options_without_autotune())
        )
        label = "tf.data (cache, shuffle, prefetch 2, no autotune)" if shuffle else \
            "tf.data (cache, prefetch 2, no autotune, in order)"
        return {"x": dataset, "shuffle": False}, label  # any shuffling happens in the pipeline

    def jacobian_frobenius_sq(self, encoder: keras.Model, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        x = tf.constant(np.asarray(images, dtype=np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            codes = encoder(x, training=False)
        jacobian = tape.batch_jacobian(codes, x)  # (N, *code shape, *image shape)
        squares = tf.reduce_sum(tf.square(tf.reshape(jacobian, (len(images), -1))), axis=1)
        return squares.numpy()


def data_options_without_autotune() -> Any:
    """tf.data options with the autotuner off (see TensorFlowBackend.training_feed for why)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _gpu_name(tf: Any, device: Any) -> str:
    details = tf.config.experimental.get_device_details(device)
    return f"{device.name} {details.get('device_name', '')}".strip()


def _tpu_resolver() -> Any:
    """The TensorFlow TPU cluster: the one TPU_NAME names (a Cloud TPU node) or, on a TPU VM, the local chips."""
    import tensorflow as tf

    if os.environ.get("TPU_NAME") or not tf.config.list_physical_devices("TPU"):
        # Without TPU_NAME this raises ValueError at once, without any network call: that is the skip reason.
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
