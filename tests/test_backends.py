"""Backend portability: every zoo model builds, trains a step and runs on each installed Keras backend.

KERAS_BACKEND is read when Keras is imported, so each backend answers in a process of its own
(tests/backend_step.py), looping over all six variants in float32 and mixed_bfloat16. TensorFlow is always there;
torch and JAX are optional extras (`make setup-torch` installs the CPU torch that CI uses): without them these tests
skip, saying so.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aebench import models
from aebench.cli import main
from aebench.store import open_store
from support import REPO, write_matrix

pytestmark = pytest.mark.backends

HELPER = Path(__file__).with_name("backend_step.py")
PRECISIONS = ("float32", "mixed_bfloat16")
# Skipped where a backend is not installed; CI installs both and sets AEBENCH_REQUIRE_BACKENDS=1, so there they run.
REQUIRED = os.environ.get("AEBENCH_REQUIRE_BACKENDS") == "1"


def _needs(module: str, how: str) -> pytest.MarkDecorator:
    missing = importlib.util.find_spec(module) is None
    if missing and REQUIRED:
        return pytest.mark.usefixtures("_fail_missing_" + module)
    return pytest.mark.skipif(missing, reason=f"{module} is not installed ({how})")


@pytest.fixture
def _fail_missing_torch() -> None:
    pytest.fail("AEBENCH_REQUIRE_BACKENDS=1 but torch is not installed: make setup-torch")


@pytest.fixture
def _fail_missing_jax() -> None:
    pytest.fail("AEBENCH_REQUIRE_BACKENDS=1 but jax is not installed: make setup-jax")


needs_torch = _needs("torch", "make setup-torch, or pip install 'aebench[torch]'")
needs_jax = _needs("jax", "make setup-jax, or pip install 'aebench[jax]'")
# The contractive penalty's autodiff and closed form agree to float32 round-off; in bfloat16 the layer computes h with
# 8 bits of mantissa while the autodiff differentiates through the same rounded ops, so they agree only roughly.
JACOBIAN_TOLERANCE = {"float32": 1e-4, "mixed_bfloat16": 1e-2}  # bfloat16 measured 1e-3 apart


@functools.cache
def _step(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(HELPER), *PRECISIONS], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["backend"] == backend
    return answer["results"]


@pytest.fixture
def tensorflow_answers() -> dict:
    return _step("tensorflow")


def _check(results: dict) -> None:
    expected = {f"{variant}/{precision}" for precision in PRECISIONS for variant in models.VARIANTS}
    assert set(results) == expected
    broken = {key: value["error"] for key, value in results.items() if "error" in value}
    assert not broken
    for key, value in results.items():
        assert value["finite"], f"{key}: loss {value['loss']} or its output is not finite"
        assert value["shape"] == [16, 28, 28, 1], key


def test_every_variant_trains_on_tensorflow(tensorflow_answers: dict) -> None:
    _check(tensorflow_answers)


@needs_torch
def test_every_variant_trains_on_torch_like_on_tensorflow(tensorflow_answers: dict) -> None:
    torch_answers = _step("torch")
    _check(torch_answers)
    assert {k: v["shape"] for k, v in torch_answers.items()} == {k: v["shape"] for k, v in tensorflow_answers.items()}
    # Same loss, same data, same untrained scale: a backend that computed a different loss would stand out here.
    for key, value in torch_answers.items():
        assert value["loss"] == pytest.approx(tensorflow_answers[key]["loss"], rel=0.1), key


@needs_jax
def test_every_variant_trains_on_jax() -> None:
    _check(_step("jax"))


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("torch", marks=needs_torch),
                                     pytest.param("jax", marks=needs_jax)])
def test_jacobian_autodiff_matches_the_closed_form(backend: str) -> None:
    for precision, tolerance in JACOBIAN_TOLERANCE.items():
        jacobian = _step(backend)[f"contractive/{precision}"]["jacobian"]
        autodiff, closed = jacobian["diag.jacobian_fro_sq_autodiff"], jacobian["diag.jacobian_fro_sq_closed_form"]
        assert autodiff > 0 and autodiff == pytest.approx(closed, rel=tolerance), precision


@needs_torch
@pytest.mark.slow
def test_a_torch_cell_runs_end_to_end(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "m.toml", variants=["conv"], backend=["torch"], accuracy=False)
    store = tmp_path / "aebench.sqlite"
    status = main(["run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store), "--no-report"])
    assert status == 0
    with open_store(store, create=False) as opened:
        (result,) = opened.results(opened.resolve_run(None))
    assert result.status == "ok", result.stderr_tail
    assert result.info["backend"] == "torch" and result.info["weights_device"] == "cpu"
    assert result.info["inference_path"].startswith("torch.no_grad") and result.info["intra_op_threads"] == 1
    assert result.metrics["speed.train_ips"] > 0 and result.metrics["quality.psnr_db"] > 0


def test_every_allowed_backend_has_its_class_and_current_is_one_instance() -> None:
    from aebench import backends, config

    assert list(backends.BACKENDS) == list(config.BACKENDS)
    assert backends.current() is backends.current()
    assert backends.current().name == __import__("keras").backend.backend()
