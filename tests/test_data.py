from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aebench import data
from aebench.errors import UserError


def _no_download(name: str) -> Path:
    raise ConnectionError("no network in tests")


def test_explicit_folder_wins(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    found = data.find_dataset("mnist", tiny_dataset_dir, environ={"AEBENCH_DATA": str(tmp_path)}, download=_no_download)
    assert found == tiny_dataset_dir / "mnist.npz"


def test_environment_variable(tiny_dataset_dir: Path) -> None:
    assert data.find_dataset("mnist", environ={"AEBENCH_DATA": str(tiny_dataset_dir)}, download=_no_download).is_file()


@pytest.mark.parametrize("source", ["--data-dir", "AEBENCH_DATA"])
def test_a_relative_folder_becomes_absolute(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                            source: str) -> None:
    # Worker hosts start in the repository root: a path relative to the user's folder would miss there.
    monkeypatch.chdir(tiny_dataset_dir.parent)
    relative = Path(tiny_dataset_dir.name)
    found = data.find_dataset("mnist", relative if source == "--data-dir" else None,
                              environ={"AEBENCH_DATA": str(relative)} if source == "AEBENCH_DATA" else {},
                              download=_no_download)
    assert found.is_absolute() and found == tiny_dataset_dir / "mnist.npz"


def test_explicit_folder_without_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="mnist.npz not found in --data-dir folder"):
        data.find_dataset("mnist", tmp_path, environ={}, download=_no_download)


def test_keras_cache_then_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dataset_dir: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(UserError) as info:
        data.find_dataset("mnist", environ={}, download=_no_download)
    message = str(info.value)
    assert "Keras download failed (ConnectionError" in message and "Set AEBENCH_DATA" in message
    assert str(tmp_path / "keras" / "datasets" / "mnist.npz") in message

    cache = tmp_path / "keras" / "datasets"
    cache.mkdir(parents=True)
    (cache / "mnist.npz").write_bytes((tiny_dataset_dir / "mnist.npz").read_bytes())
    assert data.find_dataset("mnist", environ={}, download=_no_download) == cache / "mnist.npz"


def test_download_result_is_used(tmp_path: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    assert data.find_dataset("mnist", environ={}, download=lambda name: tiny_dataset_dir / "mnist.npz").is_file()


def test_unknown_dataset() -> None:
    with pytest.raises(UserError, match="dataset 'svhn' is unknown"):
        data.find_dataset("svhn", environ={}, download=None)


def test_load_scales_to_unit_floats(tiny_dataset_dir: Path) -> None:
    dataset = data.load_dataset("mnist", tiny_dataset_dir / "mnist.npz")
    assert dataset.x_train.shape == (600, 28, 28, 1) and dataset.x_train.dtype == np.float32
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0 and dataset.x_train.max() > 0.5
    assert dataset.y_test.shape == (200,) and len(dataset.sha256) == 64


def test_truncated_file(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    bad = tmp_path / "mnist.npz"
    bad.write_bytes((tiny_dataset_dir / "mnist.npz").read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        data.load_dataset("mnist", bad)


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "mnist.npz"
    bad.write_text("hello")
    with pytest.raises(UserError, match="mnist.npz: corrupt or truncated npz file"):
        data.load_dataset("mnist", bad)


def test_a_file_with_fewer_images_than_the_matrix_reads_is_refused(tiny_dataset_dir: Path) -> None:
    path = tiny_dataset_dir / "mnist.npz"  # 600 training and 200 test images
    def reads(train: int, test: int) -> SimpleNamespace:  # the sizes a matrix reads
        return SimpleNamespace(train_size=train, validation_size=0, test_size=test)

    assert len(data.check_dataset(path, reads(600, 200))["x_test"]) == 200
    with pytest.raises(UserError, match=r"x_train holds 600 images; the matrix reads 601 \(train_size \+ "
                                        r"validation_size\)"):
        data.check_dataset(path, reads(601, 10))
    with pytest.raises(UserError, match=r"x_test holds 200 images; the matrix reads 1000 \(test_size\)"):
        data.check_dataset(path, reads(10, 1000))


def test_wrong_shape_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    images = np.zeros((4, 32, 32), np.uint8)
    labels = np.zeros(4, np.uint8)
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    with pytest.raises(UserError, match=r"x_train has shape \(4, 32, 32\): allowed \(N, 28, 28\)"):
        data.load_dataset("mnist", path)
    np.savez(path, x_train=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(UserError, match="missing y_train, x_test, y_test"):
        data.load_dataset("mnist", path)


def test_wrong_dtype(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    images = np.zeros((4, 28, 28), np.float32)
    np.savez(path, x_train=images, y_train=np.zeros(4), x_test=images, y_test=np.zeros(4))
    with pytest.raises(UserError, match="dtype float32: allowed uint8"):
        data.load_dataset("mnist", path)


def test_gaussian_noise_is_seeded_clipped_and_scaled() -> None:
    images = np.full((50, 28, 28, 1), 0.5, np.float32)
    first = data.add_noise(images, "gaussian", 0.2, seed=1)
    assert np.array_equal(first, data.add_noise(images, "gaussian", 0.2, seed=1))
    assert not np.array_equal(first, data.add_noise(images, "gaussian", 0.2, seed=2))
    assert first.min() >= 0 and first.max() <= 1 and first.dtype == np.float32
    assert np.std(first - images) == pytest.approx(0.2, rel=0.05)  # 0.5 +- 0.2 rarely clips
    assert np.array_equal(data.add_noise(images, "gaussian", 0.0, seed=1), images)


@pytest.mark.parametrize("kind", ["salt_and_pepper", "masking"])
def test_pixel_noise_hits_the_requested_fraction(kind: str) -> None:
    images = np.full((20, 28, 28, 1), 0.5, np.float32)
    noisy = data.add_noise(images, kind, 0.25, seed=0)
    assert np.mean(noisy != images) == pytest.approx(0.25, abs=0.02)
    assert set(np.unique(noisy)) <= ({0.0, 0.5, 1.0} if kind == "salt_and_pepper" else {0.0, 0.5})


@pytest.mark.parametrize(("kind", "level"), [("gaussian", -1.0), ("gaussian", float("inf")), ("masking", 1.5), ("blur", 0.1)])
def test_bad_noise(kind: str, level: float) -> None:
    with pytest.raises(ValueError, match="allowed"):
        data.add_noise(np.zeros((1, 28, 28, 1), np.float32), kind, level, seed=0)


def test_subset_is_seeded_and_keeps_labels_aligned() -> None:
    images = np.arange(100, dtype=np.float32).reshape(100, 1)
    labels = np.arange(100)
    x, y = data.subset(images, labels, 10, seed=3)
    assert len(x) == 10 and np.array_equal(x[:, 0], y)
    assert np.array_equal(x, data.subset(images, labels, 10, seed=3)[0])


def test_the_validation_slice_is_held_out_of_the_training_subset() -> None:
    images = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    labels = np.arange(100)
    x_train, y_train, x_validation = data.training_split(images, labels, 60, 30, seed=3)
    assert len(x_train) == 60 and len(x_validation) == 30
    assert not set(x_train.ravel()) & set(x_validation.ravel())  # never trained on
    assert np.array_equal(x_train.ravel(), y_train)  # labels stay aligned
    # The training subset is the one ``subset`` picks, and the slice does not move with the training size.
    assert np.array_equal(x_train, data.subset(images, labels, 60, seed=3)[0])
    assert np.array_equal(x_validation, data.training_split(images, labels, 10, 30, seed=3)[2])
    with pytest.raises(ValueError, match="at most the 100 training images"):
        data.training_split(images, labels, 80, 30, seed=3)
