"""Benchmark matrices: TOML files whose axes expand into cells.

A matrix names the axes to sweep (variants x noise x device x backend x precision x threads x seeds) and the settings
shared by every cell. ``load_matrix`` reads a file, applies ``--set key=value`` overrides (values parsed as TOML) and
validates everything up front, so a bad key or value is reported before any work starts or anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aebench import backends
from aebench.models import registry
from aebench.errors import UserError

DATASETS = ("mnist", "fashion_mnist")
NOISE_TYPES = ("gaussian", "salt_and_pepper", "masking")
DEVICES = ("cpu", "gpu", "tpu")
BACKENDS = tuple(backends.BACKENDS)  # one class per Keras backend (aebench.backends), named as Keras names them
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LR_SCHEDULES = ("constant", "cosine")
MATRICES_DIR = Path(__file__).parent / "matrices"
TRAINING_IMAGES = 60000  # both datasets' training sets: the training subset and the held-out slice come from them


_SEED_SUFFIX = re.compile(r"/seed\d+$")  # the last part of a cell key (Cell._key)

@dataclass(frozen=True)
class LatencySettings:
    """SingleStream (batch 1, sequential) scenario: stop once both minimums are met, or at the cap."""

    warmup: int = 20
    min_count: int = 200
    min_duration_s: float = 1.0
    max_duration_s: float = 20.0


@dataclass(frozen=True)
class ThroughputSettings:
    """Offline scenario: large batches back to back; throughput is images per second."""

    batch_size: int = 1024
    warmup: int = 2
    min_count: int = 5
    min_duration_s: float = 1.0
    max_duration_s: float = 20.0


@dataclass(frozen=True)
class TrainTimingSettings:
    """How every cell times training: from the trained weights, one warm-up epoch of ``steps`` batches (tracing,
    compilation, the optimizer's first step), then ``repeats`` timed epochs of ``steps`` batches on the same feed. The
    weights those steps change are discarded."""

    steps: int = 20
    repeats: int = 3


@dataclass(frozen=True)
class TimeToQualitySettings:
    """The training run's quality clock: validation PSNR on the held-out slice every ``every_steps`` steps; the
    target is the noisy validation images' own PSNR plus ``target_gain_db``."""

    target_gain_db: float = 3.0
    every_steps: int = 50


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: everything a worker needs to know that differs between cells."""

    index: int
    variant: str
    noise: float
    noise_type: str
    device: str
    threads: int | None  # CPU threads the worker is pinned to; None on accelerators, where it is not pinned
    backend: str
    precision: str
    seed: int
    hparams: tuple[tuple[str, float | int], ...] = ()

    def __post_init__(self) -> None:
        """A cell is read back from stores and from worker tasks, not only built from a checked matrix: refuse one
        that no matrix could give, before its key (the store's identity for it) is made from it."""
        def bad(field_name: str, allowed: str) -> ValueError:
            return ValueError(f"Cell.{field_name} {getattr(self, field_name)!r} is invalid: allowed {allowed}")

        if not _whole(self.index) or self.index < 0:
            raise bad("index", "an integer >= 0")
        for name in ("variant", "noise_type", "backend", "precision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value:
                raise bad(name, "a non-empty name without '/' (the separator of cell keys)")
        if self.device not in DEVICES:
            raise bad("device", ", ".join(DEVICES))
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not (
                math.isfinite(self.noise) and self.noise >= 0):
            raise bad("noise", "a finite level >= 0")
        if self.threads is not None and (not _whole(self.threads) or self.threads < 1):
            raise bad("threads", "an integer >= 1, or none on an accelerator")
        if self.device != "cpu" and self.threads is not None:
            raise bad("threads", f"none on a {self.device} cell (only CPU cells are pinned)")
        if not _whole(self.seed) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if not all(isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) for pair in self.hparams):
            raise bad("hparams", "(name, value) pairs")

    def _key(self, where: str) -> str:
        return f"{self.variant}/{self.noise_type}{self.noise:g}/{where}/{self.backend}/{self.precision}/seed{self.seed}"

    @staticmethod
    def group_key(key: str) -> str:
        """A stored cell key without its seed: the cells whose figures are repeats of one another across runs."""
        return _SEED_SUFFIX.sub("", key)

    @staticmethod
    def device_part(key: str) -> str:
        """The device part of a stored cell key (``cpu2``, ``gpu``: the third part ``_key`` writes)."""
        return key.split("/")[2]

    @staticmethod
    def workload_key(key: str) -> str:
        """A stored cell key without its device part: the same workload on a CPU with N threads or on a GPU."""
        parts = key.split("/")
        return "/".join(parts[:2] + parts[3:])

    @property
    def key(self) -> str:
        return self._key(f"{self.device}{self.threads}" if self.threads is not None else self.device)

    @property
    def quality_key(self) -> str:
        """The key without the thread count: cells that share it train one model (the one with the most threads
        trains it) and share its quality figures; each thread count times its own speed."""
        return self._key(self.device)

    @property
    def label(self) -> str:
        threads = f" threads={self.threads}" if self.threads is not None else ""
        return f"{self.variant} noise={self.noise:g} {self.device}{threads} {self.backend} {self.precision} seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hparams"] = dict(self.hparams)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        values = dict(data)
        values["hparams"] = tuple(sorted(dict(values.get("hparams", {})).items()))
        return cls(**values)


@dataclass(frozen=True)
class Matrix:
    """A validated benchmark matrix. Build it with ``Matrix.from_dict`` or ``load_matrix``, never by hand."""

    name: str
    dataset: str
    variants: tuple[str, ...]
    noise: tuple[float, ...]
    threads: tuple[int, ...]
    description: str = ""
    noise_type: str = "gaussian"
    device: tuple[str, ...] = ("cpu",)
    backend: tuple[str, ...] = ("tensorflow",)
    precision: tuple[str, ...] = ("float32",)
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": from learning_rate down to 0 over the training run's steps
    train_size: int = 59000
    validation_size: int = 1000  # held out of the training set for time-to-quality; never trained on
    test_size: int = 10000
    seed: int = 0
    repeats: int = 1
    timeout_s: float = 600.0
    memory_limit_mb: float = 0.0  # address space a cell may add to what it inherits from its host; 0: no limit
    eval_noise: tuple[float, ...] = ()
    accuracy: bool = True  # reference classifier and latent probe (aebench.accuracy); off makes test runs cheap
    jit_compile: bool | str = False  # or "auto": Keras decides per backend (XLA on JAX, eager torch)
    predict_path: bool = True
    checkpoint: bool = False
    latency: LatencySettings = field(default_factory=LatencySettings)
    throughput: ThroughputSettings = field(default_factory=ThroughputSettings)
    train_timing: TrainTimingSettings = field(default_factory=TrainTimingSettings)
    time_to_quality: TimeToQualitySettings = field(default_factory=TimeToQualitySettings)
    hparams: Mapping[str, Mapping[str, float | int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Matrix:
        return _build_matrix(raw)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hparams"] = {variant: dict(values) for variant, values in self.hparams.items()}
        return data

    @property
    def decay_steps(self) -> int | None:
        """The training run's optimizer steps, over which a cosine schedule decays; None for a constant rate."""
        if self.lr_schedule == "constant":
            return None
        return self.epochs * math.ceil(self.train_size / self.batch_size)

    def to_task(self) -> dict[str, Any]:
        """The matrix as a worker's task carries it: the required keys and those that differ from their defaults.
        A worker of another revision (``aebench ab``) fills in its own defaults, so a key added since it was
        written reaches it only when the matrix sets it."""
        defaults = Matrix(**{key: getattr(self, key) for key in REQUIRED}).to_dict()
        return {key: value for key, value in self.to_dict().items() if key in REQUIRED or value != defaults[key]}

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + offset for offset in range(self.repeats))

    def cells(self) -> list[Cell]:
        """Expand the axes. Thread counts apply to CPU cells only; an accelerator cell is not pinned."""
        cells: list[Cell] = []
        for variant, noise, device, backend, precision, seed in itertools.product(
            self.variants, self.noise, self.device, self.backend, self.precision, self.seeds
        ):
            thread_axis: Sequence[int | None] = self.threads if device == "cpu" else (None,)
            for threads in thread_axis:
                cells.append(
                    Cell(
                        index=len(cells),
                        variant=variant,
                        noise=noise,
                        noise_type=self.noise_type,
                        device=device,
                        threads=threads,
                        backend=backend,
                        precision=precision,
                        seed=seed,
                        hparams=tuple(sorted(self.hparams.get(variant, {}).items())),
                    )
                )
        return cells


# Matrix fields that leave the meaning of a cell's figures alone: the matrix's name and text, the axes (a cell's key
# carries them), which seeds and how many, a run's limits, and extras that add figures of their own (the framework
# path) or time nothing (checkpoints, which time to quality leaves out). Every other field, including any added
# later, is a setting: runs that differ in one measure different things.
NOT_SETTINGS = frozenset({"name", "description", "variants", "noise", "threads", "device", "backend", "precision",
                          "seed", "repeats", "timeout_s", "memory_limit_mb", "predict_path", "checkpoint"})


def matrix_settings(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a matrix as a run stores it (``Matrix.to_dict()`` through JSON), in JSON's types (lists, not
    tuples), in field order. A setting the run predates counts as today's default, which is what it ran with."""
    settings: dict[str, Any] = {}
    for spec in dataclasses.fields(Matrix):
        if spec.name in NOT_SETTINGS:
            continue
        if spec.default is not dataclasses.MISSING:
            default = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = None  # a required key (dataset): every stored matrix has it
        if dataclasses.is_dataclass(default):  # a section: keys added to it since the run count as their defaults
            value = {**dataclasses.asdict(default), **dict(stored.get(spec.name) or {})}
        else:
            value = stored.get(spec.name, default)
        settings[spec.name] = json.loads(json.dumps(value, sort_keys=True))
    return settings


def settings_fingerprint(stored: Mapping[str, Any]) -> str:
    """One string per distinct set of settings (``matrix_settings``): runs with equal fingerprints are comparable."""
    return json.dumps(matrix_settings(stored), sort_keys=True)


def split_by_settings(records: Mapping[str, Mapping[str, Any]],
                      like: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(run ids whose stored matrix has the settings of the run record ``like``, the other run ids), in order."""
    wanted = settings_fingerprint(like.get("matrix") or {})
    same: list[str] = []
    other: list[str] = []
    for run_id, record in records.items():
        (same if settings_fingerprint(record.get("matrix") or {}) == wanted else other).append(run_id)
    return same, other


def settings_differences(base: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]) -> list[str]:
    """'epochs: 3 -> 2'-style lines for every setting (aebench.config.matrix_settings) that differs between (or
    within) the two sides' matrices."""
    sides = [[matrix_settings(record.get("matrix") or {}) for record in side] for side in (base, candidate)]
    lines = []
    for key in (sides[0] or sides[1] or [matrix_settings({})])[0]:
        shown = [sorted({repr(settings[key]) for settings in side}) for side in sides]  # keys sorted: JSON
        if len(set(shown[0]) | set(shown[1])) > 1:
            lines.append(f"{key}: {' / '.join(shown[0])} -> {' / '.join(shown[1])}")
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# Validation. Each checker takes the dotted key and the raw value and returns the clean value or raises UserError.


def _fail(key: str, value: Any, allowed: str) -> UserError:
    return UserError(f"{key} = {value!r} is invalid: allowed {allowed}")


def _integer(low: int, high: int | None = None):
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"integers >= {low}" if high is None else f"integers from {low} to {high}"
            raise _fail(key, value, bound)
        return value

    return check


def _number(low: float, *, strict: bool = False):
    def check(key: str, value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (strict and value == low):
            raise _fail(key, value, f"finite numbers {'>' if strict else '>='} {low:g}")
        return float(value)

    return check


def _choice(options: Sequence[str] | Callable[[], Sequence[str]]):
    """A value from ``options``: a sequence, or a function giving it when a value is checked (the zoo's variants,
    which plugins extend after this module is imported)."""
    def check(key: str, value: Any) -> str:
        allowed = options() if callable(options) else options
        if value not in allowed:
            raise _fail(key, value, "one of " + ", ".join(allowed))
        return value

    return check


def _jit_setting(key: str, value: Any) -> bool | str:
    # "auto" is Keras' own default: jit on JAX (eager JAX is orders of magnitude slower), XLA on a TensorFlow GPU,
    # never on torch (torch.compile's minutes of compilation) nor on a CPU-only TensorFlow.
    if value == "auto" or isinstance(value, bool):
        return value
    raise _fail(key, value, 'true, false or "auto"')


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(key, value, "a string")
    return value


def _axis(item_check, *, allow_empty: bool = False):
    """An axis is a list of distinct values; a single value stands for a one-element list."""

    def check(key: str, value: Any) -> tuple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items and not allow_empty:
            raise _fail(key, value, "a non-empty list")
        clean = tuple(item_check(key, item) for item in items)
        if len(set(clean)) != len(clean):
            raise _fail(key, value, "a list without duplicates")
        return clean

    return check


_TOP_LEVEL = {
    "name": _text,
    "description": _text,
    "dataset": _choice(DATASETS),
    "variants": _axis(_choice(lambda: registry.VARIANTS)),
    "noise": _axis(_number(0.0)),
    "noise_type": _choice(NOISE_TYPES),
    "threads": _axis(_integer(1, 1024)),
    "device": _axis(_choice(DEVICES)),
    "backend": _axis(_choice(BACKENDS)),
    "precision": _axis(_choice(PRECISIONS)),
    "epochs": _integer(2),  # the first epoch includes compilation and is timed apart from the steady ones
    "batch_size": _integer(1),
    "learning_rate": _number(0.0, strict=True),
    "lr_schedule": _choice(LR_SCHEDULES),
    "train_size": _integer(1, TRAINING_IMAGES - 1),
    "validation_size": _integer(1, TRAINING_IMAGES - 1),
    "test_size": _integer(1, 10000),
    "seed": _integer(0, 2**31 - 1),
    "repeats": _integer(1, 100),
    "timeout_s": _number(0.0, strict=True),
    "memory_limit_mb": _number(0.0),
    "eval_noise": _axis(_number(0.0), allow_empty=True),
    "accuracy": _boolean,
    "jit_compile": _jit_setting,
    "predict_path": _boolean,
    "checkpoint": _boolean,
}
# How both timed loops stop (aebench.scenarios.run_timed_loop); the Offline loop adds its batch size.
_LOOP_CHECKS = {
    "warmup": _integer(0),
    "min_count": _integer(1),
    "min_duration_s": _number(0.0),
    "max_duration_s": _number(0.0, strict=True),
}
_SECTIONS = {
    "latency": (LatencySettings, _LOOP_CHECKS),
    "throughput": (ThroughputSettings, {"batch_size": _integer(1), **_LOOP_CHECKS}),
    "train_timing": (TrainTimingSettings, {"steps": _integer(1), "repeats": _integer(2)}),
    "time_to_quality": (TimeToQualitySettings, {"target_gain_db": _number(0.0), "every_steps": _integer(1)}),
}
_TIMED_LOOPS = ("latency", "throughput")  # the sections that stop a loop by a minimum and a maximum duration
REQUIRED = ("name", "dataset", "variants", "noise", "threads")


def allowed_keys() -> list[str]:
    """Every key a matrix file or ``--set`` may name (hyperparameters as ``hparams.<variant>.<name>``)."""
    keys = list(_TOP_LEVEL)
    keys += [f"{section}.{name}" for section, (_, checks) in _SECTIONS.items() for name in checks]
    keys += [f"hparams.{variant}.{name}" for variant in registry.VARIANTS for name in registry.defaults(variant)]
    return keys


def _build_matrix(raw: Mapping[str, Any]) -> Matrix:
    known = set(_TOP_LEVEL) | set(_SECTIONS) | {"hparams"}
    for key in raw:
        if key not in known:
            raise UserError(f"unknown matrix key {key!r}: allowed {', '.join(sorted(known))}")
    for key in REQUIRED:
        if key not in raw:
            raise UserError(f"matrix key {key!r} is missing: it is required ({', '.join(REQUIRED)} are)")
    values: dict[str, Any] = {key: check(key, raw[key]) for key, check in _TOP_LEVEL.items() if key in raw}
    for section, (settings_type, checks) in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, Mapping):
            raise _fail(section, table, f"a table with keys {', '.join(checks)}")
        for key in table:
            if key not in checks:
                raise UserError(f"unknown key '{section}.{key}': allowed {', '.join(section + '.' + k for k in checks)}")
        settings = settings_type(**{key: checks[key](f"{section}.{key}", value) for key, value in table.items()})
        if section in _TIMED_LOOPS and settings.max_duration_s < settings.min_duration_s:
            raise _fail(f"{section}.max_duration_s", settings.max_duration_s, f">= {section}.min_duration_s")
        values[section] = settings
    values["hparams"] = _check_hparams(raw.get("hparams", {}))
    matrix = Matrix(**values)
    if matrix.noise_type != "gaussian" and max(matrix.noise + matrix.eval_noise, default=0) > 1:
        raise _fail("noise", list(matrix.noise), f"fractions from 0 to 1 for noise_type {matrix.noise_type!r}")
    corrupting = [v for v in matrix.variants if registry.REGISTRY[v].corrupts_input]
    if corrupting and matrix.noise_type != "gaussian":
        # Such a variant corrupts its clean input with Gaussian noise at the cell's level (models.regularizers):
        # trained on one noise and scored on another, its figures would say nothing about either.
        raise _fail("noise_type", matrix.noise_type, f"'gaussian' with {', '.join(corrupting)}, which corrupts its "
                    "own input with Gaussian noise in training")
    if matrix.train_size + matrix.validation_size > TRAINING_IMAGES:
        raise _fail("train_size", matrix.train_size, f"<= {TRAINING_IMAGES - matrix.validation_size}: the "
                    f"{matrix.validation_size} images of validation_size are held out of the {TRAINING_IMAGES:,} "
                    "training images")
    if matrix.throughput.batch_size > matrix.test_size:
        raise _fail("throughput.batch_size", matrix.throughput.batch_size, f"<= test_size ({matrix.test_size})")
    # The noise level is the one axis a cell key writes rounded (Cell._key, ":g"): 0.2 and 0.2000001 would share a
    # key, and their figures would be merged.
    labels = [f"{level:g}" for level in matrix.noise]
    if len(set(labels)) != len(labels):
        raise _fail("noise", list(matrix.noise), f"levels that differ in a cell key (written {', '.join(labels)})")
    return matrix


def _check_hparams(table: Any) -> dict[str, dict[str, float | int]]:
    if not isinstance(table, Mapping):
        raise _fail("hparams", table, "a table of tables, one per variant")
    clean: dict[str, dict[str, float | int]] = {}
    for variant, overrides in table.items():
        if variant not in registry.VARIANTS:
            raise _fail(f"hparams.{variant}", overrides, "tables named after variants: " + ", ".join(registry.VARIANTS))
        if not isinstance(overrides, Mapping):
            raise _fail(f"hparams.{variant}", overrides, "a table of hyperparameters")
        try:
            registry.resolve_hparams(variant, overrides)
        except ValueError as error:
            raise UserError(f"hparams.{variant}: {error}") from None
        clean[variant] = dict(overrides)
    return clean


# ----------------------------------------------------------------------------------------------------------------------
# Files and overrides.


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key=value`` with the value parsed as TOML; a bare word that is not TOML is taken as a string."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {text!r} is invalid: allowed key=value, for example --set epochs=2")
    try:
        value = tomllib.loads(f"value = {value_text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        word = value_text.strip()
        if not word or any(ch in word for ch in "[]{}\"'=,"):
            raise UserError(f"--set {key}: value {value_text!r} is not valid TOML") from None
        value = word
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` applied; unknown keys are refused, naming the allowed ones."""
    result = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in raw.items()}
    allowed = allowed_keys()
    for text in overrides:
        path, value = parse_override(text)
        dotted = ".".join(path)
        if dotted not in allowed:
            raise UserError(f"--set: unknown key {dotted!r}: allowed {', '.join(allowed)}")
        target = result
        for depth, part in enumerate(path[:-1]):
            table = target.get(part, {})
            if not isinstance(table, Mapping):
                raise _fail(".".join(path[:depth + 1]), table, f"a table, for --set {dotted}")
            target[part] = dict(table)
            target = target[part]
        target[path[-1]] = value
    return result


def resolve_matrix_path(name_or_path: str | Path) -> Path:
    """A path to a TOML file, or the name of a matrix shipped in bench/matrices (``quick``, ``paper``, ...)."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        candidate = MATRICES_DIR / f"{path.name}.toml"
        if candidate.exists():
            return candidate
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in MATRICES_DIR.glob("*.toml")))
        raise UserError(f"matrix file {str(path)!r} not found: give a path to a .toml file or one of: {shipped}")
    return path


def load_matrix(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Matrix:
    path = resolve_matrix_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: malformed TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the matrix file: {error}") from None
    return Matrix.from_dict(apply_overrides(raw, overrides))


def shard(cells: Sequence[Cell], spec: str | None) -> list[Cell]:
    """``i/N`` keeps every N-th training group starting at i (1-based), so N machines can split one matrix. A group is
    the cells of one quality key (every thread count of a model): they stay together, because one of them trains
    the weights the others time."""
    if not spec:
        return list(cells)
    try:
        index_text, count_text = spec.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UserError(f"--shard {spec!r} is invalid: allowed i/N with 1 <= i <= N, for example 1/2") from None
    if not 1 <= index <= count:
        raise UserError(f"--shard {spec!r} is invalid: allowed i/N with 1 <= i <= N, for example 1/2")
    groups = list(dict.fromkeys(cell.quality_key for cell in cells))
    kept = set(groups[index - 1 :: count])
    return [cell for cell in cells if cell.quality_key in kept]
