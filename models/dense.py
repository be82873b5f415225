"""Fully connected autoencoders on 28x28x1 images.

All of them flatten the image, squeeze it through a layer named ``"latent"``
and reshape a sigmoid output back to (28, 28, 1). They differ only in the
latent layer (and, for ``denoising``, a corruption layer in front).

The plain bottleneck (``undercomplete``, ``denoising``) has a linear code, the
nonlinear generalisation of PCA. With a relu code, ``make bench`` at commit
998a7aa found 44-53% of the undercomplete AE's 32 units dead
(``diag.dead_unit_fraction``) and a latent probe of 0.794-0.838; the linear code
scores 0.860-0.864 in the same profile. The sparse variants keep non-negative
codes: their penalties push units to exactly zero, which is what makes them
sparse.
"""

from __future__ import annotations

import keras
from keras import layers

from aebench.models.regularizers import (
    ContractiveDense,
    GaussianCorruption,
    InputCentering,
    KLSparseDense,
    L1SparseDense,
)

IMAGE_SHAPE = (28, 28, 1)
_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


def _dense_decoder(code, hidden_units: int):
    """Shared decoder: Dense(hidden, relu) - Dense(784, sigmoid) - Reshape."""
    x = layers.Dense(hidden_units, activation="relu", name="decoder_hidden")(code)
    x = layers.Dense(_PIXELS, activation="sigmoid", name="decoder_output")(x)
    return layers.Reshape(IMAGE_SHAPE, name="reshape")(x)


def build_undercomplete(*, latent_dim: int, hidden_units: int) -> keras.Model:
    """Plain bottleneck autoencoder: 784 - hidden - latent (linear) - hidden - 784."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(hidden_units, activation="relu", name="encoder_hidden")(x)
    latent = layers.Dense(latent_dim, name="latent")(x)
    # Decoder
    outputs = _dense_decoder(latent, hidden_units)
    return keras.Model(inputs, outputs, name="undercomplete")


def build_sparse_l1(*, latent_dim: int, hidden_units: int, l1: float) -> keras.Model:
    """Undercomplete topology with an L1 penalty on the (relu) latent code."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(hidden_units, activation="relu", name="encoder_hidden")(x)
    latent = L1SparseDense(latent_dim, l1=l1, activation="relu", name="latent")(x)
    # Decoder
    outputs = _dense_decoder(latent, hidden_units)
    return keras.Model(inputs, outputs, name="sparse_l1")


def _pixels(inputs, center_input: int):
    """The flattened image, centred by a running mean of the training inputs when ``center_input`` is 1 (a sigmoid
    code on raw pixels saturates: see InputCentering)."""
    x = layers.Flatten(name="flatten")(inputs)
    return InputCentering(name="centering")(x) if center_input else x


def build_sparse_kl(*, latent_dim: int, hidden_units: int, rho: float, beta: float,
                    center_input: int) -> keras.Model:
    """Sigmoid latent code pushed towards mean activation rho by a KL penalty."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder, on centred pixels: like the contractive code, a sigmoid code learns faster from zero-mean inputs
    # (README, "How the defaults were tuned").
    x = _pixels(inputs, center_input)
    x = layers.Dense(hidden_units, activation="relu", name="encoder_hidden")(x)
    latent = KLSparseDense(latent_dim, rho=rho, beta=beta, name="latent")(x)
    # Decoder
    outputs = _dense_decoder(latent, hidden_units)
    return keras.Model(inputs, outputs, name="sparse_kl")


def build_denoising(*, latent_dim: int, hidden_units: int, noise_factor: float, seed: int | None) -> keras.Model:
    """Undercomplete autoencoder that corrupts its own input during training.

    Fed clean images, it learns to map ``clip(x + noise_factor * N(0,1))``
    back to x; at inference the corruption layer is the identity.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder
    x = GaussianCorruption(noise_factor, seed=seed, name="corruption")(inputs)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(hidden_units, activation="relu", name="encoder_hidden")(x)
    latent = layers.Dense(latent_dim, name="latent")(x)
    # Decoder
    outputs = _dense_decoder(latent, hidden_units)
    return keras.Model(inputs, outputs, name="denoising")


def build_contractive(*, latent_dim: int, hidden_units: int, contractive_lambda: float,
                      center_input: int) -> keras.Model:
    """One sigmoid encoder layer with a Jacobian (contractive) penalty."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder: a single layer, so the closed-form Jacobian norm is exact; on centred pixels, or it saturates.
    x = _pixels(inputs, center_input)
    latent = ContractiveDense(
        latent_dim, contractive_lambda=contractive_lambda, name="latent"
    )(x)
    # Decoder
    outputs = _dense_decoder(latent, hidden_units)
    return keras.Model(inputs, outputs, name="contractive")
