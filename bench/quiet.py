"""Keep TensorFlow's start-up chatter off the command line: commands that build a Keras model print only their output.

``TF_CPP_MIN_LOG_LEVEL=2`` hides TensorFlow's INFO and WARNING records, but not those written before absl's logging
is initialised: TensorFlow 2.21 still prints absl's "before absl::InitializeLog()" notice, oneDNN's "custom
operations are on" and cpu_feature_guard's instruction list, once per shared library that logs them. Those records
only leave at the file-descriptor level, so ``quiet_tensorflow`` holds fd 2 back while its block runs and then passes
on every line but that chatter (errors, tracebacks and Python warnings still reach stderr, after the block).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "2"  # hides INFO and WARNING, keeps ERROR (the level the worker processes use too)
VERBOSE_LOG_LEVEL = "0"  # aebench -v: everything
CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "  # an absl INFO or WARNING record: what level 2 is meant to hide
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$"
)


def quiet_by_default(verbose: bool = False) -> None:
    """Ask TensorFlow for errors only, unless the caller's environment says otherwise, or for everything when
    ``verbose`` (aebench -v); call before it is imported."""
    if verbose:
        os.environ[LOG_LEVEL_VARIABLE] = VERBOSE_LOG_LEVEL
    os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL)


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Hold back stderr (fd 2) while the block runs, then pass on all of it but TensorFlow's INFO/WARNING chatter.

    Where the environment asks for a level below 2 (more logs), nothing is held back."""
    quiet_by_default()
    if os.environ[LOG_LEVEL_VARIABLE] < QUIET_LOG_LEVEL:
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not CHATTER.match(line)))
            sys.stderr.flush()
