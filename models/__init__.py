"""Autoencoder model zoo for aebench.

Every model maps (28, 28, 1) float32 images in [0, 1] to the same shape through
a sigmoid output, has its code layer named ``"latent"`` and is returned
uncompiled (the harness compiles with binary cross-entropy and Adam).

Typical use::

    model = build_autoencoder("sparse_kl", {"rho": 0.1}, seed=3)
    encoder = encoder_of(model)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aebench.models import registry
from aebench.models.registry import REGISTRY, HParams, VariantSpec, builder_of, resolve_hparams

if TYPE_CHECKING:
    import keras

# Importing this package must not import Keras (seconds of TensorFlow start-up): the harness validates matrices
# against the registry in processes that never build a model. The Keras-backed names load on first use.
_LAZY = {
    "IMAGE_SHAPE": "aebench.models.dense",
    "ContractiveDense": "aebench.models.regularizers",
    "GaussianCorruption": "aebench.models.regularizers",
    "KLSparseDense": "aebench.models.regularizers",
    "L1SparseDense": "aebench.models.regularizers",
    "jacobian_frobenius_sq_closed_form": "aebench.models.regularizers",
}


def __getattr__(name: str) -> Any:
    if name == "VARIANTS":  # read when asked: plugins add to it after this package is imported
        return registry.VARIANTS
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")

__all__ = [
    "IMAGE_SHAPE",
    "REGISTRY",
    "VARIANTS",
    "ContractiveDense",
    "GaussianCorruption",
    "HParams",
    "KLSparseDense",
    "L1SparseDense",
    "VariantSpec",
    "build_autoencoder",
    "encoder_of",
    "jacobian_frobenius_sq_closed_form",
    "parameter_count",
    "resolve_hparams",
]


def build_autoencoder(
    variant: str, hparams: Mapping[str, object] | None = None, *, seed: int = 0
) -> "keras.Model":
    """Build the named variant, uncompiled, with reproducible initial weights.

    Reseeds Keras' global RNGs (Python, NumPy, backend) with ``seed`` first.
    """
    import keras

    resolved = resolve_hparams(variant, hparams)
    keras.utils.set_random_seed(seed)
    builder = builder_of(variant)
    if REGISTRY[variant].corrupts_input:
        # The corruption noise gets its own seed so it too is reproducible.
        return builder(**resolved, seed=seed)
    return builder(**resolved)


def encoder_of(model: "keras.Model") -> "keras.Model":
    """Sub-model from the autoencoder's input to its ``"latent"`` layer output."""
    import keras

    latent = model.get_layer("latent")
    # model.input (not the list model.inputs) so that calling the encoder on a
    # bare array does not warn about a structure mismatch.
    return keras.Model(model.input, latent.output, name=f"{model.name}_encoder")


def parameter_count(variant: str, hparams: Mapping[str, object] | None = None) -> int:
    """Total number of weights of the variant built with these hyperparameters.

    Builds a throwaway model without reseeding, so it advances the global RNG;
    build_autoencoder reseeds, so its weights are unaffected.
    """
    resolved = resolve_hparams(variant, hparams)
    extra = {"seed": 0} if REGISTRY[variant].corrupts_input else {}
    return int(builder_of(variant)(**resolved, **extra).count_params())
