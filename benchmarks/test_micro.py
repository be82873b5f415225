"""pytest-benchmark microbenchmarks: `make bench-micro` (saved under .benchmarks/, compared with
BENCH_COMPARE_FAIL=mean:5%). These time small pieces in isolation; `aebench run` times whole cells."""

from __future__ import annotations

import numpy as np
import pytest

from aebench import backends, quality, scenarios
from aebench.models import build_autoencoder


@pytest.fixture(scope="module")
def conv_model():
    model = build_autoencoder("conv", seed=0)
    scenarios.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)
    return model


def test_conv_compiled_inference_batch1(benchmark, conv_model, images: np.ndarray) -> None:
    forward = backends.current().compiled_forward(conv_model)
    one = forward.prepare(images[:1])
    forward(one)
    benchmark.extra_info["path"] = forward.path
    benchmark.pedantic(forward, args=(one,), warmup_rounds=20, rounds=300, iterations=1)


def test_conv_compiled_inference_batch1024(benchmark, conv_model, images: np.ndarray) -> None:
    forward = backends.current().compiled_forward(conv_model)
    batch = forward.prepare(images)
    forward(batch)
    benchmark.pedantic(forward, args=(batch,), warmup_rounds=2, rounds=20, iterations=1)


def test_conv_training_step_batch128(benchmark, conv_model, images: np.ndarray) -> None:
    x = images[:128]
    conv_model.train_on_batch(x, x)
    benchmark.pedantic(conv_model.train_on_batch, args=(x, x), warmup_rounds=5, rounds=50, iterations=1)


@pytest.mark.parametrize("metric", ["binary_crossentropy", "psnr_db", "ssim"])
def test_quality_metric_on_1000_images(benchmark, images: np.ndarray, metric: str) -> None:
    clean, output = images[:1000], np.clip(images[:1000] + 0.05, 0, 1)
    benchmark.pedantic(getattr(quality, metric), args=(clean, output), warmup_rounds=1, rounds=10, iterations=1)
