"""Accuracy, probe, diagnostics, robustness and seed aggregation (aebench.accuracy, aebench.aggregate).

Tiny data throughout: the classifier trains one epoch on a few hundred images, the probe reads synthetic codes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from aebench import models
from aebench import accuracy, runner
from aebench.aggregate import aggregate_over_seeds, ci_half_width, metric_columns
from aebench.config import Matrix
from aebench.data import Dataset, load_dataset
from support import tiny_matrix_dict


@pytest.fixture
def tiny_dataset(tiny_dataset_dir: Path) -> Dataset:
    return load_dataset("mnist", tiny_dataset_dir / "mnist.npz")


# -- reference classifier ----------------------------------------------------------------------------------------------


def test_classifier_is_trained_once_then_loaded_from_the_cache(tiny_dataset: Dataset, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = accuracy.reference_classifier(tiny_dataset, 3, cache, epochs=1)
    path = cache / f"classifier-mnist-{tiny_dataset.sha256[:16]}-seed3-v{accuracy.ARCH_VERSION}.keras"
    assert first.path == path and path.is_file() and path.with_suffix(".json").is_file()
    assert not first.cached and first.train_s is not None and first.train_s > 0
    assert sorted(p.name for p in cache.iterdir()) == [path.with_suffix(".json").name, path.name]  # no partials left
    assert 0.0 <= first.test_accuracy <= 1.0

    second = accuracy.reference_classifier(tiny_dataset, 3, cache, epochs=1)
    assert second.cached and second.train_s == pytest.approx(first.train_s)
    assert second.test_accuracy == pytest.approx(first.test_accuracy)
    images = tiny_dataset.x_test[:32]
    np.testing.assert_allclose(accuracy.predict_batches(second.model, images, 16),
                               accuracy.predict_batches(first.model, images, 16), rtol=1e-5, atol=1e-5)
    # The cached test accuracy is the loaded model's own.
    assert accuracy.classify_accuracy(second.model, tiny_dataset.x_test, tiny_dataset.y_test, 64) == pytest.approx(
        second.test_accuracy)


def test_classify_accuracy_counts_top1_across_batches() -> None:
    # An identity "classifier" over 3 classes: the logits are the inputs.
    classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False, kernel_initializer="identity")])
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0, 1]]
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 2])  # the last two are wrong
    assert accuracy.classify_accuracy(classifier, logits, labels, batch_size=3) == pytest.approx(6 / 8)


def test_recovered_fraction() -> None:
    assert accuracy.recovered_fraction(0.99, 0.49, 0.89) == pytest.approx(0.8)
    assert accuracy.recovered_fraction(0.99, 0.49, 0.39) == pytest.approx(-0.2)
    assert accuracy.recovered_fraction(0.99, 0.985, 0.99) is None  # noise cost under MIN_ACCURACY_DROP
    # eefcf57 showed -1348%: noise cost 2 points, denoising lost 27. Under 5 points the ratio is not shown at all;
    # the points gained say it plainly.
    assert accuracy.recovered_fraction(0.98, 0.96, 0.69) is None
    assert accuracy.accuracy_points_gained(0.96, 0.69) == pytest.approx(-27.0)
    # Never beyond ±100%: worse than noisy by more than the noise cost, or better than clean.
    assert accuracy.recovered_fraction(0.70, 0.60, 0.40) == -1.0
    assert accuracy.recovered_fraction(0.90, 0.49, 0.95) == 1.0


# -- probe and diagnostics ---------------------------------------------------------------------------------------------


def _blob_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class k lights a 4x4 block at row k: linearly separable once flattened."""
    images = rng.random((len(labels), 28, 28, 1), dtype=np.float32) * 0.3
    for index, label in enumerate(labels):
        images[index, 2 * label : 2 * label + 4, 4:8, 0] += 1.0
    return images


def test_probe_separates_separable_codes_and_not_random_labels() -> None:
    rng = np.random.default_rng(0)
    inputs = keras.Input((28, 28, 1))
    encoder = keras.Model(inputs, keras.layers.Flatten()(inputs))  # the code is the image itself
    y_train, y_test = rng.integers(0, 10, 400), rng.integers(0, 10, 200)
    x_train, x_test = _blob_images(y_train, rng), _blob_images(y_test, rng)
    assert accuracy.latent_probe_accuracy(encoder, x_train, y_train, x_test, y_test, seed=0) >= 0.95
    shuffled = rng.permutation(y_test)
    assert accuracy.latent_probe_accuracy(encoder, x_train, y_train, x_test, shuffled, seed=0) < 0.4
    # max_train bounds the probe's training set: 20 examples cannot cover 10 classes well.
    assert accuracy.latent_probe_accuracy(encoder, x_train, y_train, x_test, y_test, seed=0, max_train=5) < 0.95


def test_latent_activation_stats_on_crafted_codes() -> None:
    codes = np.array([[0.0, 0.005, 1.0, 2.0, 0.5],
                      [0.0, 0.0, 3.0, 0.02, 0.0]])
    stats = accuracy.latent_activation_stats(codes)
    assert stats["diag.mean_activation"] == pytest.approx((0.005 + 1 + 2 + 0.5 + 3 + 0.02) / 10)
    assert stats["diag.near_zero_fraction"] == pytest.approx(5 / 10)  # 0, 0.005, 0, 0, 0 are under 1e-2
    assert stats["diag.dead_unit_fraction"] == pytest.approx(2 / 5)  # units 0 and 1 are off for every input
    # Conv codes (N, 7, 7, 8) are flattened per example.
    assert accuracy.latent_activation_stats(np.zeros((3, 7, 7, 8)))["diag.near_zero_fraction"] == 1.0


def test_per_digit_mse() -> None:
    clean = np.zeros((4, 28, 28, 1), np.float32)
    output = clean + np.array([0.1, 0.3, 0.2, 0.5], np.float32)[:, None, None, None]
    result = accuracy.per_digit_mse(clean, output, np.array([0, 0, 1, 3]))
    assert set(result) == {"diag.mse_digit0", "diag.mse_digit1", "diag.mse_digit3"}
    assert result["diag.mse_digit0"] == pytest.approx((0.01 + 0.09) / 2)
    assert result["diag.mse_digit1"] == pytest.approx(0.04)
    assert result["diag.mse_digit3"] == pytest.approx(0.25)


def test_jacobian_autodiff_matches_the_closed_form() -> None:
    model = models.build_autoencoder("contractive", {"latent_dim": 6, "hidden_units": 8}, seed=1)
    x = np.random.default_rng(2).random((5, 28, 28, 1), dtype=np.float32)
    metrics = accuracy.contractive_jacobian_check(model, x)
    autodiff, closed = metrics["diag.jacobian_fro_sq_autodiff"], metrics["diag.jacobian_fro_sq_closed_form"]
    assert autodiff > 0 and autodiff == pytest.approx(closed, rel=1e-4)
    # Scaling the kernel by 2 scales every dh/dx by 2 * (h(1-h) at the new point): the check must follow the weights.
    layer = model.get_layer("latent")
    layer.kernel.assign(layer.kernel * 2.0)
    scaled = accuracy.contractive_jacobian_check(model, x)
    assert scaled["diag.jacobian_fro_sq_autodiff"] != pytest.approx(autodiff, rel=1e-3)
    assert scaled["diag.jacobian_fro_sq_autodiff"] == pytest.approx(scaled["diag.jacobian_fro_sq_closed_form"], rel=1e-4)


# -- robustness --------------------------------------------------------------------------------------------------------


def test_robustness_curve_and_auc_on_known_psnrs() -> None:
    clean = np.full((4, 28, 28, 1), 0.25, np.float32)
    errors = iter([10 ** -2.0, 10 ** -1.5, 10 ** -1.0])  # PSNR 20, 15, 10 dB at levels 0, 0.25, 0.5 (called in order)
    seen: list[np.ndarray] = []

    def fake_model(noisy: np.ndarray) -> np.ndarray:
        seen.append(noisy)
        return clean + math.sqrt(next(errors))

    metrics, arrays = accuracy.robustness_curve(fake_model, clean, "gaussian", [0.5, 0.0, 0.25], seed=1)
    assert metrics["robust.psnr_db@0"] == pytest.approx(20.0)
    assert metrics["robust.psnr_db@0.25"] == pytest.approx(15.0)
    assert metrics["robust.psnr_db@0.5"] == pytest.approx(10.0)
    # trapezoids (20+15)/2 * 0.25 + (15+10)/2 * 0.25 = 7.5 dB over a range of 0.5: a mean of 15 dB
    assert metrics["robust.psnr_auc"] == pytest.approx(15.0)
    assert metrics["robust.noisy_psnr_db@0"] == pytest.approx(120.0)  # no noise: the capped PSNR of identical images
    assert metrics["robust.noisy_psnr_db@0.5"] < metrics["robust.noisy_psnr_db@0.25"] < 30
    np.testing.assert_array_equal(arrays["robust_levels"], [0.0, 0.25, 0.5])
    np.testing.assert_allclose(arrays["robust_psnr_db"], [20.0, 15.0, 10.0])
    assert np.array_equal(seen[0], clean) and not np.array_equal(seen[2], clean)


def test_robustness_curve_reuses_the_level_the_caller_already_predicted() -> None:
    clean = np.full((4, 28, 28, 1), 0.25, np.float32)
    calls: list[np.ndarray] = []

    def fake_model(noisy: np.ndarray) -> np.ndarray:
        calls.append(noisy)
        return clean + 0.1  # PSNR 20 dB

    own_noisy = accuracy.add_noise(clean, "gaussian", 0.3, seed=1)
    metrics, _ = accuracy.robustness_curve(fake_model, clean, "gaussian", [0.0, 0.3], seed=1,
                                           known={0.3: (own_noisy, clean + 10 ** -1.5)})  # PSNR 30 dB
    assert len(calls) == 1 and np.array_equal(calls[0], clean)  # only level 0 was predicted here
    assert metrics["robust.psnr_db@0.3"] == pytest.approx(30.0)
    assert metrics["robust.psnr_db@0"] == pytest.approx(20.0)


def test_area_under_curve() -> None:
    assert accuracy.area_under_curve([0.4, 0.0, 0.2], [1.0, 3.0, 3.0]) == pytest.approx((0.6 + 0.4) / 0.4)
    assert accuracy.area_under_curve([0.3], [7.0]) == 7.0


# -- seed aggregation --------------------------------------------------------------------------------------------------


def test_aggregate_over_seeds_matches_a_hand_computation() -> None:
    rows = [
        # conv: three seeds, each measured at 1 and 2 threads (same quality): a seed counts once.
        *({"variant": "conv", "noise": 0.5, "threads": t, "seed": s, "status": "ok", "quality.acc": v, "speed.ips": 10.0 * t}
          for s, v in ((0, 1.0), (1, 2.0), (2, 4.0)) for t in (1, 2)),
        {"variant": "conv", "noise": 0.5, "threads": 1, "seed": 3, "status": "failed", "quality.acc": None},
        {"variant": "dense", "noise": 0.5, "threads": 1, "seed": 0, "status": "ok", "quality.acc": 0.5, "speed.ips": 1.0},
    ]
    frame = pd.DataFrame(rows)
    table = aggregate_over_seeds(frame, ["quality.acc", "speed.ips"], by=["variant", "noise"])
    assert list(table["variant"]) == ["conv", "dense"]
    conv = table.iloc[0]
    assert conv["n_seeds"] == 3  # the failed seed 3 does not count
    assert conv["quality.acc"] == pytest.approx(7 / 3)
    # s = sqrt(((1 - 7/3)^2 + (2 - 7/3)^2 + (4 - 7/3)^2) / 2) = sqrt(7/3); t(0.975, 2) = 4.302653 (tables)
    assert conv["quality.acc.ci95"] == pytest.approx(4.302653 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-6)
    assert conv["speed.ips.ci95"] == pytest.approx(0.0)  # 15 img/s for every seed once threads are averaged
    assert table.iloc[1]["n_seeds"] == 1 and math.isnan(table.iloc[1]["quality.acc.ci95"])
    # By default every axis but the seed groups: the two thread counts stay apart.
    assert len(aggregate_over_seeds(frame, ["quality.acc"])) == 3
    assert ci_half_width([2.0, 2.0, np.nan]) == 0.0 and math.isnan(ci_half_width([1.0]))
    assert metric_columns(frame) == ["quality.acc", "speed.ips"]


# -- the worker path, end to end ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cells_report_accuracy_and_diagnostics(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    """Two cells through a real worker host: the classifier is trained ahead of the sweep, both cells load it."""
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["contractive", "conv"], noise=[0.5], train_size=128, accuracy=True,
                                               test_size=64, timeout_s=300, throughput={"batch_size": 64, "warmup": 1,
                                               "min_count": 1, "min_duration_s": 0.0, "max_duration_s": 1.0},
                                               latency={"warmup": 1, "min_count": 3, "min_duration_s": 0.0,
                                                        "max_duration_s": 1.0}))
    prepared: list[dict] = []
    results = runner.run_cells(matrix, matrix.cells(), data_path=tiny_dataset_dir / "mnist.npz",
                               skip_check=runner.SkipCheck(usable_cpus=2, accelerators={}, backend_problems={}),
                               on_result=lambda result: None, work_dir=tmp_path, cache_dir=tmp_path / "cache",
                               progress=runner.Progress(2, stream=io.StringIO()), on_prepared=prepared.append)
    assert [r.status for r in results] == ["ok", "ok"], [r.stderr_tail for r in results]
    contractive, conv = results
    assert [(info["seed"], info["cached"]) for info in prepared] == [(0, False)]
    assert contractive.info["classifier_cached"] is True and conv.info["classifier_cached"] is True
    assert len(list((tmp_path / "cache").glob("classifier-mnist-*-seed0-v*.keras"))) == 1
    for result in results:
        m = result.metrics
        for key in ("quality.acc_clean", "quality.acc_noisy", "quality.acc_denoised", "quality.probe_acc",
                    "quality.ssim", "quality.gain_db", "diag.mean_activation", "diag.near_zero_fraction",
                    "robust.psnr_auc", "timing.classifier_s", "timing.accuracy_s"):
            assert key in m and m[key] is not None, key
        assert {f"robust.psnr_db@{level:g}" for level in accuracy.DEFAULT_ROBUST_LEVELS} <= set(m)
        # The sweep reuses the cell's test-noise seed, so its own level reproduces the cell's PSNR.
        assert m["robust.psnr_db@0.5"] == pytest.approx(m["quality.psnr_db"], rel=1e-6)
        assert any(key.startswith("diag.mse_digit") for key in m)
        np.testing.assert_allclose(result.artifacts["robust_levels"], accuracy.DEFAULT_ROBUST_LEVELS)
    # Training the classifier happened before the sweep: no cell paid for it.
    assert prepared[0]["seconds"] > max(r.metrics["timing.classifier_s"] for r in results)
    assert contractive.metrics["diag.jacobian_fro_sq_autodiff"] == pytest.approx(
        contractive.metrics["diag.jacobian_fro_sq_closed_form"], rel=1e-3)
    assert "diag.jacobian_fro_sq_autodiff" not in conv.metrics


def test_export_aggregate_emits_mean_ci_and_seed_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aebench import cli
    from aebench.results import CellResult
    from aebench.store import open_store

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], repeats=3))
    values = [0.90, 0.92, 0.97]
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = store.begin_run(matrix, {"machine_id": "m"}, ["aebench"])
        for cell, value in zip(matrix.cells(), values):
            store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0,
                                                metrics={"quality.acc_denoised": value}))
    assert cli.main(["export", "--store", str(tmp_path / "s.sqlite"), "--aggregate"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(table) == 1 and table.loc[0, "n_seeds"] == 3 and table.loc[0, "variant"] == "conv"
    assert table.loc[0, "quality.acc_denoised"] == pytest.approx(np.mean(values))
    assert table.loc[0, "quality.acc_denoised.ci95"] == pytest.approx(ci_half_width(values))
    assert ci_half_width(values) == pytest.approx(4.302653 * np.std(values, ddof=1) / math.sqrt(3), rel=1e-6)
