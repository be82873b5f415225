"""Tests for the autoencoder zoo in models/ (tiny batches, CPU-fast)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from aebench import models
from aebench.models import (
    REGISTRY,
    VARIANTS,
    build_autoencoder,
    encoder_of,
    jacobian_frobenius_sq_closed_form,
    parameter_count,
    resolve_hparams,
)

PENALIZED = ("sparse_l1", "sparse_kl", "contractive")
DENSE = tuple(v for v in VARIANTS if v != "conv")

needs_tf = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape"
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def built() -> dict[str, keras.Model]:
    """One model per variant, shared across tests to keep the suite fast."""
    return {v: build_autoencoder(v) for v in VARIANTS}


def _dense_params(latent: int, hidden: int, contractive: bool, centred: bool = False) -> int:
    def dense(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    if contractive:
        encoder = dense(784, latent)
    else:
        encoder = dense(784, hidden) + dense(hidden, latent)
    centring = 784 if centred else 0  # InputCentering's running mean of the 784 pixels (not trained)
    return centring + encoder + dense(latent, hidden) + dense(hidden, 784)


# --- registry ---------------------------------------------------------------


def test_registry_matches_variants() -> None:
    assert VARIANTS == (
        "undercomplete", "sparse_l1", "sparse_kl", "denoising", "contractive", "conv"
    )
    assert tuple(REGISTRY) == VARIANTS
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert set(spec.defaults) == set(spec.allowed)
        assert spec.corrupts_input == (name == "denoising")
        assert spec.description and "\n" not in spec.description
        for key, default in spec.defaults.items():
            lo, hi = spec.allowed[key]
            assert lo <= default <= hi
    assert dict(REGISTRY["conv"].defaults) == {}


# --- forward shapes and encoders --------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_and_range(built, images, variant: str) -> None:
    model = built[variant]
    assert model.name == variant
    assert model.get_layer("latent") is not None
    assert not model.compiled
    out = keras.ops.convert_to_numpy(model(images))
    assert out.shape == (8, 28, 28, 1)
    assert out.dtype == np.float32
    assert np.all((out >= 0.0) & (out <= 1.0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_of(built, images, variant: str) -> None:
    encoder = encoder_of(built[variant])
    code = keras.ops.convert_to_numpy(encoder(images))
    expected = (8, 7, 7, 8) if variant == "conv" else (8, 32)
    assert code.shape == expected
    # The encoder shares weights with the autoencoder, not a copy of them.
    assert encoder.get_layer("latent") is built[variant].get_layer("latent")


# --- parameter counts -------------------------------------------------------


def test_conv_has_paper_parameter_count(built) -> None:
    assert built["conv"].count_params() == 2561
    assert parameter_count("conv") == 2561


@pytest.mark.parametrize("variant", DENSE)
def test_dense_parameter_counts(built, variant: str) -> None:
    contractive, centred = variant == "contractive", variant in ("contractive", "sparse_kl")
    assert built[variant].count_params() == _dense_params(32, 128, contractive, centred)
    assert parameter_count(variant, {"latent_dim": 5, "hidden_units": 7}) == (
        _dense_params(5, 7, contractive, centred)
    )


# --- training ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_training_step(images, variant: str) -> None:
    model = build_autoencoder(variant, seed=1)
    model.compile("adam", "binary_crossentropy")
    loss = model.train_on_batch(images, images)
    assert math.isfinite(float(np.asarray(loss).ravel()[0]))


# --- penalties --------------------------------------------------------------


@pytest.mark.parametrize("variant", PENALIZED)
def test_penalty_is_added_and_positive(built, images, variant: str) -> None:
    model = built[variant]
    model(images, training=True)
    assert len(model.losses) > 0
    assert float(sum(keras.ops.convert_to_numpy(l) for l in model.losses)) > 0.0


@pytest.mark.parametrize("variant", PENALIZED)
def test_inference_computes_no_penalty(built, images, variant: str) -> None:
    # The compiled call that is timed runs with training=False: it does the model's work and nothing else (XLA and
    # tf.function would prune an unused penalty, torch's eager call would not).
    built[variant](images, training=False)
    assert len(built[variant].losses) == 0


@pytest.mark.parametrize("variant", ("undercomplete", "denoising", "conv"))
def test_plain_variants_add_no_loss(built, images, variant: str) -> None:
    built[variant](images, training=True)
    assert len(built[variant].losses) == 0


@pytest.mark.parametrize("variant", ("sparse_l1", "sparse_kl"))
def test_penalty_does_not_scale_with_batch(built, images, variant: str) -> None:
    latent = built[variant].get_layer("latent")
    h = keras.ops.convert_to_tensor(images.reshape(8, -1)[:, :128])
    latent(h)
    small = float(keras.ops.convert_to_numpy(latent.losses[0]))
    latent(keras.ops.concatenate([h, h, h], axis=0))
    big = float(keras.ops.convert_to_numpy(latent.losses[0]))
    assert big == pytest.approx(small, rel=1e-5)


def test_l1_penalty_value(built, images) -> None:
    latent = built["sparse_l1"].get_layer("latent")
    x = images.reshape(8, -1)[:, :128]
    h = keras.ops.convert_to_numpy(latent(x))
    expected = latent.l1 * np.abs(h).sum(axis=1).mean()
    got = float(keras.ops.convert_to_numpy(latent.losses[0]))
    assert got == pytest.approx(expected, rel=1e-5)


def test_kl_penalty_value(built, images) -> None:
    latent = built["sparse_kl"].get_layer("latent")
    x = images.reshape(8, -1)[:, :128]
    h = keras.ops.convert_to_numpy(latent(x)).astype(np.float64)
    rho, rho_hat = latent.rho, h.mean(axis=0)
    kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
    got = float(keras.ops.convert_to_numpy(latent.losses[0]))
    assert got == pytest.approx(latent.beta * kl.sum(), rel=1e-4)


@needs_tf
@pytest.mark.parametrize("variant", PENALIZED)
def test_penalty_gradient_reaches_latent_kernel(images, variant: str) -> None:
    import tensorflow as tf

    model = build_autoencoder(variant)
    kernel = model.get_layer("latent").kernel
    with tf.GradientTape() as tape:
        model(images, training=True)
        penalty = tf.add_n(model.losses)
    grad = tape.gradient(penalty, kernel.value)
    assert grad is not None
    assert float(tf.reduce_sum(tf.abs(grad))) > 0.0


@needs_tf
def test_contractive_closed_form_matches_autodiff(built, images) -> None:
    import tensorflow as tf

    layer = built["contractive"].get_layer("latent")
    x = tf.constant(images[:4].reshape(4, -1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = keras.layers.Dense.call(layer, x)
    jac = tape.batch_jacobian(h, x)  # (batch, latent, 784)
    autodiff = tf.reduce_sum(tf.square(jac), axis=[1, 2]).numpy()
    closed = keras.ops.convert_to_numpy(
        jacobian_frobenius_sq_closed_form(layer, images[:4])
    )
    assert closed.shape == (4,)
    np.testing.assert_allclose(closed, autodiff, rtol=1e-4)
    # The penalty added in call() is lambda times the batch mean of the same.
    layer(x)
    added = float(keras.ops.convert_to_numpy(layer.losses[0]))
    assert added == pytest.approx(layer.contractive_lambda * autodiff.mean(), rel=1e-4)


def test_input_centering_tracks_the_mean_and_is_a_fixed_shift_at_inference(images) -> None:
    from aebench.models.regularizers import InputCentering

    layer = InputCentering(momentum=0.5)
    flat = images.reshape(len(images), -1)
    for _ in range(30):  # a running mean of batch means converges to the batch mean
        layer(flat, training=True)
    mean = keras.ops.convert_to_numpy(layer.moving_mean)
    np.testing.assert_allclose(mean, flat.mean(axis=0), atol=1e-5)
    shifted = keras.ops.convert_to_numpy(layer(flat[:2], training=False))
    np.testing.assert_allclose(shifted, flat[:2] - mean, atol=1e-6)
    assert not layer.trainable_weights  # nothing to learn: a constant shift for the Jacobian


@needs_tf
def test_the_centred_contractive_encoders_jacobian_is_the_closed_form(images) -> None:
    """The whole encoder, image to code, by autodiff, against the closed form on the layer's (centred) input."""
    from aebench import accuracy

    model = build_autoencoder("contractive")
    model(images, training=True)  # a training call moves the running mean off zero
    assert float(np.abs(keras.ops.convert_to_numpy(model.get_layer("centering").moving_mean)).max()) > 0
    check = accuracy.contractive_jacobian_check(model, images[:4])
    assert check["diag.jacobian_fro_sq_closed_form"] == pytest.approx(check["diag.jacobian_fro_sq_autodiff"],
                                                                      rel=1e-4)


def test_every_variant_flagged_with_a_jacobian_penalty_has_the_layer_its_check_reads() -> None:
    flagged = [name for name, spec in models.REGISTRY.items() if spec.jacobian_penalty]
    assert flagged == ["contractive"]  # the worker checks its closed form against autodiff on every cell
    for name in flagged:
        assert build_autoencoder(name).get_layer("latent").activation.__name__ == "sigmoid"


def test_closed_form_rejects_non_sigmoid(built, images) -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        jacobian_frobenius_sq_closed_form(
            built["undercomplete"].get_layer("latent"), images
        )


# --- denoising corruption ---------------------------------------------------


def test_denoising_corruption(built, images) -> None:
    layer = built["denoising"].get_layer("corruption")
    same = keras.ops.convert_to_numpy(layer(images, training=False))
    np.testing.assert_array_equal(same, images)
    noisy = keras.ops.convert_to_numpy(layer(images, training=True))
    assert noisy.shape == images.shape
    assert not np.allclose(noisy, images)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    # Whole model is deterministic at inference.
    model = built["denoising"]
    a = keras.ops.convert_to_numpy(model(images, training=False))
    b = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_array_equal(a, b)


def test_noise_factor_reaches_layer() -> None:
    model = build_autoencoder("denoising", {"noise_factor": 0.5})
    assert model.get_layer("corruption").factor == 0.5


def test_a_cell_corrupts_at_its_noise_level_unless_the_matrix_sets_noise_factor() -> None:
    from aebench.config import Matrix
    from aebench.worker import build_model
    from support import tiny_matrix_dict

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["denoising"], noise=[0.3]))
    assert build_model(matrix, matrix.cells()[0])[0].get_layer("corruption").factor == 0.3
    chosen = Matrix.from_dict(tiny_matrix_dict(variants=["denoising"], noise=[0.3],
                                               hparams={"denoising": {"noise_factor": 0.5}}))
    assert build_model(chosen, chosen.cells()[0])[0].get_layer("corruption").factor == 0.5


# --- reproducibility and serialization --------------------------------------


@pytest.mark.parametrize("variant", ("sparse_kl", "conv"))
def test_same_seed_same_weights(variant: str) -> None:
    a = build_autoencoder(variant, seed=7).get_weights()
    b = build_autoencoder(variant, seed=7).get_weights()
    c = build_autoencoder(variant, seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_denoising_noise_is_seeded(images) -> None:
    from aebench.models.regularizers import GaussianCorruption

    def draw(seed: int, global_seed: int) -> np.ndarray:
        keras.utils.set_random_seed(global_seed)  # the layer's own seed must decide, whatever the global one
        return keras.ops.convert_to_numpy(GaussianCorruption(0.3, seed=seed)(images, training=True))

    np.testing.assert_array_equal(draw(3, global_seed=1), draw(3, global_seed=2))
    assert not np.array_equal(draw(3, global_seed=1), draw(4, global_seed=1))


@pytest.mark.parametrize("variant", PENALIZED + ("denoising",))
def test_config_round_trip(built, variant: str) -> None:
    model = built[variant]
    clone = keras.Model.from_config(model.get_config())
    assert type(clone.get_layer("latent")) is type(model.get_layer("latent"))
    latent = model.get_layer("latent")
    assert clone.get_layer("latent").get_config() == latent.get_config()
    assert clone.count_params() == model.count_params()


# --- hyperparameter validation ----------------------------------------------


def test_resolve_defaults_and_overrides() -> None:
    defaults = {"latent_dim": 32, "hidden_units": 128}
    assert resolve_hparams("undercomplete", {}) == defaults
    assert resolve_hparams("conv", None) == {}
    hp = resolve_hparams("sparse_kl", {"rho": 0.1, "beta": 2})
    assert hp == {"latent_dim": 32, "hidden_units": 128, "rho": 0.1, "beta": 2.0, "center_input": 1}
    assert isinstance(hp["beta"], float)
    assert resolve_hparams("denoising", {"noise_factor": 0})["noise_factor"] == 0.0
    assert resolve_hparams("sparse_l1", {"latent_dim": np.int64(8)})["latent_dim"] == 8
    assert resolve_hparams("sparse_kl", {"rho": 0.999})["rho"] == 0.999
    # Inclusive bounds elsewhere.
    assert resolve_hparams("sparse_l1", {"l1": 0.0, "latent_dim": 784})["l1"] == 0.0


def test_resolve_does_not_mutate_defaults() -> None:
    resolve_hparams("sparse_l1", {"l1": 0.5})
    assert REGISTRY["sparse_l1"].defaults["l1"] == 1e-4


@pytest.mark.parametrize(
    ("variant", "overrides", "needles"),
    [
        ("nope", {}, ["'nope'", "undercomplete", "conv"]),
        ("undercomplete", {"latnet": 3}, ["'latnet'", "latent_dim, hidden_units"]),
        ("conv", {"latent_dim": 3}, ["'latent_dim'", "'conv'", "(none)"]),
        ("sparse_kl", {"rho": 1.5}, ["sparse_kl.rho = 1.5", "0 < rho < 1"]),
        ("sparse_kl", {"rho": 0.0}, ["sparse_kl.rho = 0.0", "0 < rho < 1"]),
        ("sparse_l1", {"l1": -0.1}, ["sparse_l1.l1 = -0.1", "0 <= l1 <= 1"]),
        ("undercomplete", {"latent_dim": 0}, ["= 0", "1 <= latent_dim <= 784"]),
        ("undercomplete", {"latent_dim": 32.0}, ["latent_dim = 32.0", "int"]),
        ("undercomplete", {"hidden_units": True}, ["hidden_units = True", "int"]),
        ("contractive", {"contractive_lambda": "1e-4"}, ["lambda = '1e-4'"]),
        ("sparse_l1", {"l1": False}, ["sparse_l1.l1 = False"]),
        ("sparse_kl", {"beta": float("nan")}, ["sparse_kl.beta = nan", "finite"]),
        ("denoising", {"noise_factor": float("inf")}, ["noise_factor = inf", "finite"]),
    ],
)
def test_resolve_errors(variant: str, overrides: dict, needles: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        resolve_hparams(variant, overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_build_validates_before_building() -> None:
    with pytest.raises(ValueError, match="rho"):
        build_autoencoder("sparse_kl", {"rho": 2.0})
    with pytest.raises(ValueError, match="unknown variant"):
        parameter_count("vae")


def test_package_exports() -> None:
    for name in models.__all__:
        assert hasattr(models, name)
