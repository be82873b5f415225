"""The one interface every Keras backend implements for a worker: threads, precision, placement, accelerators, the
compiled forward call, the training feed, device sync and the contractive Jacobian by autodiff.

Nothing here imports Keras or a framework at import time: ``aebench.crosscheck`` and the tests read a backend's
``name`` before KERAS_BACKEND is settled, and Keras fixes the backend on its first import.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import keras


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
        outputs = [self.to_numpy(self.run(self.prepare(images[i : i + batch_size])))
                   for i in range(0, len(images), batch_size)]
        return np.concatenate(outputs).astype(np.float32)


class Backend(abc.ABC):
    """What differs between Keras backends inside a worker process.

    One instance per process (``aebench.backends.current``): placement enters scopes that stay open for the life of
    the cell's child process, and a TensorFlow TPU keeps its strategy here.
    """

    name: ClassVar[str]
    # How to install the framework when it is missing: a pip extra of aebench, or None when aebench depends on it.
    extra: ClassVar[str | None] = None

    def __init__(self) -> None:
        # Scopes entered by place(): never closed, because a cell's child process lives for that one cell.
        self._placement = contextlib.ExitStack()

    # -- set-up, before the backend's first op -----------------------------------------------------------------------

    def configure_threads(self, threads: int | None) -> dict[str, Any]:
        """Set intra-op (and inter-op) threads before the backend initialises; returns what was set."""
        return {} if threads is None else self._set_threads(threads)

    @abc.abstractmethod
    def _set_threads(self, threads: int) -> dict[str, Any]:
        """Set the thread pools; returns ``intra_op_threads`` (and ``inter_op_threads``) as the backend reports them."""

    def set_precision(self, precision: str) -> None:
        import keras

        keras.mixed_precision.set_dtype_policy(precision)

    def place(self, device: str) -> None:
        """Put everything this process creates from now on onto ``device`` (cpu, gpu or tpu).

        Called once per cell child, after ``configure_threads`` and before the backend's first op. A GPU or TPU is the
        backend's first, named explicitly so that a missing one fails the cell instead of running it silently on the
        CPU. On a CPU nothing is needed here: the worker has emptied CUDA_VISIBLE_DEVICES first.
        """
        if device != "cpu":
            import keras

            self._placement.enter_context(keras.device(f"{device}:0"))

    # -- what the process runs on ------------------------------------------------------------------------------------

    def version(self) -> str:
        """The framework's version, or "unknown" when it cannot be read (not installed, no __version__)."""
        try:
            return __import__(self.name).__version__
        except (ImportError, AttributeError):
            return "unknown"

    @abc.abstractmethod
    def find_accelerators(self, kind: str) -> tuple[list[str], str | None]:
        """The GPUs or TPUs this backend can use, by name, and why there are none (None when some were found).

        Runs in a probe child only: looking may initialise the runtime, after which thread settings are fixed.
        """

    @abc.abstractmethod
    def device_description(self, device: str) -> str:
        """What the cell really ran on, in the backend's own words."""

    def weights_device(self, model: keras.Model) -> str:
        """Where the model's first weight lives: the proof of what a cell ran on."""
        return str(model.weights[0].value.device)

    # -- running the model -------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def compiled_forward(self, model: keras.Model) -> Forward:
        """The model's inference call, compiled where the backend compiles, synchronised with the device."""

    @abc.abstractmethod
    def wait(self, value: Any) -> None:
        """Return only once the device has computed ``value``: timing an asynchronous dispatch would time nothing."""

    def training_feed(self, inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                      shuffle: bool = True) -> tuple[dict[str, Any], str]:
        """Keyword arguments for ``model.fit`` and a label of the input path.

        Here Keras' own array adapter feeds the arrays. ``shuffle=False`` keeps the arrays' order, batch for batch the
        order of ``fit(x, y, shuffle=False)``: how the cross-check shows that a feed leaves training as it was.
        """
        return {"x": inputs, "y": targets, "batch_size": batch_size, "shuffle": shuffle}, "numpy arrays (Keras adapter)"

    @abc.abstractmethod
    def jacobian_frobenius_sq(self, encoder: keras.Model, images: np.ndarray) -> np.ndarray:
        """Per image, the squared Frobenius norm of d(code)/d(image), by the backend's autodiff: shape (N,)."""
