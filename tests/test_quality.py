from __future__ import annotations

import numpy as np
import pytest

from aebench import quality


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((6, 28, 28, 1)).astype(np.float32)


def test_identical_images_score_perfectly() -> None:
    x = _images()
    assert quality.mean_squared_error(x, x) == 0.0
    assert quality.ssim(x, x) == pytest.approx(1.0)
    assert quality.psnr_db(x, x) == pytest.approx(120.0)  # capped at an MSE of 1e-12


def test_psnr_matches_the_formula() -> None:
    x = np.zeros((2, 28, 28, 1), np.float32)
    y = np.full_like(x, 0.1)
    assert quality.psnr_db(x, y) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)


def test_bce_matches_a_hand_computation() -> None:
    target = np.array([[0.0, 1.0, 0.5]])
    output = np.array([[0.2, 0.9, 0.5]])
    expected = -np.mean([np.log(0.8), np.log(0.9), 0.5 * np.log(0.5) * 2])
    assert quality.binary_crossentropy(target, output) == pytest.approx(expected, rel=1e-6)


def test_ssim_falls_with_noise_and_is_symmetric() -> None:
    x = _images()
    slightly = np.clip(x + 0.05 * np.random.default_rng(1).standard_normal(x.shape), 0, 1)
    badly = np.clip(x + 0.5 * np.random.default_rng(2).standard_normal(x.shape), 0, 1)
    assert 1.0 > quality.ssim(x, slightly) > quality.ssim(x, badly)
    assert quality.ssim(x, badly) == pytest.approx(quality.ssim(badly, x))


def test_ssim_is_scikit_images_ssim_map_averaged_over_every_pixel() -> None:
    from skimage.metrics import structural_similarity  # a dev dependency: this check runs, it is never skipped

    rng = np.random.default_rng(0)
    clean = np.zeros((3, 28, 28))
    clean[:, 6:22, 6:22] = rng.random((3, 16, 16))  # a blank border, as MNIST digits have
    for level in (0.05, 0.3):
        noisy = np.clip(clean + level * rng.standard_normal(clean.shape), 0, 1)
        maps = [structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, full=True)[1] for x, y in zip(clean, noisy)]
        # The whole map, borders included: scikit-image's own mean leaves a 5-pixel border out.
        assert quality.ssim(clean[..., None], noisy[..., None]) == pytest.approx(np.mean(maps), rel=1e-9)


def test_reconstruction_metrics_report_the_gain() -> None:
    clean = _images()
    noisy = np.clip(clean + 0.3, 0, 1)
    output = np.clip(clean + 0.1, 0, 1)
    metrics = quality.reconstruction_metrics(clean, noisy, output)
    assert metrics["quality.gain_db"] == pytest.approx(metrics["quality.psnr_db"] - metrics["quality.noisy_psnr_db"])
    assert metrics["quality.gain_db"] > 0


def test_to_uint8() -> None:
    out = quality.to_uint8(np.array([0.0, 0.5, 1.0, 1.2] + [0.0] * 780, np.float32).reshape(1, 28, 28, 1))
    assert out.dtype == np.uint8 and out.shape == (1, 28, 28)
    assert list(out.reshape(-1)[:4]) == [0, 128, 255, 255]
