"""The zoo's catalogue: variant names, hyperparameter defaults and bounds, validation.

Free of Keras on purpose: the runner validates a matrix with it before any framework is imported (importing
TensorFlow costs seconds), and workers import the builders only when they build a model.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

VARIANTS: tuple[str, ...] = (
    "undercomplete",
    "sparse_l1",
    "sparse_kl",
    "denoising",
    "contractive",
    "conv",
)

HParams = dict[str, float | int]
# The hyperparameter a variant that corrupts its own input (``corrupts_input``) takes from the cell's noise level
# instead of its default: aebench.worker sets it.
CORRUPTION_HPARAM = "noise_factor"


@dataclass(frozen=True)
class VariantSpec:
    """How to build one variant and which hyperparameters it accepts.

    ``allowed`` bounds are inclusive, except for keys listed in ``exclusive``
    whose bounds are strict (e.g. 0 < rho < 1). A hyperparameter whose default
    is an int must be given as an int; float ones accept int or float.
    """

    name: str
    builder: str  # "module:function", imported only when a model is built
    defaults: Mapping[str, float | int]
    allowed: Mapping[str, tuple[float | int, float | int]]
    corrupts_input: bool
    description: str
    exclusive: frozenset[str] = field(default_factory=frozenset)


_SHAPE_DEFAULTS = {"latent_dim": 32, "hidden_units": 128}
# latent_dim above 784 would no longer be a bottleneck for 28x28 images.
_SHAPE_BOUNDS = {"latent_dim": (1, 784), "hidden_units": (1, 4096)}


def _spec(
    name: str,
    builder: str,
    extra_defaults: Mapping[str, float | int],
    extra_bounds: Mapping[str, tuple[float | int, float | int]],
    description: str,
    *,
    dense: bool = True,
    corrupts_input: bool = False,
    exclusive: frozenset[str] = frozenset(),
) -> VariantSpec:
    defaults = {**(_SHAPE_DEFAULTS if dense else {}), **extra_defaults}
    bounds = {**(_SHAPE_BOUNDS if dense else {}), **extra_bounds}
    return VariantSpec(
        name=name,
        builder=builder,
        defaults=MappingProxyType(defaults),
        allowed=MappingProxyType(bounds),
        corrupts_input=corrupts_input,
        description=description,
        exclusive=exclusive,
    )


REGISTRY: dict[str, VariantSpec] = {
    "undercomplete": _spec(
        "undercomplete",
        "aebench.models.dense:build_undercomplete",
        {},
        {},
        "dense 784-128-32-128-784 bottleneck, linear code",
    ),
    "sparse_l1": _spec(
        "sparse_l1",
        "aebench.models.dense:build_sparse_l1",
        {"l1": 1e-4},
        {"l1": (0.0, 1.0)},
        "undercomplete topology, relu code with a per-example L1 activity penalty",
    ),
    "sparse_kl": _spec(
        "sparse_kl",
        "aebench.models.dense:build_sparse_kl",
        {"rho": 0.05, "beta": 1e-2},
        {"rho": (0.0, 1.0), "beta": (0.0, 100.0)},
        "undercomplete topology, sigmoid code with a KL(rho || mean activation) sparsity penalty",
        exclusive=frozenset({"rho"}),
    ),
    "denoising": _spec(
        "denoising",
        "aebench.models.dense:build_denoising",
        {"noise_factor": 0.2},
        {"noise_factor": (0.0, 10.0)},
        "undercomplete topology that corrupts its clean input in training: "
        "x + noise_factor * N(0, 1), clipped to [0, 1]",
        corrupts_input=True,
    ),
    "contractive": _spec(
        "contractive",
        "aebench.models.dense:build_contractive",
        {"contractive_lambda": 1e-4},
        {"contractive_lambda": (0.0, 1.0)},
        "784-32-128-784 with one sigmoid encoder layer, the squared Frobenius norm of its Jacobian as penalty",
    ),
    "conv": _spec(
        "conv",
        "aebench.models.conv:build_conv",
        {},
        {},
        "the paper's model, 2,561 parameters: Conv2D(16)-MaxPool-Conv2D(8)-MaxPool (7x7x8 code)-Conv2D(8)-"
        "UpSampling-Conv2DTranspose(8)-UpSampling-Conv2DTranspose(1, sigmoid)",
        dense=False,
    ),
}


def _spec_for(variant: str) -> VariantSpec:
    if not isinstance(variant, str) or variant not in REGISTRY:
        raise ValueError(
            f"unknown variant {variant!r}: allowed {', '.join(VARIANTS)}"
        )
    return REGISTRY[variant]


def _fmt(bound: float | int) -> str:
    return f"{bound:g}"


def _check_value(spec: VariantSpec, key: str, value: object) -> float | int:
    """Return value coerced to the default's type, or raise ValueError."""
    where = f"{spec.name}.{key} = {value!r}"
    # bool is an int subclass, but True as a latent size is always a mistake.
    is_bool = isinstance(value, bool)
    if isinstance(spec.defaults[key], int):
        if is_bool or not isinstance(value, numbers.Integral):
            raise ValueError(
                f"{where} has type {type(value).__name__}: {key} must be an int"
            )
        value = int(value)
    else:
        if is_bool or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{where} has type {type(value).__name__}: "
                f"{key} must be a number (int or float)"
            )
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where} is not finite: {key} must be a finite number")

    lo, hi = spec.allowed[key]
    if key in spec.exclusive:
        ok, op = lo < value < hi, "<"
    else:
        ok, op = lo <= value <= hi, "<="
    if not ok:
        raise ValueError(
            f"{where} is out of range: allowed {_fmt(lo)} {op} {key} {op} {_fmt(hi)}"
        )
    return value


def resolve_hparams(variant: str, overrides: Mapping[str, object] | None) -> HParams:
    """Return the variant's defaults updated with validated overrides.

    Raises ValueError naming the offending variant, key or value.
    """
    spec = _spec_for(variant)
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"hyperparameters for {variant!r} must be a mapping, "
            f"got {type(overrides).__name__}"
        )
    resolved: HParams = dict(spec.defaults)
    for key, value in overrides.items():
        if key not in spec.defaults:
            allowed = ", ".join(spec.defaults) or "(none)"
            raise ValueError(
                f"unknown hyperparameter {key!r} for variant {variant!r}: "
                f"allowed {allowed}"
            )
        resolved[key] = _check_value(spec, key, value)
    return resolved




def builder_of(variant: str) -> Callable[..., Any]:
    module, function = _spec_for(variant).builder.split(":")
    return getattr(importlib.import_module(module), function)


def defaults(variant: str) -> Mapping[str, float | int]:
    return _spec_for(variant).defaults
