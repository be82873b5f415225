"""What every section shares: reading the store's flat frame defensively, the columns of a table (a metric of the
registry, or a cell axis) and the pandas Styler that renders a table.

The store's columns may be missing (an older or newer worker) or NaN, and a run may hold no ok cell at all: the frame
helpers answer with empty or all-NaN columns instead of raising, and every table shows a missing figure as a dash.
Every table is rendered with ``escape="html"``: the store's strings are arbitrary text from crashed workers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from aebench.aggregate import CI_SUFFIX
from aebench.metrics import REGISTRY, Formatter, flag_is_set, general, integer
from aebench.results import UNSTABLE_CV
from aebench.store import without_contaminated_speed

UNSTABLE_MARK = "≈"
UNSTABLE_LEGEND = f"{UNSTABLE_MARK} unstable: stdev > {UNSTABLE_CV:.0%} of mean"
CONTAMINATED_MARK = "‼"
CONTAMINATED_LEGEND = (f"{CONTAMINATED_MARK} contaminated: taken while another aebench run held the machine "
                       "(--allow-concurrent), beside other cells on a cluster node (--pack) or while a load check saw "
                       "other work on the cell's CPUs (info.contaminated says which); compare, hardware, history and "
                       "ab leave these figures out")
NA = "—"
PREFERRED_VARIANT = "conv"  # the paper's model: the latency and image-grid sections show it when it ran
CI_NOTE = ("Figures are the mean ± the half-width of the 95% confidence interval over seeds (Student t, "
           "aebench.aggregate); cells of one seed at several thread counts count as one repeat.")
# How a cell's axes are shown wherever a table has them as columns.
AXIS_FORMATS: dict[str, Formatter] = {
    "variant": str, "noise": general, "device": str, "threads": integer, "backend": str, "precision": str,
    "seed": integer, "status": str,
}
# The Styler emits a <style> block per table even when it has no styles; the page's CSS covers every table.
_EMPTY_STYLE = re.compile(r'<style type="text/css">\s*</style>\s*')


# -- formats of the report's own derived figures (the metrics' formats are the registry's) -----------------------------


def times(value: Any) -> str:
    """A ratio such as a speedup: 2.00×."""
    return f"{float(value):.2f}×"


def whole_percent(value: Any) -> str:
    """A fraction as a whole percentage: 0.5 -> 50%."""
    return f"{float(value):.0%}"


def text(value: Any) -> str:
    """Any stored value (number, bool, list, dict) as one line of text; escaping happens where it is rendered."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={text(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(text(item) for item in value)
    return str(value)


# -- frame access ------------------------------------------------------------------------------------------------------


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats, all-NaN when the run did not record it."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def flags(frame: pd.DataFrame, column: str | None) -> pd.Series:
    """An ``*_unstable`` column as booleans (missing or NaN = stable)."""
    if column is None:
        return pd.Series(False, index=frame.index)
    return numeric(frame, column).map(flag_is_set).astype(bool)


def strings(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype="object")
    return frame[column].astype("object").where(frame[column].notna(), "")


def ok_cells(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["status"] == "ok"]


def measured_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok cells with the speed figures of contaminated ones blanked: what a figure, a mean or a ranking may use.
    Only the results table shows a contaminated figure, with its mark."""
    return without_contaminated_speed(ok_cells(frame))


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("cell", kind="stable") if "cell" in frame.columns else frame


def first_seen(values: Iterable[Any]) -> list[Any]:
    """Distinct values in order of first appearance: cells run in matrix order, so this is the matrix's order."""
    return list(dict.fromkeys(values))


def varying(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [column for column in columns if column in frame.columns and frame[column].nunique(dropna=False) > 1]


def preferred_variant(variants: Sequence[str]) -> str:
    """The variant a section showing only one picks among those that qualify (in matrix order)."""
    return PREFERRED_VARIANT if PREFERRED_VARIANT in variants else variants[0]


def several_seeds(frame: pd.DataFrame) -> bool:
    return "seed" in frame.columns and ok_cells(frame)["seed"].nunique() > 1


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """One line per variant, split further by device/backend/precision only where the run swept those axes."""
    extra = varying(frame, ("device", "backend", "precision"))
    labels = strings(frame, "variant").astype(str)
    for column in extra:
        labels = labels + " " + strings(frame, column).astype(str)
    return labels


def with_series(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(series=series_labels(frame).to_numpy())


def cell_labels(frame: pd.DataFrame) -> list[str]:
    """Short labels naming only the axes that differ between these cells."""
    shown = varying(frame, ("variant", "noise", "device", "threads", "backend", "precision", "seed")) or ["variant"]
    labels = []
    for _, row in frame.iterrows():
        parts = []
        for column in shown:
            value = row.get(column)
            if column == "noise":
                parts.append(f"noise {float(value):g}")
            elif column == "threads":
                if pd.notna(value):
                    parts.append(f"{int(value)} thr")
                elif "device" not in shown:  # an accelerator cell: its device says more than a missing count
                    parts.append(str(row.get("device", "")))
            elif column == "seed":
                parts.append(f"seed {value}")
            else:
                parts.append(str(value))
        labels.append(" ".join(parts))
    return labels


def pivot(frame: pd.DataFrame, index: str, values: pd.Series, order: Sequence[str]) -> pd.DataFrame:
    """Mean of ``values`` per (index, series label): averages over the axes not shown (threads, seeds, noise)."""
    data = pd.DataFrame({"x": frame[index].to_numpy(), "series": series_labels(frame).to_numpy(),
                         "y": values.to_numpy()}).dropna(subset=["y"])
    table = data.pivot_table(index="x", columns="series", values="y", aggfunc="mean")
    table = table[[label for label in order if label in table.columns]].sort_index()
    table.index.name = index
    return table


# -- columns -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column showing one metric of ``aebench.metrics.REGISTRY``: its heading, unit, format and stability flag
    are the registry's; a table may give it a label of its own and an aside said after the unit."""

    metric: str
    label: str | None = None
    aside: str = ""

    def __post_init__(self) -> None:
        if self.metric not in REGISTRY:  # a misspelt column fails at import, not as a silently empty column
            raise ValueError(f"report column {self.metric!r} is not a metric of the registry (aebench.metrics)")

    @property
    def heading(self) -> str:
        return REGISTRY[self.metric].heading(self.label or REGISTRY.label(self.metric), self.aside)

    @property
    def unstable(self) -> str | None:
        """The column of this figure's stability flag, if it has one."""
        return REGISTRY[self.metric].unstable

    def format(self, value: Any) -> str:
        return REGISTRY.format(self.metric, value)

    def half_width(self, value: Any) -> str:
        """A confidence half-width in the figure's format; it is never negative, so it carries no sign."""
        return self.format(value).removeprefix("+")


def marked(values: pd.Series, unstable: pd.Series, format: Formatter,
           contaminated: pd.Series | None = None) -> pd.Series:
    """Numbers formatted here (not by the Styler) so an unstable or contaminated one can carry its mark as visible
    text."""
    dirty = contaminated if contaminated is not None else pd.Series(False, index=values.index)
    return pd.Series([None if pd.isna(value) else format(value) + (f" {UNSTABLE_MARK}" if flag else "")
                      + (f" {CONTAMINATED_MARK}" if taken_beside else "")
                      for value, flag, taken_beside in zip(values, unstable, dirty)], index=values.index, dtype="object")


def with_ci(table: pd.DataFrame, column: Column) -> pd.Series:
    """'mean ± half-width' where the interval exists, the mean alone where it does not (one seed), None if missing."""
    means = numeric(table, column.metric)
    cis = numeric(table, column.metric + CI_SUFFIX)
    return pd.Series([None if pd.isna(mean) else column.format(mean) + ("" if pd.isna(ci) else
                                                                       f" ± {column.half_width(ci)}")
                      for mean, ci in zip(means, cis)], index=table.index, dtype="object")


def aggregated_display(table: pd.DataFrame, axes: Mapping[str, str],
                       columns: Sequence[Column]) -> tuple[pd.DataFrame, dict[str, Formatter]]:
    """A table aggregated over seeds (``aebench.aggregate``) for display: its axes (source column -> heading, formatted
    as that heading's axis), a 'seeds' column when any group has several, then each recorded figure with its CI."""
    display = pd.DataFrame(index=table.index)
    formats: dict[str, Formatter] = {}
    for source, heading in axes.items():
        display[heading] = table[source].astype("object").where(table[source].notna(), None)
        formats[heading] = AXIS_FORMATS.get(heading, str)
    if (table["n_seeds"] > 1).any():
        display["seeds"] = table["n_seeds"].astype(int)
        formats["seeds"] = integer
    for column in columns:
        if numeric(table, column.metric).notna().any():
            display[column.heading] = with_ci(table, column)
    return display, formats


# -- rendering ---------------------------------------------------------------------------------------------------------


def styled_table(display: pd.DataFrame, formats: Mapping[str, Formatter], table_id: str,
                 classes: pd.DataFrame | None = None, css_class: str = "data", header: bool = True) -> Markup:
    """A Styler table: every cell formatted (NaN as a dash), HTML-escaped, no index, stable ids for diffs."""
    formatter: dict[str, Callable[[Any], str]] = {column: formats.get(column, str) for column in display.columns}
    styler = display.style.format(formatter, na_rep=NA, escape="html").hide(axis="index")
    styler = styler.format_index(escape="html", axis="columns")  # headings may be variant names from plugins
    if not header:
        styler = styler.hide(axis="columns")
    styler = styler.set_uuid(table_id).set_table_attributes(f'class="{css_class}"')
    if classes is not None:
        styler = styler.set_td_classes(classes)
    # A wide table scrolls inside its own box (sticky header and first column, style.css): the page never does.
    return Markup('<div class="scroll">{}</div>').format(Markup(_EMPTY_STYLE.sub("", styler.to_html())))


def key_value_table(items: Mapping[str, Any], table_id: str) -> Markup:
    if not items:
        return Markup("<p>{}</p>").format(NA)
    display = pd.DataFrame({"key": [str(key) for key in items], "value": [text(value) for value in items.values()]})
    return styled_table(display, {}, table_id, css_class="kv", header=False)


def threads_text(threads: Any, device: Any = None) -> str:
    """"1 thread", "2 threads"; the ``device`` of an accelerator cell, which has no thread count."""
    if pd.isna(threads):
        return str(device)
    count = int(threads)
    return f"{count} thread" + ("" if count == 1 else "s")
