"""Git revisions for aebench ab: resolved, refused when unknown or when the tree is dirty, installed per commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aebench import revisions
from aebench.cli import main
from aebench.errors import UserError
from support import REPO

GIT = ["git", "-c", "user.name=aebench tests", "-c", "user.email=tests@aebench.invalid"]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A local clone of this checkout with one commit of its own on top, so HEAD~1 exists even in a shallow CI clone."""
    target = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(target)], check=True)
    (target / "NOTES.txt").write_text("a commit of the test's own\n")
    subprocess.run([*GIT, "-C", str(target), "add", "NOTES.txt"], check=True)
    subprocess.run([*GIT, "-C", str(target), "commit", "--quiet", "-m", "test commit"], check=True)
    return target


def test_resolve_names_the_commit(clone: Path) -> None:
    commit, subject, date = revisions.resolve(clone, "HEAD")
    assert len(commit) == 40 and subject == "test commit" and date[:2] == "20"
    assert revisions.resolve(clone, "HEAD~1")[0] != commit


def test_an_unknown_revision_is_bad_input(clone: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match="revision 'no-such-branch' is unknown"):
        revisions.resolve(clone, "no-such-branch")
    assert main(["ab", "no-such-branch", "HEAD", "--repo", str(clone)]) == 2
    err = capsys.readouterr().err
    assert "revision 'no-such-branch' is unknown" in err and len(err.strip().splitlines()) == 1


def test_a_dirty_tree_is_refused_unless_allowed(clone: Path, capsys: pytest.CaptureFixture) -> None:
    (clone / "README.md").write_text("changed, not committed\n")
    assert main(["ab", "HEAD~1", "HEAD", "--repo", str(clone)]) == 2
    err = capsys.readouterr().err
    assert "uncommitted changes" in err and "--allow-dirty" in err
    with pytest.raises(UserError, match="uncommitted changes"):
        revisions.check_clean(clone)
    # --allow-dirty goes past the check to the next one: here a data folder that does not exist (nothing is built).
    missing = clone / "no-data-here"
    assert main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--allow-dirty", "--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "uncommitted" not in err and "no-data-here" in err


def test_ab_refuses_a_busy_machine_before_building_anything(clone: Path, tiny_dataset_dir: Path, own_cache_dir: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from aebench import machinelock

    with machinelock.hold("run") as lock:  # another benchmark holds the machine
        lock.name_run("20261127T000000-aaaaaa")
        status = main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--data-dir", str(tiny_dataset_dir)])
    err = capsys.readouterr().err
    assert status == 2 and "run 20261127T000000-aaaaaa" in err and "--allow-concurrent" in err
    assert len(err.strip().splitlines()) == 1 and not (own_cache_dir / "revisions").exists()


# What the tiny dataset holds (600 training and 200 test images): a matrix that reads more is refused before anything.
TINY_SIZES = ("--set", "train_size=256", "--set", "test_size=128", "--set", "validation_size=64",
              "--set", "throughput.batch_size=64")


def test_ab_refuses_a_dataset_smaller_than_its_matrix_before_building_anything(
        clone: Path, tiny_dataset_dir: Path, own_cache_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--data-dir", str(tiny_dataset_dir)]) == 2
    err = capsys.readouterr().err
    assert "x_train holds 600 images; the matrix reads 21000" in err and len(err.strip().splitlines()) == 1
    assert not (own_cache_dir / "revisions").exists()


def test_ab_refuses_an_output_it_could_not_write_before_building_anything(clone: Path, tiny_dataset_dir: Path,
                                                                         own_cache_dir: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    a_file = clone / "NOTES.txt"  # a file where a folder should be
    for option in ("--reports-dir", "--json"):
        status = main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--data-dir", str(tiny_dataset_dir), *TINY_SIZES,
                       option, str(a_file / "out")])
        err = capsys.readouterr().err
        target = a_file / "out" if option == "--reports-dir" else a_file
        assert status == 2 and f"{option} {target} cannot be written" in err, err
    assert not (own_cache_dir / "revisions").exists()


def test_outside_a_checkout_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not inside a git checkout"):
        revisions.repository_root(tmp_path)


def test_a_revision_is_installed_once_per_commit(clone: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = revisions.install(clone, "HEAD", cache)
    assert (first.site / "aebench" / "worker.py").is_file() and (first.site / "aebench" / "models").is_dir()
    assert (first.site / "aebench" / "matrices" / "quick.toml").is_file()
    recorded = json.loads((first.site / "aebench" / "_revision.json").read_text())  # it runs outside git
    assert recorded == {"commit": first.commit, "dirty": False, "date": first.committed_at}
    marker = first.site / "aebench" / "marker"
    marker.write_text("kept")
    (first.site / "aebench" / "_revision.json").unlink()  # as in a copy built before revisions were recorded
    again = revisions.install(clone, "HEAD", cache)
    assert again.site == first.site and marker.read_text() == "kept"  # reused, not rebuilt
    assert json.loads((first.site / "aebench" / "_revision.json").read_text())["commit"] == first.commit
    listed = subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1  # the temporary worktree is gone


def test_a_revision_without_aebench_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "other"
    repo.mkdir()
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "0"\n'
                                         '[tool.setuptools]\npackages = []\n')
    subprocess.run([*GIT, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "--quiet", "-m", "not aebench"], check=True)
    with pytest.raises(UserError, match="installs no aebench package"):
        revisions.install(repo, "HEAD", tmp_path / "cache")


@pytest.mark.slow
def test_ab_end_to_end_on_real_workers(clone: Path, tmp_path: Path, tiny_dataset_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Two revisions installed from a clone, a quality pass and two speed rounds on real worker hosts."""
    import json

    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    status = main(["ab", "HEAD~1", "HEAD", "--repo", str(clone), "--data-dir", str(tiny_dataset_dir),
                   "--set", 'variants=["undercomplete"]', *TINY_SIZES,
                   "--set", "accuracy=false", "--set", "predict_path=false",
                   "--set", "latency.min_count=100", "--set", "latency.min_duration_s=0.0",  # a p99 needs 100
                   "--set", "throughput.min_count=2", "--set", "throughput.min_duration_s=0.0",
                   "--min-rounds", "2", "--max-rounds", "2", "--speed-train-s", "0.1", "--reports-dir", str(out),
                   "--json", str(tmp_path / "ab.json"), "--markdown", str(tmp_path / "ab.md")])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    document = json.loads((tmp_path / "ab.json").read_text())
    assert document["rounds"] == 2 and document["regressions"] == 0
    speed = [row for row in document["rows"] if row["kind"] == "speed"]
    quality = [row for row in document["rows"] if row["kind"] == "quality"]
    assert {row["metric"] for row in speed} == {"speed.train_ips", "speed.infer_ips", "speed.latency_b1_p50_ms",
                                                "speed.latency_b1_p99_ms"}, captured.out[-2000:]
    assert all(row["verdict"] == "unknown" for row in speed)  # 2 rounds cannot decide anything
    # The two commits differ only in a text file: the same seed gives bit-identical figures and weights.
    assert quality and all(row["difference"] == 0 and row["weights_identical"] for row in quality)
    assert "every quality figure is bit-identical" in captured.out
    assert "timing the trained weights" in captured.err  # the rounds loaded the quality pass's weights, not trained
    assert (out / "ab" / "latest.html").is_file() and "| cell" in (tmp_path / "ab.md").read_text()


def test_an_old_setuptools_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "65.5.0" if name == "setuptools" else real(name))
    with pytest.raises(UserError, match=r"setuptools, which is 65.5.0: allowed >= 77.0"):
        revisions.check_builder()
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "84.2.1")
    revisions.check_builder()


def test_the_cache_folder_is_absolute_whatever_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine lock lives there: a folder that moved with the working directory would hide one run from another."""
    monkeypatch.delenv("AEBENCH_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert revisions.user_cache_dir() == tmp_path / "xdg" / "aebench"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG specification says
    assert revisions.user_cache_dir() == tmp_path / "home" / ".cache" / "aebench"
    monkeypatch.setenv("AEBENCH_CACHE", "here")
    monkeypatch.chdir(tmp_path)
    assert revisions.user_cache_dir() == tmp_path / "here"
