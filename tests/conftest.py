from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("AEBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> Path:
    """A few hundred real MNIST images when the shared data is there, else synthetic digits-like blobs."""
    rng = np.random.default_rng(0)
    source = shared_data_dir()
    if source is not None:
        with np.load(source / "mnist.npz") as archive:
            arrays = {
                "x_train": archive["x_train"][:600], "y_train": archive["y_train"][:600],
                "x_test": archive["x_test"][:200], "y_test": archive["y_test"][:200],
            }
    else:
        arrays = {
            "x_train": (rng.random((600, 28, 28)) * 255).astype(np.uint8), "y_train": rng.integers(0, 10, 600).astype(np.uint8),
            "x_test": (rng.random((200, 28, 28)) * 255).astype(np.uint8), "y_test": rng.integers(0, 10, 200).astype(np.uint8),
        }
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **arrays)
    return folder


def tiny_matrix_dict(**overrides: object) -> dict:
    raw = {
        "name": "tiny",
        "dataset": "mnist",
        "variants": ["undercomplete", "conv"],
        "noise": [0.2],
        "threads": [1],
        "epochs": 2,
        "batch_size": 64,
        "train_size": 256,
        "test_size": 128,
        "timeout_s": 120,
        "predict_path": False,
        "accuracy": False,  # the reference classifier costs a minute; tests that need it turn it on
        "latency": {"warmup": 2, "min_count": 10, "min_duration_s": 0.0, "max_duration_s": 2.0},
        "throughput": {"batch_size": 64, "warmup": 1, "min_count": 2, "min_duration_s": 0.0, "max_duration_s": 2.0},
    }
    raw.update(overrides)
    return raw
