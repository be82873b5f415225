"""Tests for the conv output-size rule in models/shapes.py."""

from __future__ import annotations

import pytest

from aebench.models.shapes import (
    PAPER_DEMOS,
    ShapeRow,
    conv_output_size,
    format_shape_table,
    shape_table,
)


@pytest.fixture(scope="module")
def rows() -> list[ShapeRow]:
    return shape_table()


def test_paper_demo_rows(rows) -> None:
    assert PAPER_DEMOS == (("same", 1), ("same", 2), ("valid", 1), ("valid", 2))
    assert [(r.padding, r.stride) for r in rows] == list(PAPER_DEMOS)
    assert [r.formula_hw for r in rows] == [28, 14, 26, 13]
    assert [r.keras_shape for r in rows] == [
        (28, 28, 16), (14, 14, 16), (26, 26, 16), (13, 13, 16)
    ]
    assert all(r.params_formula == 160 and r.keras_params == 160 for r in rows)
    assert all(r.ok for r in rows)


@pytest.mark.parametrize(
    ("width", "kernel", "padding", "stride", "expected"),
    [
        (28, 3, "same", 1, 28),
        (28, 3, "same", 2, 14),  # floor((28 - 3 + 2) / 2) + 1 = ceil(28 / 2)
        (28, 3, "valid", 1, 26),
        (28, 3, "valid", 2, 13),
        (7, 3, "same", 2, 4),  # odd width: ceil(7 / 2)
        (14, 2, "same", 1, 14),  # even kernel: 2P = F - 1
        (5, 5, "valid", 1, 1),
        (32, 5, "valid", 3, 10),
        (1, 1, "same", 1, 1),
    ],
)
def test_conv_output_size(width, kernel, padding, stride, expected) -> None:
    assert conv_output_size(width, kernel, padding, stride) == expected


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((28, 3, "full", 1), "padding"),
        ((28, 3, "SAME", 1), "padding"),
        ((0, 3, "same", 1), "width"),
        ((28, -3, "same", 1), "kernel"),
        ((28, 3, "same", 0), "stride"),
        ((28, 3.0, "same", 1), "kernel"),
        ((28, 3, "same", True), "stride"),
        ((2, 3, "valid", 1), "larger"),
    ],
)
def test_conv_output_size_errors(args, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        conv_output_size(*args)


def test_format_shape_table(rows) -> None:
    text = format_shape_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["padding", "stride"]
    assert lines[-1] == "4/4 rows match Keras"
    assert "14x14x16" in text and "13x13" in text
    # Columns are aligned: every data row starts its stride column at one offset.
    col = lines[0].index("stride")
    assert all(line[col].isdigit() for line in lines[2:6])


def test_format_reports_mismatch(rows) -> None:
    bad = [rows[0], ShapeRow("same", 2, 15, (14, 14, 16), 160, 160, False)]
    assert format_shape_table(bad).splitlines()[-1] == "1/2 rows match Keras"
