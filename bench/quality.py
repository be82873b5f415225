"""Reconstruction quality, computed in NumPy on the model's outputs so every backend is scored the same way.

All images are float32 in [0, 1]. PSNR uses a peak of 1 and the mean squared error over the whole test set.
SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over pixels
and images. Unlike their reference code and scikit-image's mean, which leave a 5-pixel border out, every pixel counts
(the window reflected at the edges): on a 28x28 digit that border is 59% of the image, mostly background, and the
noise there is noise a denoiser must remove too.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

_EPSILON = 1e-7


def binary_crossentropy(target: np.ndarray, output: np.ndarray) -> float:
    output = np.clip(output.astype(np.float64), _EPSILON, 1 - _EPSILON)
    target = target.astype(np.float64)
    return float(-np.mean(target * np.log(output) + (1 - target) * np.log(1 - output)))


def mean_squared_error(target: np.ndarray, output: np.ndarray) -> float:
    return float(np.mean((target.astype(np.float64) - output.astype(np.float64)) ** 2))


def psnr_db(target: np.ndarray, output: np.ndarray) -> float:
    mse = mean_squared_error(target, output)
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(target: np.ndarray, output: np.ndarray) -> float:
    """Mean SSIM of (N, H, W[, 1]) image batches with data range 1."""
    x = target.reshape(target.shape[0], target.shape[1], target.shape[2]).astype(np.float64)
    y = output.reshape(x.shape).astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2

    def blur(img: np.ndarray) -> np.ndarray:
        # sigma on the two image axes only; truncate 3.5 gives the 11-pixel window of the reference code
        return gaussian_filter(img, sigma=(0, 1.5, 1.5), truncate=3.5)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def reconstruction_metrics(clean: np.ndarray, noisy: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """The cell's quality columns: the output scored against the clean images, with the noisy input's PSNR beside
    it so the denoising gain is visible."""
    out_psnr, noisy_psnr = psnr_db(clean, output), psnr_db(clean, noisy)
    return {
        "quality.bce": binary_crossentropy(clean, output),
        "quality.mse": mean_squared_error(clean, output),
        "quality.psnr_db": out_psnr,
        "quality.noisy_psnr_db": noisy_psnr,
        "quality.gain_db": out_psnr - noisy_psnr,
        "quality.ssim": ssim(clean, output),
        "quality.noisy_ssim": ssim(clean, noisy),
    }


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28[, 1]) floats in [0, 1] -> (N, 28, 28) uint8, for image grids stored beside the results."""
    return np.round(np.clip(images.reshape(images.shape[0], 28, 28), 0, 1) * 255).astype(np.uint8)
