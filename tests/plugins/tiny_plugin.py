"""A user's own autoencoder, registered through AEBENCH_PLUGINS=tiny_plugin (tests/plugins on PYTHONPATH)."""

from __future__ import annotations

from aebench.models.registry import VariantSpec


def build_tiny(*, latent_dim: int) -> object:
    import keras
    from keras import layers

    inputs = keras.Input(shape=(28, 28, 1), name="image")
    latent = layers.Dense(latent_dim, name="latent")(layers.Flatten()(inputs))
    outputs = layers.Reshape((28, 28, 1))(layers.Dense(784, activation="sigmoid")(latent))
    return keras.Model(inputs, outputs, name="tiny")


aebench_variants = [VariantSpec(name="tiny", builder="tiny_plugin:build_tiny", defaults={"latent_dim": 4},
                                allowed={"latent_dim": (1, 64)}, corrupts_input=False,
                                description="a user's plugin: 784-4-784, one dense layer each way")]

SLASHED = [VariantSpec(name="tiny/v2", builder="tiny_plugin:build_tiny", defaults={"latent_dim": 4},
                      allowed={"latent_dim": (1, 64)}, corrupts_input=False, description="a name no cell key can hold")]

NOT_A_SPEC = 42  # what a mistaken AEBENCH_PLUGINS=tiny_plugin:NOT_A_SPEC points at
