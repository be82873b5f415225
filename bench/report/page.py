"""The page around the sections: the run being reported, the section list's entry type, and the jinja2 templates.

Templates live in ``aebench/report/templates`` and are autoescaped (``select_autoescape``): a string reaches the page
escaped unless it is ``Markup`` built by this package (a Styler table, a figure's ``<img>`` tag, a rendered template).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from aebench.report.table import text
from aebench.results import CellResult

ENVIRONMENT = Environment(
    loader=PackageLoader("aebench.report", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable fails the report instead of vanishing from it
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENVIRONMENT.filters["text"] = text


@dataclass(frozen=True)
class Run:
    """One stored run, read once: its record, its results, their flat frame and each cell's artifacts."""

    frame: pd.DataFrame
    record: Mapping[str, Any] = field(default_factory=dict)
    results: Sequence[CellResult] = ()
    artifacts: Mapping[int, Mapping[str, np.ndarray]] = field(default_factory=dict)
    links: Sequence[tuple[str, str]] = ()  # (label, relative href) of the pages beside it: history, ab, hardware

    @property
    def matrix(self) -> Mapping[str, Any]:
        """The run's own matrix settings (not today's defaults)."""
        return self.record.get("matrix") or {}


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor, its heading (also its nav entry) and, in a run's report, what renders its
    body from the run (pages of other kinds hand ``render_document`` their bodies ready-made)."""

    anchor: str
    title: str
    render: Callable[[Run], Markup] | None = None


def render(template: str, **context: Any) -> Markup:
    """A template under ``templates/``, rendered with autoescape (its closing newline left to the caller's layout)."""
    return Markup(ENVIRONMENT.get_template(template).render(**context).rstrip("\n"))


def render_page(title: str, header: Markup, sections: Sequence[Section], run: Run) -> str:
    """The run report: the header, then each section rendered from the run, with a nav linking them."""
    return render_document(title, header, [(section, section.render(run)) for section in sections if section.render])


def render_document(title: str, header: Markup, parts: Sequence[tuple[Section, Markup]]) -> str:
    """Any aebench page (a run's report, an A/B comparison, a history): the header, then each (section, body) in
    order, with a nav linking them, in the report's style. A body that is not ``Markup`` is escaped."""
    return ENVIRONMENT.get_template("page.html").render(title=title, header=header, sections=parts)
