from __future__ import annotations

import pytest

from aebench import flops
from aebench.models import build_autoencoder


def test_conv_ae_forward_flops_match_a_hand_count() -> None:
    # multiply-adds per image, layer by layer: output pixels x output channels x kernel x input channels
    hand = (
        28 * 28 * 16 * 9 * 1  # Conv2D(16) on 28x28x1
        + 14 * 14 * 8 * 9 * 16  # Conv2D(8) on 14x14x16
        + 7 * 7 * 8 * 9 * 8  # Conv2D(8) on 7x7x8
        + 14 * 14 * 8 * 9 * 8  # Conv2DTranspose(8) on 14x14x8
        + 28 * 28 * 1 * 9 * 8  # Conv2DTranspose(1) on 28x28x8
    )
    assert flops.model_flops(build_autoencoder("conv")) == 2 * hand == 1_072_512


def test_dense_flops_count_penalised_layers_too() -> None:
    undercomplete = flops.model_flops(build_autoencoder("undercomplete"))
    assert undercomplete == 2 * (784 * 128 + 128 * 32 + 32 * 128 + 128 * 784)
    assert flops.model_flops(build_autoencoder("sparse_kl")) == undercomplete  # KLSparseDense is a Dense
    assert flops.model_flops(build_autoencoder("contractive")) == 2 * (784 * 32 + 32 * 128 + 128 * 784)


@pytest.mark.parametrize(("flags", "per_cycle"), [({"avx512f", "fma", "avx2"}, 64), ({"avx2", "fma"}, 32), ({"avx"}, 16), (set(), 8)])
def test_peak_follows_the_widest_simd(flags: set[str], per_cycle: int) -> None:
    assert flops.peak_gflops(2, flags, 2.5) == pytest.approx(2 * 2.5 * per_cycle)
    assert flops.peak_gflops(2, flags, None) is None


def test_compute_metrics() -> None:
    out = flops.compute_metrics(1_000_000, {"speed.infer_ips": 10_000.0, "speed.train_ips": 1_000.0}, 2, {"avx2", "fma"}, 2.0)
    assert out["compute.infer_gflops"] == pytest.approx(10.0)
    assert out["compute.train_gflops"] == pytest.approx(3.0)
    assert out["compute.peak_gflops"] == pytest.approx(128.0)
    assert out["compute.infer_peak_fraction"] == pytest.approx(10 / 128)
