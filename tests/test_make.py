"""The Makefile, README's target table and .ci/run name the same targets."""

from __future__ import annotations

import re
import subprocess

from support import REPO

MAKEFILE = (REPO / "Makefile").read_text()
DESCRIBED = re.findall(r"^([a-z-]+):.*## ", MAKEFILE, re.MULTILINE)


def test_every_phony_target_is_described_for_make_help() -> None:
    phony = {name for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE) for name in line.split()}
    assert phony == set(DESCRIBED)


def test_make_help_lists_every_target() -> None:
    listed = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()] == DESCRIBED


def test_readme_target_table_matches_the_makefile() -> None:
    table = (REPO / "README.md").read_text().split("| target | what it does |", 1)[1].split("\n\n", 1)[0]
    assert sorted(set(re.findall(r"`make ([a-z-]+)`", table))) == sorted(DESCRIBED)


def test_ci_runs_setup_then_the_whole_suite() -> None:
    called = re.findall(r"^make ([a-z-]+)", (REPO / ".ci" / "run").read_text(), re.MULTILINE)
    assert called == ["setup", "setup-torch", "setup-jax", "test"]
    assert set(called) <= set(DESCRIBED)


def test_the_install_adds_one_import_name_from_any_folder(tmp_path) -> None:
    """`pip install -e .` maps aebench from bench/ and aebench.models from models/ and nothing else: folders named
    bench, models or benchmarks, common in ML repositories, are not importable as top-level modules."""
    import os
    import sys

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def imports(module: str) -> bool:
        return subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path, env=env,
                              capture_output=True, timeout=60).returncode == 0

    assert imports("aebench") and imports("aebench.models") and imports("aebench.worker")
    assert not any(imports(name) for name in ("bench", "models", "benchmarks"))
