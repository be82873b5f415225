"""The registries as tables: `aebench metrics` and the README's generated blocks (a golden check that never writes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aebench import docs
from aebench.cli import main
from aebench.errors import UserError
from aebench.metrics import REGISTRY
from support import REPO

README = REPO / "README.md"


def test_the_readme_tables_are_what_the_registries_generate() -> None:
    text = README.read_text(encoding="utf-8")
    assert docs.fill_blocks(text) == text, "the README's generated tables are stale: run `make readme`"


def test_aebench_metrics_prints_every_metric(capsys: pytest.CaptureFixture) -> None:
    assert main(["metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "unit", "better", "margin", "group", "description"]
    assert [line.split()[0] for line in lines[1:]] == [metric.name for metric in REGISTRY]
    assert lines[1].split() == ["quality.bce", "lower", "0.001", "quality", "binary", "cross-entropy", "of", "the",
                                "output", "against", "the", "clean", "test", "images"]


def test_the_markdown_table_is_the_readme_block(capsys: pytest.CaptureFixture) -> None:
    assert main(["metrics", "--format", "markdown"]) == 0
    table = capsys.readouterr().out
    assert f"<!-- metrics:begin -->\n{table}<!-- metrics:end -->" in README.read_text(encoding="utf-8")
    assert "| `robust.psnr_db@{}` " in table and "with \\|h\\| < 0.01 " in table  # pipes in text are escaped


def test_the_zoo_table() -> None:
    zoo = docs.zoo_frame().set_index("variant")["hyperparameters (default)"]
    assert zoo["undercomplete"] == "latent_dim (32), hidden_units (128)"
    assert zoo["sparse_kl"] == "latent_dim (32), hidden_units (128), rho (0.05), beta (0.01), center_input (1)"
    assert zoo["denoising"].endswith("noise_factor (the cell's noise, unless set)")  # the worker sets it
    assert zoo["conv"] == "none"


def test_markdown_escapes_pipes_and_marks_code() -> None:
    table = docs.to_markdown(pd.DataFrame({"name": ["a_b"], "text": ["x || y"]}), code_columns=["name"])
    assert table.splitlines()[2].split() == ["|", "`a_b`", "|", "x", r"\|\|", "y", "|"]


def test_blocks_are_rewritten_in_place_and_markers_are_required(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- zoo:begin -->\nstale table\n<!-- zoo:end -->\nmiddle\n<!-- metrics:begin -->\n"
                      "<!-- metrics:end -->\nend\n", encoding="utf-8")
    assert docs.main([str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- zoo:begin -->\n| variant ") and text.endswith("<!-- metrics:end -->\nend\n")
    assert "stale table" not in text and docs.fill_blocks(text) == text
    assert docs.main([str(readme)]) == 0 and "up to date" in capsys.readouterr().out
    with pytest.raises(UserError, match="exactly one '<!-- metrics:begin -->'"):
        docs.fill_blocks("<!-- zoo:begin -->\n<!-- zoo:end -->\n")
