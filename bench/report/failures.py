"""Failed, timed-out and skipped cells: why each did not run, and the stderr tail of those that crashed."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from aebench.metrics import fixed, integer
from aebench.report.page import Run, render
from aebench.report.table import styled_table

WITH_STDERR = ("failed", "timeout")


def section(run: Run) -> Markup:
    bad = [result for result in run.results if result.status != "ok"]
    if not bad:
        return render("sections/failures.html", table=None, tails=[])
    display = pd.DataFrame({
        "cell": [result.cell.label for result in bad],
        "status": [result.status for result in bad],
        "exit code": [result.exit_code for result in bad],
        "error": [result.error for result in bad],
        "duration (s)": [result.duration_s for result in bad],
    }).astype({"exit code": "object"})
    classes = pd.DataFrame("", index=display.index, columns=display.columns)
    classes["status"] = ["status-" + result.status for result in bad]
    formats = {"exit code": integer, "duration (s)": fixed(1)}
    tails = [(result.cell.label, result.stderr_tail) for result in bad
             if result.status in WITH_STDERR and result.stderr_tail]
    return render("sections/failures.html",
                  table=styled_table(display, formats, "failures", classes, css_class="data failures"), tails=tails)
