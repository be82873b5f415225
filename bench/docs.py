"""The registries as tables: the metrics (``aebench metrics``) and the model zoo, and the README blocks they fill.

The README's metric and zoo tables sit between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers and are
never edited by hand: ``make readme`` (``python -m aebench.docs README.md``) rewrites them from the registries, and a
test fails when they differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from aebench.errors import UserError
from aebench.metrics import REGISTRY
from aebench.models import registry
from aebench.models.registry import CORRUPTION_HPARAM


def metric_frame() -> pd.DataFrame:
    """One row per registry entry, in registry order (group by group)."""
    return pd.DataFrame([
        {"metric": metric.name, "unit": metric.unit, "better": metric.better or "",
         "margin": _margin_text(metric), "group": metric.group, "description": metric.description}
        for metric in REGISTRY
    ])


def _margin_text(metric) -> str:
    """A gated metric's margin as compare, ab and history apply it: a percentage for speed, an amount for quality."""
    if metric.margin is None:
        return ""
    if metric.judged_by_ratio:
        return f"{metric.margin:g}%"
    return f"{metric.margin:g}{' ' + metric.unit if metric.unit else ''}"


def zoo_frame(*, code: Callable[[str], str] = str) -> pd.DataFrame:
    """One row per variant: its model and its hyperparameters with their defaults; ``code`` marks up a name."""
    def hyperparameters(spec) -> str:
        defaults = [f"{code(key)} (the cell's noise, unless set)" if spec.corrupts_input and key == CORRUPTION_HPARAM
                    else f"{code(key)} ({value:g})" for key, value in spec.defaults.items()]
        return ", ".join(defaults) or "none"

    return pd.DataFrame([{"variant": code(name), "model": spec.description,
                          "hyperparameters (default)": hyperparameters(spec)} for name, spec in registry.REGISTRY.items()
                          if name not in registry.PLUGIN_VARIANTS])  # the README documents aebench's zoo, not this shell's plugins


def to_text(frame: pd.DataFrame) -> str:
    """A plain text table, every column left-aligned."""
    widths = {column: max(len(column), *(len(str(value)) for value in frame[column])) for column in frame.columns}
    formatters = {column: (lambda value, width=width: f"{value:<{width}}") for column, width in widths.items()}
    text = frame.to_string(index=False, justify="left", formatters=formatters)
    return "\n".join(line.rstrip() for line in text.splitlines())


def to_markdown(frame: pd.DataFrame, code_columns: Sequence[str] = ()) -> str:
    """A GitHub Markdown table; the values of ``code_columns`` in backticks, pipes in text escaped."""
    frame = frame.copy()
    for column in frame.columns:
        frame[column] = frame[column].astype(str).str.replace("|", r"\|", regex=False)
    for column in code_columns:
        frame[column] = "`" + frame[column] + "`"
    return frame.to_markdown(index=False, disable_numparse=True)


def metric_table(*, markdown: bool = False) -> str:
    frame = metric_frame()
    return to_markdown(frame, code_columns=["metric"]) if markdown else to_text(frame)


README_BLOCKS: dict[str, Callable[[], str]] = {
    "metrics": lambda: metric_table(markdown=True),
    "zoo": lambda: to_markdown(zoo_frame(code=lambda name: f"`{name}`")),
}


def fill_blocks(text: str) -> str:
    """The text with every generated block replaced by what the registries give now."""
    for name, render in README_BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if len(pattern.findall(text)) != 1:
            raise UserError(f"the README needs exactly one '<!-- {name}:begin -->' ... '<!-- {name}:end -->' block")
        text = pattern.sub(lambda match: match.group(1) + render() + "\n" + match.group(2), text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aebench.docs",
                                     description="Rewrite the README's metric and zoo tables from the registries.")
    parser.add_argument("readme", type=Path, nargs="?", default=Path("README.md"))
    args = parser.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        filled = fill_blocks(text)
    except (OSError, UserError) as error:
        print(f"aebench: error: {error}", file=sys.stderr)
        return 2
    if filled != text:
        from aebench.atomic import write_text

        write_text(args.readme, filled)
        print(f"{args.readme}: tables regenerated")
    else:
        print(f"{args.readme}: tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
