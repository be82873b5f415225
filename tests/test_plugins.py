"""Users' own autoencoders as plugins: AEBENCH_PLUGINS or the aebench.variants entry-point group, seen by the
matrix, `aebench models` and the workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aebench.models import registry
from aebench.store import open_store
from support import REPO, write_matrix

PLUGINS = Path(__file__).parent / "plugins"


def _zoo() -> dict[str, registry.VariantSpec]:
    return {name: spec for name, spec in registry.REGISTRY.items() if name not in registry.PLUGIN_VARIANTS}


def _aebench(*args: str, plugins: str = "tiny_plugin") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "AEBENCH_PLUGINS": plugins}
    return subprocess.run([sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)


def test_a_plugin_module_adds_its_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    zoo = _zoo()
    assert registry.load_plugins(zoo, {"AEBENCH_PLUGINS": "tiny_plugin"}) == ["tiny"]
    assert zoo["tiny"].defaults == {"latent_dim": 4} and "conv" in zoo
    assert registry.load_plugins(_zoo(), {"AEBENCH_PLUGINS": "tiny_plugin:aebench_variants, "}) == ["tiny"]


@pytest.mark.parametrize("plugins, message", [
    ("no_such_module", "plugin AEBENCH_PLUGINS 'no_such_module' cannot be loaded (ModuleNotFoundError"),
    ("tiny_plugin:missing", "plugin AEBENCH_PLUGINS 'tiny_plugin:missing' cannot be loaded (AttributeError"),
    ("tiny_plugin:NOT_A_SPEC", "gave int: allowed a VariantSpec, a list of them, or a function returning either"),
    ("tiny_plugin:build_tiny", "calling it failed (TypeError"),
    ("tiny_plugin,tiny_plugin", "defines variant 'tiny', which exists already: allowed a new name"),
    ("tiny_plugin:SLASHED", "defines variant 'tiny/v2': allowed a non-empty name without '/'"),
])
def test_a_bad_plugin_is_named_with_what_is_allowed(monkeypatch: pytest.MonkeyPatch, plugins: str,
                                                    message: str) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    with pytest.raises(registry.PluginError, match=message.replace("(", r"\(")):
        registry.load_plugins(_zoo(), {"AEBENCH_PLUGINS": plugins})


def test_entry_points_of_the_group_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    monkeypatch.syspath_prepend(str(PLUGINS))
    point = EntryPoint(name="tiny", value="tiny_plugin:aebench_variants", group=registry.PLUGIN_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: [point] if group == registry.PLUGIN_GROUP else [])
    assert registry.load_plugins(_zoo(), {}) == ["tiny"]


def test_a_matrix_may_name_a_plugin_variant_and_a_bad_plugin_is_exit_2(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path / "m.toml", variants=["tiny", "conv"])
    listed = _aebench("run", str(matrix), "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert "tiny/gaussian" in listed.stdout and "2 cells" in listed.stdout
    broken = _aebench("run", str(matrix), "--dry-run", plugins="no_such_module")
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1
    assert "plugin AEBENCH_PLUGINS 'no_such_module' cannot be loaded" in broken.stderr


@pytest.mark.slow
def test_models_lists_a_plugin_and_a_worker_runs_it(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    models = _aebench("models")
    assert models.returncode == 0, models.stderr
    assert any(line.split()[:3] == ["tiny", "(plugin)", "7,060"] for line in models.stdout.splitlines()), models.stdout
    matrix = write_matrix(tmp_path / "m.toml", variants=["tiny"], accuracy=False)
    store = tmp_path / "s.sqlite"
    done = _aebench("run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store), "--no-report")
    assert done.returncode == 0, done.stderr
    with open_store(store, create=False) as opened:
        (result,) = opened.results(opened.resolve_run(None))
    assert result.status == "ok" and result.info["parameters"] == 7060 and result.metrics["quality.psnr_db"] > 0
