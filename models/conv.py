"""The paper's convolutional autoencoder (2,561 parameters)."""

from __future__ import annotations

import keras
from keras import layers

from aebench.models.dense import IMAGE_SHAPE


def build_conv() -> keras.Model:
    """28x28x1 -> 7x7x8 code -> 28x28x1, exactly as in the paper."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    # Encoder
    x = layers.Conv2D(
        16, 3, padding="same", activation="relu", name="enc_conv1"
    )(inputs)
    x = layers.MaxPooling2D(2, name="enc_pool1")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc_conv2")(x)
    latent = layers.MaxPooling2D(2, name="latent")(x)
    # Decoder
    x = layers.Conv2D(
        8, 3, padding="same", activation="relu", name="dec_conv1"
    )(latent)
    x = layers.UpSampling2D(2, name="dec_up1")(x)
    x = layers.Conv2DTranspose(
        8, 3, padding="same", activation="relu", name="dec_deconv1"
    )(x)
    x = layers.UpSampling2D(2, name="dec_up2")(x)
    outputs = layers.Conv2DTranspose(
        1, 3, padding="same", activation="sigmoid", name="dec_output"
    )(x)
    return keras.Model(inputs, outputs, name="conv")
