"""Accuracy a downstream user would feel, and diagnostics of what the autoencoder learned.

The paper judges its autoencoder by "QoS in terms of accuracy" without defining it. aebench's definition:

- **Reference classifier.** A small CNN, trained once per (dataset file, seed) on the clean training images and cached
  beside the store. A cell scores it on the clean, the noisy and the denoised test images (``quality.acc_clean``,
  ``quality.acc_noisy``, ``quality.acc_denoised``); ``quality.acc_recovered`` = (denoised - noisy) / (clean - noisy)
  is the fraction of the accuracy lost to noise that denoising wins back, the QoS headline.
- **Latent linear probe** (``quality.probe_acc``): a logistic regression on the encoder's codes of clean images.
- **Diagnostics** (``diag.*``): latent activation statistics, per-digit reconstruction error, and for the contractive
  variant its Jacobian penalty measured by autodiff beside the closed form the loss uses.
- **Robustness** (``robust.*``): the trained model evaluated over a sweep of test noise levels.

Imported only inside worker processes (it imports Keras); the CLI and the report never import it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aebench import atomic, backends
from aebench.data import Dataset, add_noise, subset
from aebench.metrics import MIN_ACCURACY_DROP, NEAR_ZERO
from aebench.quality import psnr_db

# Bump when the classifier's architecture or training recipe changes: the number is part of the cache file name, so
# a changed recipe never loads a classifier trained by the old one.
ARCH_VERSION = 1
CLASSIFIER_EPOCHS = 2
CLASSIFIER_BATCH_SIZE = 128
# Adam from 3e-3 with a cosine decay to 0 over the run: a constant 1e-3 ends two epochs at ~98.0% on MNIST, right at
# the 98% bar; the decayed schedule settles at ~98.7% in the same time.
CLASSIFIER_LEARNING_RATE = 3e-3
# The probe fits on the codes of (at most) this many of the cell's training images: the quick profile's whole subset.
# The paper profile's 60,000 would multiply the fitting time (lbfgs over the conv AE's 392-wide code) for little.
PROBE_MAX_TRAIN = 10000
PROBE_MAX_ITER = 300
DEFAULT_ROBUST_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
JACOBIAN_SAMPLE = 64


# -- reference classifier --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceClassifier:
    """The classifier and where it came from: ``cached`` says it was loaded, ``seconds`` is what obtaining it cost
    in this process (training, or loading), ``train_s`` what training it cost when it was trained."""

    model: keras.Model
    cached: bool
    seconds: float
    train_s: float | None
    test_accuracy: float
    path: Path | None


def classifier_path(dataset: Dataset, seed: int, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"classifier-{dataset.name}-{dataset.sha256[:16]}-seed{seed}-v{ARCH_VERSION}.keras"


def build_classifier(seed: int) -> keras.Model:
    """Conv(16)-Pool-Conv(32)-Pool-Dense(64)-Dense(10): about 98.7% on clean MNIST after two epochs (~30 s on 2 cores).

    Every layer is float32 whatever the cell's global precision policy: the cache key does not name a precision, so
    the classifier must not depend on it.
    """
    from keras import layers

    keras.utils.set_random_seed(seed)
    f32 = "float32"
    inputs = keras.Input(shape=(28, 28, 1), dtype=f32, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", dtype=f32, name="conv1")(inputs)
    x = layers.MaxPooling2D(2, dtype=f32, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", dtype=f32, name="conv2")(x)
    x = layers.MaxPooling2D(2, dtype=f32, name="pool2")(x)
    x = layers.Flatten(dtype=f32, name="flatten")(x)
    x = layers.Dense(64, activation="relu", dtype=f32, name="hidden")(x)
    logits = layers.Dense(10, dtype=f32, name="logits")(x)
    return keras.Model(inputs, logits, name="reference_classifier")


def _train_classifier(dataset: Dataset, seed: int, epochs: int) -> keras.Model:
    model = build_classifier(seed)
    steps = -(-len(dataset.x_train) // CLASSIFIER_BATCH_SIZE) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(CLASSIFIER_LEARNING_RATE, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    feed, _ = backends.current().training_feed(dataset.x_train, dataset.y_train, CLASSIFIER_BATCH_SIZE, seed)
    model.fit(epochs=epochs, verbose=0, **feed)
    return model


def _save_atomic(model: keras.Model, sidecar: dict[str, Any], path: Path) -> None:
    """Sidecar first, then the model, each renamed into place: a reader (another run sharing the cache) sees either
    nothing or complete files, and a model file always has its sidecar."""
    atomic.write_json(path.with_suffix(".json"), sidecar)
    with atomic.replacing(path) as partial:
        model.save(partial)


def _load(path: Path) -> tuple[keras.Model, dict[str, Any]] | None:
    """The cached classifier and its sidecar, or None when absent or unreadable (then it is trained afresh)."""
    if not path.is_file():
        return None
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - a corrupt cache entry is retrained, not fatal
        print(f"aebench: cached classifier {path} is unreadable ({type(error).__name__}: {error}); retraining")
        return None
    try:
        sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sidecar = {}
    return model, sidecar


def reference_classifier(dataset: Dataset, seed: int, cache_dir: Path | None, *,
                         epochs: int = CLASSIFIER_EPOCHS, batch_size: int = 1000) -> ReferenceClassifier:
    """Load the classifier for (dataset file, seed) from ``cache_dir``, or train it on all clean training images and
    cache it there. ``cache_dir=None`` trains without caching."""
    started = time.perf_counter()
    path = classifier_path(dataset, seed, cache_dir) if cache_dir is not None else None
    loaded = _load(path) if path is not None else None
    if loaded is not None and loaded[1].get("epochs", epochs) != epochs:
        loaded = None  # trained by another recipe: the file name cannot tell, the sidecar can
    if loaded is not None:
        model, sidecar = loaded
        accuracy = sidecar.get("test_accuracy")
        if not isinstance(accuracy, (int, float)):
            accuracy = classify_accuracy(model, dataset.x_test, dataset.y_test, batch_size)
        return ReferenceClassifier(model, True, time.perf_counter() - started, sidecar.get("train_s"),
                                   float(accuracy), path)
    model = _train_classifier(dataset, seed, epochs)
    train_s = time.perf_counter() - started
    accuracy = classify_accuracy(model, dataset.x_test, dataset.y_test, batch_size)
    if path is not None:
        sidecar = {"dataset": dataset.name, "sha256": dataset.sha256, "seed": seed, "arch_version": ARCH_VERSION,
                   "epochs": epochs, "train_images": int(len(dataset.x_train)), "train_s": train_s,
                   "test_accuracy": accuracy, "backend": backends.current().name, "keras": keras.__version__}
        _save_atomic(model, sidecar, path)
    return ReferenceClassifier(model, False, time.perf_counter() - started, train_s, accuracy, path)


# One compiled call per model: a cell scores the classifier three times and the encoder twice, and each new compiled
# function would trace (and on XLA compile) again. Only the last few models are kept: a Forward's closure holds its
# model, so an unbounded cache would keep every model of a long-lived process (a test session) alive.
_FORWARDS: list[tuple[keras.Model, backends.Forward]] = []
_FORWARDS_KEPT = 4


def predict_batches(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs through its compiled call (aebench.backends), not per-call ``predict()``."""
    forward = next((known_forward for known, known_forward in _FORWARDS if known is model), None)
    if forward is None:
        forward = backends.current().compiled_forward(model)
        _FORWARDS.insert(0, (model, forward))
        del _FORWARDS[_FORWARDS_KEPT:]
    return forward.predict(images, batch_size)


def classify_accuracy(classifier: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Top-1 accuracy of the classifier on these images."""
    logits = predict_batches(classifier, images, batch_size)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels).ravel()))


def recovered_fraction(acc_clean: float, acc_noisy: float, acc_denoised: float) -> float | None:
    """(denoised - noisy) / (clean - noisy), clipped to [-1, 1]: 1 = denoising wins back all the accuracy the noise
    cost (or more), 0 = none, negative = it makes things worse. None when the noise costs less than MIN_ACCURACY_DROP
    (5 points): below that the ratio divides by a few test images and swings by hundreds of percent, and the points
    gained (``accuracy_points_gained``) say it plainly."""
    drop = acc_clean - acc_noisy
    if not drop >= MIN_ACCURACY_DROP:
        return None
    return min(1.0, max(-1.0, (acc_denoised - acc_noisy) / drop))


def accuracy_points_gained(acc_noisy: float, acc_denoised: float) -> float:
    """Points of accuracy (percent of the test images) the denoised images gain over the noisy ones; negative: lost."""
    return 100.0 * (acc_denoised - acc_noisy)


# -- latent probe and diagnostics ------------------------------------------------------------------------------------


def latent_probe_accuracy(encoder: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                          y_test: np.ndarray, seed: int, *, max_train: int = PROBE_MAX_TRAIN,
                          batch_size: int = 1000) -> float:
    """Test accuracy of a linear probe on the codes: multinomial logistic regression on standardised, flattened codes
    of (at most ``max_train``) training images, scored on the test images' codes.

    The iteration budget is bounded (PROBE_MAX_ITER, lbfgs) and is part of the definition: an unconverged fit is the
    probe's answer, so scikit-learn's ConvergenceWarning is silenced here.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = subset(x_train, y_train, max_train, seed)
    train_codes = predict_batches(encoder, x_train, batch_size).reshape(len(x_train), -1)
    test_codes = predict_batches(encoder, x_test, batch_size).reshape(len(x_test), -1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_codes, np.asarray(y_train).ravel())
    return float(probe.score(test_codes, np.asarray(y_test).ravel()))


def latent_activation_stats(codes: np.ndarray) -> dict[str, float]:
    """Mean |h| over examples and units, the fraction of (example, unit) entries with |h| < NEAR_ZERO (on average,
    the fraction of the code that is off for an input), and the fraction of units off for every input (dead units).

    For the non-negative codes (relu, sigmoid, max-pooled relu) mean |h| is the mean activation; for the linear codes
    of the plain bottleneck it is their mean magnitude, the figure an L1 penalty shrinks."""
    flat = np.abs(np.asarray(codes, dtype=np.float64).reshape(len(codes), -1))
    off = flat < NEAR_ZERO
    return {
        "diag.mean_activation": float(flat.mean()),
        "diag.near_zero_fraction": float(off.mean()),
        "diag.dead_unit_fraction": float(off.all(axis=0).mean()),
    }


def per_digit_mse(clean: np.ndarray, output: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Reconstruction MSE against the clean images, per class label present (``diag.mse_digit<label>``)."""
    labels = np.asarray(labels).ravel()
    errors = ((clean.astype(np.float64) - output.astype(np.float64)) ** 2).reshape(len(clean), -1).mean(axis=1)
    return {f"diag.mse_digit{int(label)}": float(errors[labels == label].mean()) for label in np.unique(labels)}


def contractive_jacobian_check(model: keras.Model, x_sample: np.ndarray) -> dict[str, float]:
    """Mean squared Frobenius norm of d(code)/d(input) over the sample, by the backend's autodiff
    (``Backend.jacobian_frobenius_sq``) and by the closed form the contractive loss uses."""
    from aebench import models

    x = np.asarray(x_sample, dtype=np.float32)
    autodiff = backends.current().jacobian_frobenius_sq(models.encoder_of(model), x)
    latent = model.get_layer("latent")
    # The closed form reads the layer's own input: the pixels after whatever fixed shift comes first (the zoo's
    # contractive AE centres them), which leaves the Jacobian with respect to the image as it is.
    layer_input = keras.ops.convert_to_numpy(keras.Model(model.input, latent.input)(x, training=False))
    closed = keras.ops.convert_to_numpy(models.jacobian_frobenius_sq_closed_form(latent, layer_input))
    return {
        "diag.jacobian_fro_sq_autodiff": float(np.mean(autodiff)),
        "diag.jacobian_fro_sq_closed_form": float(np.mean(np.asarray(closed))),
    }


# -- robustness ------------------------------------------------------------------------------------------------------


def robust_key(level: float) -> str:
    return f"robust.psnr_db@{level:g}"


def area_under_curve(levels: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under values(levels) divided by the level range: the curve's mean height in its own unit
    (here dB), so sweeps over different ranges compare. A single level gives its value."""
    x = np.asarray(levels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) == 1:
        return float(y[0])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def robustness_curve(predict_fn: Callable[[np.ndarray], np.ndarray], clean: np.ndarray, noise_type: str,
                     levels: Sequence[float], seed: int,
                     known: Mapping[float, tuple[np.ndarray, np.ndarray]] | None = None,
                     ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """PSNR of the model's output (and of the noisy input) at each test noise level, and the area under the output's
    PSNR curve (``robust.psnr_auc``, a mean dB over the level range, see area_under_curve).

    Every level draws its noise with the same seed, so the cell's own level reproduces its ``quality.psnr_db``.
    ``known`` maps a level to the (noisy, output) images the caller already has for it (drawn with the same seed):
    those are reused rather than drawn and predicted again."""
    levels = sorted(float(level) for level in levels)
    if not levels:
        raise ValueError("robustness_curve needs at least one noise level")
    known = known or {}
    output_psnr, noisy_psnr = [], []
    for level in levels:
        if level in known:
            noisy, output = known[level]
        else:
            noisy = add_noise(clean, noise_type, level, seed=seed)
            output = predict_fn(noisy)
        output_psnr.append(psnr_db(clean, output))
        noisy_psnr.append(psnr_db(clean, noisy))
    metrics = {robust_key(level): value for level, value in zip(levels, output_psnr)}
    metrics.update({f"robust.noisy_psnr_db@{level:g}": value for level, value in zip(levels, noisy_psnr)})
    metrics["robust.psnr_auc"] = area_under_curve(levels, output_psnr)
    arrays = {"robust_levels": np.asarray(levels, dtype=np.float64),
              "robust_psnr_db": np.asarray(output_psnr, dtype=np.float64),
              "robust_noisy_psnr_db": np.asarray(noisy_psnr, dtype=np.float64)}
    return metrics, arrays
