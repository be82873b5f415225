"""Keras on JAX: ``jax.jit`` over the model's stateless call; autodiff by ``jax.jacrev`` under ``jax.vmap``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from aebench.backends.base import Backend, Forward

if TYPE_CHECKING:
    import keras


class JaxBackend(Backend):
    name = "jax"
    extra = "jax"

    def _set_threads(self, threads: int) -> dict[str, Any]:
        # XLA's CPU client reads its thread pool size from the affinity mask, already pinned by the worker.
        return {"intra_op_threads": len(os.sched_getaffinity(0))}

    def place(self, device: str) -> None:
        """cpu: JAX is told to use its CPU platform. tpu: the first TPU core, JAX's default device on a TPU VM
        (untested here: no TPU)."""
        if device == "cpu":
            import jax

            jax.config.update("jax_platforms", "cpu")
            return
        super().place(device)

    def find_accelerators(self, kind: str) -> tuple[list[str], str | None]:
        import jax

        try:
            return [f"{device} ({device.device_kind})" for device in jax.devices(kind)], None
        except RuntimeError as error:  # "Unknown backend: 'gpu' requested, but no platforms ... are present"
            return [], f"jax.devices({kind!r}): {error}".splitlines()[0]

    def device_description(self, device: str) -> str:
        import jax

        first = jax.devices()[0]  # the default backend's: place() has set the platform
        return f"{first} ({first.device_kind})"

    def weights_device(self, model: keras.Model) -> str:
        return ", ".join(sorted(str(d) for d in model.weights[0].value.devices()))  # a jax.Array holds a set

    def compiled_forward(self, model: keras.Model) -> Forward:
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
            out = function(trainable, non_trainable, x)
            self.wait(out)
            return out

        return Forward("jax.jit", lambda a: jax.device_put(a), run, lambda t: np.asarray(t, dtype=np.float32))

    def wait(self, value: Any) -> None:
        value.block_until_ready()

    def jacobian_frobenius_sq(self, encoder: keras.Model, images: np.ndarray) -> np.ndarray:
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in encoder.trainable_variables]
        non_trainable = [v.value for v in encoder.non_trainable_variables]

        def code_of_one(image: Any) -> Any:
            # stateless_call without return_losses drops the contractive layer's add_loss: no tracer escapes.
            codes, _ = encoder.stateless_call(trainable, non_trainable, image[None], training=False)
            return codes[0]

        jacobian = jax.vmap(jax.jacrev(code_of_one))(jnp.asarray(images, dtype=jnp.float32))
        return np.asarray(jnp.sum(jnp.square(jacobian.reshape(len(images), -1)), axis=1))
