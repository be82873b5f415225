"""The CPU facts every result carries, read through py-cpuinfo and psutil (both faked here: no real machine needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from aebench import flops, machine, runner

FAKE_CPU = {"brand_raw": "Fake CPU 9000", "flags": ["avx", "avx2", "fma", "sse2"], "l2_cache_size": 1048576}


@pytest.fixture
def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """py-cpuinfo answering FAKE_CPU; yields the list that counts its calls."""
    calls: list[int] = []

    def get_cpu_info() -> dict:
        calls.append(1)
        return json.loads(json.dumps(FAKE_CPU))

    monkeypatch.delenv(machine.CPU_INFO_VARIABLE, raising=False)
    monkeypatch.setattr(machine.cpuinfo, "get_cpu_info", get_cpu_info)
    machine.cpu_info.cache_clear()
    yield calls
    machine.cpu_info.cache_clear()  # the next test reads the real CPU again


def test_cpu_model_and_flags_come_from_cpuinfo_read_once(fake_cpuinfo: list[int]) -> None:
    assert machine.cpu_model() == "Fake CPU 9000"
    assert machine.cpu_flags() == {"avx", "avx2", "fma", "sse2"}
    environment = machine.collect_environment()
    assert environment["cpu_model"] == "Fake CPU 9000" and environment["cpu_flags"] == "avx avx2 fma"
    assert len(fake_cpuinfo) == 1


def test_an_unknown_cpu_falls_back_to_the_platform(monkeypatch: pytest.MonkeyPatch, fake_cpuinfo: list[int]) -> None:
    def unknown() -> dict:
        raise Exception("py-cpuinfo currently only works on X86 and some ARM CPUs")  # what py-cpuinfo raises

    monkeypatch.setattr(machine.cpuinfo, "get_cpu_info", unknown)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "riscv64")
    assert machine.cpu_model() == "riscv64" and machine.cpu_flags() == set()


def test_workers_get_the_runners_reading(monkeypatch: pytest.MonkeyPatch, fake_cpuinfo: list[int]) -> None:
    env = runner.worker_environment("tensorflow", {"PATH": "/bin"})
    assert json.loads(env[machine.CPU_INFO_VARIABLE]) == {"brand_raw": "Fake CPU 9000", "flags": FAKE_CPU["flags"]}
    # In the worker: the handed-down reading, without asking py-cpuinfo again.
    monkeypatch.setenv(machine.CPU_INFO_VARIABLE, env[machine.CPU_INFO_VARIABLE])
    machine.cpu_info.cache_clear()
    assert machine.cpu_flags() == {"avx", "avx2", "fma", "sse2"} and machine.cpu_model() == "Fake CPU 9000"
    assert len(fake_cpuinfo) == 1


@pytest.mark.parametrize(
    ("frequency", "ghz"),
    [
        (SimpleNamespace(current=2596.1, min=0.0, max=0.0), 2.5961),  # no cpufreq: /proc/cpuinfo's clock
        (SimpleNamespace(current=1200.0, min=800.0, max=3500.0), 3.5),  # cpufreq: its maximum
        (None, None),  # psutil knows no clock on this platform
    ],
)
def test_cpu_clock_comes_from_psutil(monkeypatch: pytest.MonkeyPatch, frequency: object, ghz: float | None) -> None:
    monkeypatch.setattr(flops.psutil, "cpu_freq", lambda: frequency)
    assert flops.cpu_clock_ghz() == (pytest.approx(ghz) if ghz else None)


def test_no_clock_file_means_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise NotImplementedError("can't find current frequency file")

    monkeypatch.setattr(flops.psutil, "cpu_freq", missing)
    assert flops.cpu_clock_ghz() is None


def test_the_environment_carries_the_commit_and_its_date() -> None:
    import subprocess

    from support import REPO

    expected = subprocess.run(["git", "-C", str(REPO), "show", "-s", "--format=%H %cI", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.split()
    commit, _, date = machine.git_revision(REPO)
    assert [commit, date] == expected
    assert machine.git_revision(REPO.parent / "no-such-folder") == ("unknown", False, None)


def test_an_installed_copy_names_the_revision_it_was_built_from(tmp_path: Path, monkeypatch) -> None:
    """A wheel or --target copy runs outside git (or inside someone else's repository): the revision its build
    recorded wins; a damaged record counts as none."""
    package = tmp_path / "site" / "aebench"
    package.mkdir(parents=True)
    monkeypatch.setattr(machine, "PACKAGE_DIR", package)
    assert machine.git_revision() == ("unknown", False, None)  # tmp_path is no git checkout
    machine.write_revision(package, "0123abcd" * 5, dirty=True, commit_date="2026-11-28T06:21:26+00:00")
    assert machine.git_revision() == ("0123abcd" * 5, True, "2026-11-28T06:21:26+00:00")
    assert machine.collect_environment()["git_commit"] == "0123abcd" * 5
    assert machine.git_revision(tmp_path) == ("unknown", False, None)  # a folder named: git's view of it, no record
    (package.parent / "pyproject.toml").write_text("")  # the source checkout: a record left there is stale
    assert machine.git_revision() == ("unknown", False, None)
    (package.parent / "pyproject.toml").unlink()
    for damaged in ("{not json", '{"commit": "", "dirty": false}', '{"commit": "abc", "dirty": "no"}', "[]"):
        (package / machine.REVISION_FILE).write_text(damaged)
        assert machine.git_revision() == ("unknown", False, None), damaged


def test_a_tree_with_uncommitted_changes_is_dirty(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    assert machine.git_revision(tmp_path)[1] is False
    (tmp_path / "f.txt").write_text("b")
    assert machine.git_revision(tmp_path)[1] is True
