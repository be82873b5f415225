"""Helpers the tests share (imported as `support`: pytest puts tests/ on sys.path). Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("AEBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    return None


def write_tiny_dataset(folder: Path) -> Path:
    """``folder``/mnist.npz with a few hundred real MNIST images when the shared data is there, else synthetic
    digits-like blobs; returns ``folder``."""
    import numpy as np

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
            "x_train": (rng.random((600, 28, 28)) * 255).astype(np.uint8),
            "y_train": rng.integers(0, 10, 600).astype(np.uint8),
            "x_test": (rng.random((200, 28, 28)) * 255).astype(np.uint8),
            "y_test": rng.integers(0, 10, 200).astype(np.uint8),
        }
    folder.mkdir(parents=True)
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
        "validation_size": 64,
        "test_size": 128,
        "timeout_s": 120,
        "predict_path": False,
        "accuracy": False,  # the reference classifier costs a minute; tests that need it turn it on
        "latency": {"warmup": 2, "min_count": 10, "min_duration_s": 0.0, "max_duration_s": 2.0},
        "throughput": {"batch_size": 64, "warmup": 1, "min_count": 2, "min_duration_s": 0.0, "max_duration_s": 2.0},
        "train_timing": {"steps": 2, "repeats": 2},
        "time_to_quality": {"every_steps": 2},
    }
    raw.update(overrides)
    return raw


def write_matrix(path: Path, **overrides: object) -> Path:
    """Write tiny_matrix_dict(**overrides) as a TOML matrix file."""
    raw = tiny_matrix_dict(**overrides)
    lines = []
    tables = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


UPDATE_GOLDEN = "AEBENCH_UPDATE_GOLDEN"  # `make golden` sets it to 1; a plain test run never writes a golden file


def assert_matches_golden(golden: Path, text: str) -> None:
    """``text`` equals the golden file. Only ``make golden`` (AEBENCH_UPDATE_GOLDEN=1) writes it: a test run that
    wrote a missing golden file would pass on whatever the code produces today."""
    name = golden.relative_to(REPO)
    if os.environ.get(UPDATE_GOLDEN) == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"{name} is missing: run `make golden` to write it, then review and commit it"
    assert text == golden.read_text(encoding="utf-8"), (
        f"{name} differs from this output: if the change is intended, run `make golden` and review the diff"
    )
