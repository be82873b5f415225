"""Files that readers see whole or not at all: written beside the target, then renamed over it.

Reports, result files and cached models are read by other processes (a browser, the runner, another run sharing the
cache) while they may be being rewritten; ``os.replace`` is atomic on one file system, so a reader gets the old file or
the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aebench.errors import UserError


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed over ``path``, on error removed.

    The temporary name keeps every suffix of the target's (Keras insists on ``.keras`` and on ``.weights.h5``) and
    carries the pid, so two processes writing the same target never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(path.suffixes)
    partial = path.with_name(f".{path.name.removesuffix(suffixes)}.{os.getpid()}.partial{suffixes}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_json(path: str | Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=1))


def check_writable_file(option: str, path: Path) -> Path:
    """Bad input before anything runs: a path to write that is a folder, or in a folder that cannot be written."""
    if Path(path).is_dir():
        raise UserError(f"{option} {path} is a folder: allowed the path of a file to write")
    check_writable_folder(option, Path(path).parent)
    return Path(path)


def check_writable_folder(option: str, folder: Path, instead: str = "") -> None:
    """Bad input before anything runs: a folder that cannot be written, found by writing (permission bits say
    nothing to root). A folder that does not exist yet is judged by its nearest existing parent, and not made."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"{option} {folder} cannot be written ({error.strerror or error}): allowed a folder this "
                        f"user can write{f' (or {instead})' if instead else ''}") from None
