"""Datasets and noise.

Lookup order for a dataset's npz file (Keras layout: x_train, y_train, x_test, y_test as uint8):
an explicit ``--data-dir``, then ``$AEBENCH_DATA``, then the Keras cache (``$KERAS_HOME/datasets`` or
``~/.keras/datasets``), then a Keras download. If all fail, the error says exactly what to do.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aebench.errors import UserError

if TYPE_CHECKING:
    from aebench.config import Matrix

DATASET_FILES = {"mnist": "mnist.npz", "fashion_mnist": "fashion_mnist.npz"}
IMAGE_SHAPE = (28, 28)
_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """Images as float32 in [0, 1] with a channel axis, labels as int64, and the file's identity."""

    name: str
    path: Path
    sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _keras_download(name: str) -> Path:
    """Let Keras fetch the dataset into its cache; returns the cached file."""
    import keras  # slow to import, so only on this last-resort path

    getattr(keras.datasets, name).load_data()
    return keras_cache_dir() / DATASET_FILES[name]


def find_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    download: Callable[[str], Path] | None = _keras_download,
) -> Path:
    """Return the path of the dataset's npz file, trying each source in order."""
    if name not in DATASET_FILES:
        raise UserError(f"dataset {name!r} is unknown: allowed {', '.join(DATASET_FILES)}")
    filename = DATASET_FILES[name]
    environ = os.environ if environ is None else environ
    looked: list[str] = []
    for label, folder in (("--data-dir", data_dir), ("AEBENCH_DATA", environ.get("AEBENCH_DATA"))):
        if folder:
            candidate = Path(folder) / filename
            if candidate.is_file():
                return candidate.absolute()  # worker hosts start in another folder: a relative path would miss there
            # An explicit folder that lacks the file is a mistake worth stopping for, not a reason to download.
            raise UserError(f"{filename} not found in {label} folder {str(folder)!r}: put {filename} there or fix the path")
    cached = keras_cache_dir() / filename
    if cached.is_file():
        return cached.absolute()  # a relative KERAS_HOME would miss from the worker hosts' folder
    looked.append(str(cached))
    reason = "download disabled"
    if download is not None:
        try:
            path = download(name)
            if path.is_file():
                return path
            reason = f"the download left no {path}"
        except Exception as error:  # noqa: BLE001 - any download failure ends in the same advice
            reason = f"the Keras download failed ({type(error).__name__}: {str(error)[:120]})"
    raise UserError(
        f"{filename} not found: looked in {', '.join(looked)}; {reason}. "
        f"Set AEBENCH_DATA (or --data-dir) to a folder holding {filename} in the Keras npz layout "
        f"(x_train, y_train, x_test, y_test as uint8)"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_dataset(path: Path, matrix: Matrix | None = None) -> dict[str, np.ndarray]:
    """Read and check an npz file's four uint8 arrays; any defect becomes a one-line UserError naming the file.
    With ``matrix``, a file with fewer images than it reads is refused too, instead of a sweep whose every cell fails
    or whose figures count images it never had.

    The CLI calls this alone to refuse a bad file before anything is written; workers go on to ``load_dataset``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in _KEYS if key not in archive.files]
            if missing:
                raise UserError(f"{path}: not a Keras dataset archive, missing {', '.join(missing)} (has {', '.join(archive.files) or 'nothing'})")
            arrays = {key: archive[key] for key in _KEYS}
    except UserError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as error:
        raise UserError(f"{path}: corrupt or truncated npz file ({type(error).__name__}: {error}); replace it with a good copy") from None
    needs = {"train": (matrix.train_size + matrix.validation_size, "train_size + validation_size"),
             "test": (matrix.test_size, "test_size")} if matrix is not None else {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise UserError(f"{path}: x_{split} has shape {images.shape}: allowed (N, 28, 28)")
        if images.dtype != np.uint8:
            raise UserError(f"{path}: x_{split} has dtype {images.dtype}: allowed uint8")
        if labels.shape != (images.shape[0],):
            raise UserError(f"{path}: y_{split} has shape {labels.shape}: allowed ({images.shape[0]},) to match x_{split}")
        need, settings = needs.get(split, (0, ""))
        if len(images) < need:
            raise UserError(f"{path}: x_{split} holds {len(images)} images; the matrix reads {need} ({settings}): "
                            "allowed a smaller setting with --set, or the full dataset file")
    return arrays


def load_dataset(name: str, path: Path) -> Dataset:
    """A checked dataset with images as float32 in [0, 1] and the file's sha256 (the classifier cache key)."""
    arrays = check_dataset(path)
    return Dataset(
        name=name,
        path=Path(path),
        sha256=file_sha256(path),
        x_train=to_unit_float(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=to_unit_float(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64),
    )


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def add_noise(images: np.ndarray, kind: str, level: float, seed: int) -> np.ndarray:
    """Corrupt images in [0, 1]; the result stays in [0, 1] and depends only on (images, kind, level, seed).

    gaussian: clip(x + level * N(0, 1), 0, 1), as in the paper (level 0.2).
    salt_and_pepper: a fraction ``level`` of pixels set to 0 or 1 with equal odds.
    masking: a fraction ``level`` of pixels set to 0.
    """
    if not np.isfinite(level) or level < 0:
        raise ValueError(f"noise level {level!r} is invalid: allowed finite numbers >= 0")
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        noisy = images + level * rng.standard_normal(images.shape, dtype=np.float32)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)
    if kind in ("salt_and_pepper", "masking"):
        if level > 1:
            raise ValueError(f"{kind} level {level!r} is a fraction of pixels: allowed 0 to 1")
        hit = rng.random(images.shape, dtype=np.float32) < level
        noisy = images.copy()
        if kind == "masking":
            noisy[hit] = 0.0
        else:
            noisy[hit] = (rng.random(int(hit.sum()), dtype=np.float32) < 0.5).astype(np.float32)
        return noisy
    raise ValueError(f"noise type {kind!r} is unknown: allowed gaussian, salt_and_pepper, masking")


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-agnostic random subset of ``size`` examples (all of them when size >= N)."""
    if size >= len(images):
        return images, labels
    order = np.random.default_rng(seed).permutation(len(images))[:size]
    order.sort()
    return images[order], labels[order]


def training_split(images: np.ndarray, labels: np.ndarray, train_size: int, validation_size: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training images, their labels, validation images): two disjoint random slices of the training set.

    One permutation of the seed draws both: the training subset is its first ``train_size`` images (the same ones
    ``subset`` picks), the validation slice its last ``validation_size``. The validation slice is what time-to-quality
    is judged on and variants are tuned on; it is never trained on, and the test set is never looked at."""
    if train_size + validation_size > len(images):
        raise ValueError(f"train_size {train_size} + validation_size {validation_size} is invalid: allowed at most the "
                         f"{len(images)} training images")
    order = np.random.default_rng(seed).permutation(len(images))
    train, validation = np.sort(order[:train_size]), np.sort(order[len(images) - validation_size:])
    return images[train], labels[train], images[validation]
