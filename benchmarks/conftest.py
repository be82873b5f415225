"""Microbenchmarks run pinned to AEBENCH_MICRO_THREADS CPUs (default 2), set before TensorFlow starts."""

from __future__ import annotations

import os

import numpy as np
import pytest

THREADS = int(os.environ.get("AEBENCH_MICRO_THREADS", "2"))
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from aebench import backends  # noqa: E402 - after pinning, before the backend's first op

backends.current().configure_threads(THREADS)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((1024, 28, 28, 1), dtype=np.float32)
