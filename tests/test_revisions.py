"""Git revisions for aebench ab: resolved, refused when unknown or when the tree is dirty, installed per commit."""

from __future__ import annotations

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


def test_outside_a_checkout_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not inside a git checkout"):
        revisions.repository_root(tmp_path)


def test_a_revision_is_installed_once_per_commit(clone: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = revisions.install(clone, "HEAD", cache)
    assert (first.site / "aebench" / "worker.py").is_file() and (first.site / "aebench" / "models").is_dir()
    assert (first.site / "aebench" / "matrices" / "quick.toml").is_file()
    marker = first.site / "aebench" / "marker"
    marker.write_text("kept")
    again = revisions.install(clone, "HEAD", cache)
    assert again.site == first.site and marker.read_text() == "kept"  # reused, not rebuilt
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
