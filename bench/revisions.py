"""Git revisions of aebench, each installed from its own checkout so that it runs with its own code.

``aebench ab`` compares two revisions of the project. Each is checked out into a temporary git worktree and installed
(``pip install --no-deps --target``) into a folder of its own under the user's cache, keyed by commit: a later
comparison of the same commit reuses it. A worker host started with ``PYTHONPATH`` on that folder imports that
revision's ``aebench`` (its worker, models and backends) and nothing of the driver's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aebench.errors import UserError
from aebench.machine import REVISION_FILE, write_revision


def user_cache_dir() -> Path:
    """``$AEBENCH_CACHE``, else ``$XDG_CACHE_HOME/aebench``, else ``~/.cache/aebench``. A relative XDG_CACHE_HOME
    is ignored, as the XDG specification says: the machine lock lives here, and one that moved with the working
    directory would let two runs on one machine miss each other."""
    explicit = os.environ.get("AEBENCH_CACHE")
    if explicit:
        return Path(explicit).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aebench"


@dataclass(frozen=True)
class Revision:
    """A commit as the user named it, with the folder its aebench is installed in."""

    ref: str
    commit: str
    subject: str
    committed_at: str  # ISO 8601, the committer date
    site: Path

    @property
    def short(self) -> str:
        return self.commit[:10]


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise UserError(f"git {' '.join(args[:2])} in {str(repo)!r} did not answer within 120 s") from None
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["git", *args], done.stdout, done.stderr)
    return done.stdout.strip()


def repository_root(start: Path | None = None) -> Path:
    """The git checkout holding ``start`` (default: the working directory); a UserError outside one."""
    where = Path(start or Path.cwd())
    try:
        return Path(_git(where, "rev-parse", "--show-toplevel"))
    except (subprocess.CalledProcessError, OSError):
        raise UserError(f"{str(where)!r} is not inside a git checkout of aebench: run 'aebench ab' from one "
                        "or pass --repo DIR") from None


def check_clean(repo: Path) -> None:
    """Refuse a working tree with uncommitted changes to tracked files: ab runs commits, so such changes would be
    silently left out of both sides."""
    changed = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if changed:
        first = changed.splitlines()[0].strip()
        raise UserError(f"the working tree {str(repo)!r} has uncommitted changes ({first}, ...): ab compares commits, "
                        "so commit or stash them first, or pass --allow-dirty to compare the commits without them")


def resolve(repo: Path, ref: str) -> tuple[str, str, str]:
    """(full commit, subject, committer date) of ``ref``; a UserError naming it when git does not know it."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        subject, date = _git(repo, "show", "-s", "--format=%s%x00%cI", commit).split("\x00")
    except subprocess.CalledProcessError:
        raise UserError(f"revision {ref!r} is unknown in {str(repo)!r}: allowed a commit, branch or tag "
                        "that 'git rev-parse' knows (for example HEAD~1)") from None
    return commit, subject, date


def install(repo: Path, ref: str, cache: Path | None = None, python: str = sys.executable) -> Revision:
    """The revision installed in ``cache/revisions/<commit>`` (built from a temporary worktree the first time)."""
    commit, subject, date = resolve(repo, ref)
    root = (cache or user_cache_dir()) / "revisions"
    site = root / commit
    if not (site / "aebench" / "worker.py").is_file():
        _build(repo, commit, site, python)
    # ab knows each side's commit itself; the record is for whoever runs this copy directly (PYTHONPATH=site aebench
    # run ...): its results then name this commit, though the copy sits outside any git checkout. Also written
    # into copies built before records were.
    if not (site / "aebench" / REVISION_FILE).is_file():
        write_revision(site / "aebench", commit, dirty=False, commit_date=date)
    return Revision(ref=ref, commit=commit, subject=subject, committed_at=date, site=site)


MIN_SETUPTOOLS = (77, 0)  # pyproject.toml's SPDX `license = "MIT"` needs it


def check_builder() -> None:
    """Revisions are built offline with this environment's setuptools: refuse one too old to read pyproject.toml."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) if version != "none" else ()
    if parts < MIN_SETUPTOOLS:
        raise UserError(f"aebench ab builds each revision with this environment's setuptools, which is {version}: "
                        f"allowed >= {'.'.join(map(str, MIN_SETUPTOOLS))} (pip install -U 'setuptools>=77')")


def _build(repo: Path, commit: str, site: Path, python: str) -> None:
    check_builder()
    site.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"aebench-{commit[:10]}-", dir=site.parent) as scratch_text:
        scratch = Path(scratch_text)
        checkout, target = scratch / "src", scratch / "site"
        try:
            _git(repo, "worktree", "add", "--detach", "--force", str(checkout), commit)
        except subprocess.CalledProcessError as error:
            why = (error.stderr or error.stdout or "").strip().splitlines()
            raise UserError(f"revision {commit[:10]} cannot be checked out: git worktree add: "
                            f"{(why or ['failed'])[-1][:300]}") from None
        try:
            # The driver's own setuptools builds it (no network, no isolation); --no-deps: both sides share the
            # driver's third-party packages, so only aebench's own code differs between them.
            try:
                done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                       "--no-build-isolation", "--no-compile", "--disable-pip-version-check",
                                       "--target", str(target), str(checkout)], capture_output=True, text=True,
                                      timeout=600)
            except subprocess.TimeoutExpired:
                raise UserError(f"revision {commit[:10]} did not install within 600 s") from None
            if done.returncode != 0:
                lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
                # pip ends with generic hints; the line naming the failure says more
                telling = [line for line in lines if "error" in line.lower() and "subprocess-exited" not in line]
                raise UserError(f"revision {commit[:10]} does not install: "
                                f"{(telling or lines or ['no output from pip'])[0][:300]}")
            if not (target / "aebench" / "worker.py").is_file():
                raise UserError(f"revision {commit[:10]} installs no aebench package (it predates the import name "
                                "aebench): choose revisions from the one that introduced it on")
        finally:
            # Best effort: the temporary folder goes anyway, and a failure here must not hide the one on its way.
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(checkout)],
                           capture_output=True, timeout=120, check=False)
        try:
            os.replace(target, site)  # atomic: another ab run building the same commit sees all of it or nothing
        except OSError:
            if not (site / "aebench" / "worker.py").is_file():
                raise
            shutil.rmtree(target, ignore_errors=True)  # the other run won the race; its copy is as good
