"""What differs between Keras backends inside a worker: one class per backend behind ``Backend`` (base.py).

``current()`` is the instance for the backend Keras runs on; code outside this package asks it, never the backend's
name. Used only in worker processes (and the cross-check), after KERAS_BACKEND is set and before the backend runs its
first op, because thread settings are fixed at that point.
"""

from __future__ import annotations

import functools

from aebench.backends.base import Backend, Forward
from aebench.backends.jax import JaxBackend
from aebench.backends.tensorflow import TensorFlowBackend
from aebench.backends.torch import TorchBackend

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TensorFlowBackend, JaxBackend, TorchBackend)}

__all__ = ["BACKENDS", "Backend", "Forward", "current"]


@functools.cache
def current() -> Backend:
    """The backend Keras runs on in this process, one instance per process (it holds the cell's placement)."""
    import keras

    name = keras.backend.backend()
    if name not in BACKENDS:
        raise ValueError(f"Keras backend {name!r} is not supported: allowed {', '.join(BACKENDS)}")
    return BACKENDS[name]()
