"""The paper's conv output-size rule, checked against one-layer Keras models.

out = floor((W - F + 2P) / S) + 1, with P = 0 for "valid" and P = (F - 1) / 2
for "same". For "same" this equals ceil(W / S), which is what Keras does, e.g.
W=28, F=3, S=2: floor((28 - 3 + 2) / 2) + 1 = 14.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import layers
from tabulate import tabulate

PAPER_DEMOS: tuple[tuple[str, int], ...] = (
    ("same", 1),
    ("same", 2),
    ("valid", 1),
    ("valid", 2),
)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def conv_output_size(width: int, kernel: int, padding: str, stride: int) -> int:
    """Spatial output size of a 2D convolution along one axis."""
    width = _positive_int("width", width)
    kernel = _positive_int("kernel", kernel)
    stride = _positive_int("stride", stride)
    if padding == "same":
        # 2P = F - 1 keeps the arithmetic integral even for even kernels.
        two_p = kernel - 1
    elif padding == "valid":
        two_p = 0
        if kernel > width:
            raise ValueError(
                f"kernel {kernel} is larger than width {width} with padding='valid'"
            )
    else:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return (width - kernel + two_p) // stride + 1


def conv_params(kernel: int, channels_in: int, filters: int) -> int:
    """Weights of a Conv2D with bias: F*F*C_in*filters + filters."""
    return kernel * kernel * channels_in * filters + filters


@dataclass(frozen=True)
class ShapeRow:
    """One demo layer: formula prediction versus what Keras built."""

    padding: str
    stride: int
    formula_hw: int
    keras_shape: tuple[int, ...]
    params_formula: int
    keras_params: int
    ok: bool


def shape_table(
    width: int = 28, channels: int = 1, filters: int = 16, kernel: int = 3
) -> list[ShapeRow]:
    """Build the four one-layer demo models of the paper and compare."""
    rows = []
    for padding, stride in PAPER_DEMOS:
        hw = conv_output_size(width, kernel, padding, stride)
        model = keras.Sequential(
            [
                keras.Input(shape=(width, width, channels)),
                layers.Conv2D(filters, kernel, strides=stride, padding=padding),
            ]
        )
        keras_shape = tuple(int(d) for d in model.output_shape[1:])
        params = conv_params(kernel, channels, filters)
        keras_params = int(model.count_params())
        ok = keras_shape == (hw, hw, filters) and params == keras_params
        rows.append(
            ShapeRow(padding, stride, hw, keras_shape, params, keras_params, ok)
        )
    return rows


def format_shape_table(rows: Sequence[ShapeRow]) -> str:
    """Aligned plain-text table with a trailing 'k/n rows match Keras' line."""
    body = [
        (r.padding, r.stride, f"{r.formula_hw}x{r.formula_hw}", "x".join(str(d) for d in r.keras_shape),
         r.params_formula, r.keras_params, "yes" if r.ok else "NO")
        for r in rows
    ]
    headers = ("padding", "stride", "formula", "keras", "params", "keras params", "ok")
    n_ok = sum(r.ok for r in rows)
    return tabulate(body, headers, disable_numparse=True) + f"\n{n_ok}/{len(rows)} rows match Keras"
