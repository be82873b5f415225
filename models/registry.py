"""The zoo's catalogue: variant names, hyperparameter defaults and bounds, validation.

Free of Keras on purpose: the runner validates a matrix with it before any framework is imported (importing
TensorFlow costs seconds), and workers import the builders only when they build a model.

**Plugins.** Users add their own autoencoders without touching aebench, in either of two ways:

- an installed package declares an entry point in the group ``aebench.variants`` (``[project.entry-points.
  "aebench.variants"] my_ae = "my_package.aebench_plugin:VARIANTS"``);
- ``AEBENCH_PLUGINS=module[,module...]`` names importable modules (``module:attribute`` picks an attribute other than
  ``aebench_variants``).

Either way the object is a :class:`VariantSpec`, a list of them or a function returning either; its ``builder``
("module:function") gets the hyperparameters as keyword arguments (and ``seed=`` when it ``corrupts_input``), like
the zoo's own, and returns an uncompiled Keras model of (28, 28, 1) images in [0, 1] with a layer named ``latent``. Plugins load through :func:`load_registered_plugins`,
which ``aebench.cli`` calls first (after quieting the frameworks) and every worker host calls before it preloads Keras
(``AEBENCH_*`` variables pass to workers), so matrices, ``aebench models`` and cells all see them. A plugin module
should import Keras inside its builders, as the zoo does: importing it at the top makes every command pay for it.
"""

from __future__ import annotations

import importlib
import math
import os
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aebench.errors import UserError

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
# instead of its default, unless the matrix sets it: aebench.worker sets it.
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
    # Its loss penalises the encoder's Jacobian in closed form (a single sigmoid layer named "latent"): the worker
    # checks that form against the backend's autodiff on every cell (diag.jacobian_fro_sq_*).
    jacobian_penalty: bool = False


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
    jacobian_penalty: bool = False,
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
        jacobian_penalty=jacobian_penalty,
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
        {"rho": 0.05, "beta": 1e-2, "center_input": 1},
        {"rho": (0.0, 1.0), "beta": (0.0, 100.0), "center_input": (0, 1)},
        "undercomplete topology on centred pixels (center_input), sigmoid code with a KL(rho || mean activation) "
        "sparsity penalty",
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
        {"contractive_lambda": 1e-4, "center_input": 1},
        {"contractive_lambda": (0.0, 1.0), "center_input": (0, 1)},
        "784-32-128-784 with one sigmoid encoder layer on centred pixels (center_input), the squared Frobenius norm "
        "of its Jacobian as penalty",
        jacobian_penalty=True,
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


PLUGIN_GROUP = "aebench.variants"
PLUGIN_VARIABLE = "AEBENCH_PLUGINS"
PLUGIN_ATTRIBUTE = "aebench_variants"


class PluginError(UserError):
    """A plugin that cannot be loaded or does not give variants; the message names it and what is allowed (exit
    status 2, as any bad input)."""


def _plugin_specs(source: str, loaded: object) -> list[VariantSpec]:
    found = loaded
    if callable(loaded) and not isinstance(loaded, VariantSpec):
        try:
            found = loaded()
        except Exception as error:  # the plugin's function failed: named, with what it should be
            raise PluginError(f"plugin {source}: calling it failed ({type(error).__name__}: {error}): allowed a "
                              "function of no arguments returning a VariantSpec or a list of them") from error
    specs = [found] if isinstance(found, VariantSpec) else list(found) if isinstance(found, (list, tuple)) else None
    if specs is None or not all(isinstance(spec, VariantSpec) for spec in specs):
        raise PluginError(f"plugin {source} gave {type(found).__name__}: allowed a VariantSpec, a list of them, or a "
                          "function returning either")
    return specs


def _plugin_sources(environ: Mapping[str, str]) -> list[tuple[str, Callable[[], object]]]:
    """(name, loader) of every plugin: the entry points of the ``aebench.variants`` group, then AEBENCH_PLUGINS."""
    from importlib.metadata import entry_points

    sources: list[tuple[str, Callable[[], object]]] = [
        (f"entry point {point.name!r} ({point.value})", point.load) for point in entry_points(group=PLUGIN_GROUP)]
    for text in filter(None, (part.strip() for part in environ.get(PLUGIN_VARIABLE, "").split(","))):
        module, _, attribute = text.partition(":")

        def load(module: str = module, attribute: str = attribute or PLUGIN_ATTRIBUTE) -> object:
            return getattr(importlib.import_module(module), attribute)

        sources.append((f"{PLUGIN_VARIABLE} {text!r}", load))
    return sources


def load_plugins(registry: dict[str, VariantSpec], environ: Mapping[str, str]) -> list[str]:
    """Add every plugin's variants to ``registry``; returns their names. A plugin that fails to import, gives no
    variants or reuses a name raises :class:`PluginError`."""
    added = []
    for source, load in _plugin_sources(environ):
        try:
            loaded = load()
        except Exception as error:  # a plugin's own failure, whatever it is, named as such
            raise PluginError(f"plugin {source} cannot be loaded ({type(error).__name__}: {error}): allowed an "
                              "importable module defining the variants") from error
        for spec in _plugin_specs(source, loaded):
            if spec.name in registry:
                raise PluginError(f"plugin {source} defines variant {spec.name!r}, which exists already: allowed a "
                                  f"new name (taken: {', '.join(registry)})")
            if not spec.name or "/" in spec.name:
                raise PluginError(f"plugin {source} defines variant {spec.name!r}: allowed a non-empty name without "
                                  "'/' (the separator of cell keys)")
            if ":" not in spec.builder:
                raise PluginError(f"plugin {source}: variant {spec.name!r} has builder {spec.builder!r}: allowed "
                                  "'module:function'")
            registry[spec.name] = spec
            added.append(spec.name)
    return added


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


PLUGIN_VARIANTS: tuple[str, ...] = ()  # the names plugins added, once loaded
_plugins_loaded = False


def load_registered_plugins(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Load the plugins of the entry-point group and of AEBENCH_PLUGINS into the registry, once per process; returns
    their variants. Not at import: this module is imported on every command's way to parsing its arguments, before
    aebench quiets the frameworks a plugin may start, and in worker hosts before their environment is set."""
    global PLUGIN_VARIANTS, VARIANTS, _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True  # a failing plugin fails once, with its message; the zoo's own variants stay usable
        PLUGIN_VARIANTS = tuple(load_plugins(REGISTRY, os.environ if environ is None else environ))
        VARIANTS = tuple(REGISTRY)
    return PLUGIN_VARIANTS
