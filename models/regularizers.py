"""Custom layers that carry the regularization of the non-plain autoencoders.

Every penalty is added with ``self.add_loss`` inside ``call()`` from the live
activations and the live kernel variable, so it is part of the traced graph on
every backend and its gradient reaches the weights.

Scaling: all penalties are *per-example means* (or, for the KL term, a function
of the batch-mean activation), so their strength does not depend on the batch
size. The L1 term is ``l1 * mean_over_batch(sum_j |h_j|)``. It is written
out here instead of using ``activity_regularizer=L1(...)`` so the scaling does
not depend on the Keras version: Keras 3 releases before the fix for
keras-team/keras#22018 (PR #22021, January 2026) added the built-in activity
penalty summed over the batch, undivided by the batch size; the installed
3.15 divides it. The explicit layer scales the same on any version.

Precision: each penalty is computed in float32 even under a mixed policy
(mixed_bfloat16, mixed_float16). Keras adds the layer losses to the float32
loss and refuses a bfloat16 term, and a bfloat16 sum over hundreds of units
would keep only about three significant digits anyway.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

_PACKAGE = "aebench"


def _require_sigmoid(layer_name: str, kwargs: dict[str, Any]) -> None:
    """Pop ``activation`` from kwargs and insist that it is sigmoid."""
    # from_config() passes the serialized activation back in; anything but
    # sigmoid would silently invalidate the penalty's maths.
    activation = kwargs.pop("activation", "sigmoid")
    if keras.activations.get(activation) is not keras.activations.sigmoid:
        raise ValueError(
            f"{layer_name} requires activation='sigmoid', got {activation!r}"
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class L1SparseDense(layers.Dense):
    """Dense layer adding ``l1 * mean_batch(sum_j |h_j|)`` on its output h."""

    def __init__(self, units: int, l1: float, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.l1 = float(l1)

    def call(self, inputs, training=None):
        h = super().call(inputs, training=training)
        if training is not False:  # inference computes no penalty: a timed call does only the model's work
            self.add_loss(self.l1 * ops.mean(ops.sum(ops.abs(ops.cast(h, "float32")), axis=-1)))
        return h

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l1": self.l1}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KLSparseDense(layers.Dense):
    """Sigmoid Dense layer adding ``beta * sum_j KL(rho || rho_hat_j)``.

    ``rho_hat_j`` is the mean activation of unit j over the batch.
    """

    def __init__(
        self, units: int, rho: float, beta: float, **kwargs: Any
    ) -> None:
        _require_sigmoid(type(self).__name__, kwargs)
        super().__init__(units, activation="sigmoid", **kwargs)
        self.rho = float(rho)
        self.beta = float(beta)

    def call(self, inputs, training=None):
        h = super().call(inputs, training=training)
        if training is not False:  # inference computes no penalty: a timed call does only the model's work
            self.add_loss(self.beta * kl_sparsity(ops.cast(h, "float32"), self.rho))
        return h

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "beta": self.beta}


def kl_sparsity(h, rho: float):
    """``sum_j KL(rho || rho_hat_j)`` for activations h of shape (batch, units)."""
    eps = keras.config.epsilon()
    # A dead or saturated unit makes rho_hat exactly 0 or 1 -> log(0).
    rho_hat = ops.clip(ops.mean(h, axis=0), eps, 1.0 - eps)
    kl = rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log(
        (1.0 - rho) / (1.0 - rho_hat)
    )
    return ops.sum(kl)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ContractiveDense(layers.Dense):
    """Sigmoid Dense layer adding ``lambda * mean_batch ||J_f(x)||_F^2``.

    For h = sigmoid(x W + b), dh_j/dx_i = h_j (1 - h_j) W_ij, hence
    ``||J||_F^2 = sum_j (h_j (1 - h_j))^2 * sum_i W_ij^2``.
    """

    def __init__(
        self, units: int, contractive_lambda: float, **kwargs: Any
    ) -> None:
        _require_sigmoid(type(self).__name__, kwargs)
        super().__init__(units, activation="sigmoid", **kwargs)
        self.contractive_lambda = float(contractive_lambda)

    def call(self, inputs, training=None):
        h = super().call(inputs, training=training)
        if training is not False:  # inference computes no penalty: a timed call does only the model's work
            # self.kernel is the live variable: the penalty must pull on the
            # weights being trained, not on a snapshot of them.
            penalty = _sigmoid_jacobian_frobenius_sq(
                ops.cast(h, "float32"), ops.cast(self.kernel, "float32")
            )
            self.add_loss(self.contractive_lambda * ops.mean(penalty))
        return h

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "contractive_lambda": self.contractive_lambda,
        }


def _sigmoid_jacobian_frobenius_sq(h, kernel):
    """Per-example ``||dh/dx||_F^2`` given sigmoid outputs h and kernel (in, out)."""
    col_norms_sq = ops.sum(ops.square(kernel), axis=0)
    return ops.sum(ops.square(h * (1.0 - h)) * col_norms_sq, axis=-1)


def jacobian_frobenius_sq_closed_form(layer: layers.Dense, x):
    """Per-example squared Frobenius norm of the Jacobian of a sigmoid Dense.

    ``x`` may be images; it is flattened to (batch, features) first. The layer
    must be built and use a sigmoid activation. No loss is added.
    """
    if keras.activations.get(layer.activation) is not keras.activations.sigmoid:
        raise ValueError(
            f"closed form needs a sigmoid Dense layer, {layer.name!r} "
            f"uses {layer.activation!r}"
        )
    x = ops.convert_to_tensor(x, dtype=layer.compute_dtype)
    x = ops.reshape(x, (ops.shape(x)[0], -1))
    # Dense.call directly: skips ContractiveDense.call and so its add_loss.
    h = layers.Dense.call(layer, x)
    return _sigmoid_jacobian_frobenius_sq(h, layer.kernel)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianCorruption(layers.Layer):
    """Adds ``factor * N(0, 1)`` noise and clips to [0, 1], in training only."""

    def __init__(
        self, factor: float, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.seed = seed
        # Created once here (not per call) so the RNG state is a variable that
        # advances inside compiled train steps on every backend.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if not training or self.factor == 0.0:
            return inputs
        noise = keras.random.normal(
            ops.shape(inputs), seed=self.seed_generator, dtype=self.compute_dtype
        )
        return ops.clip(inputs + self.factor * noise, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InputCentering(layers.Layer):
    """Subtracts a running per-feature mean of the training inputs: ``x - mean``.

    Why: a sigmoid unit fed 784 raw pixels, all >= 0 (a noisy background averages 0.1-0.2), gets updates that move
    its pre-activation the same way for every image. With Adam each weight steps by about the learning rate, so one
    step shifts the pre-activation by about ``lr * sum(x)``: near 1 at lr 5e-3, and the code saturates (mean
    activation 0.88-0.93 at commit eefcf57) where its gradient vanishes. Zero-mean inputs (LeCun et al., "Efficient
    BackProp", 1998) remove that common direction.

    The mean is a running average of batch means (``momentum`` per step), used as a constant: no gradient flows
    through it and, at inference, the layer is a fixed shift. A shift leaves the Jacobian with respect to the image
    unchanged, so the contractive penalty's closed form stays exact.
    """

    def __init__(self, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.momentum = float(momentum)

    def build(self, input_shape) -> None:
        self.moving_mean = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", trainable=False,
                                           name="moving_mean")

    def call(self, inputs, training=False):
        if training:
            batch_mean = ops.mean(ops.cast(inputs, self.moving_mean.dtype), axis=0)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * batch_mean)
        return inputs - ops.cast(ops.stop_gradient(self.moving_mean), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}
