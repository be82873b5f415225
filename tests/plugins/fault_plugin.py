"""Variants that fail on purpose, for the fault-injection suite (tests/test_faults.py), registered the way a user's
plugin is (AEBENCH_PLUGINS=fault_plugin): aebench has no hook for them.

Each builder misbehaves when a cell builds it, inside the forked cell process:
- ``segfault`` and ``sigkill`` die by that signal;
- ``memhog`` allocates 16 GiB at once (past any ``memory_limit_mb`` a test sets);
- ``hang`` never returns (the runner's timeout must kill it);
- ``sleepy`` waits until the file ``$AEBENCH_FAULT_GATE`` exists (so that a test can signal the runner while it
  runs), then builds a small working model: a resumed run completes it. (``AEBENCH_*`` variables reach workers.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from aebench.models.registry import VariantSpec
from tiny_plugin import build_tiny


def _working_model() -> object:
    return build_tiny(latent_dim=4)


def build_segfault() -> object:
    os.kill(os.getpid(), signal.SIGSEGV)
    return _working_model()


def build_sigkill() -> object:
    os.kill(os.getpid(), signal.SIGKILL)
    return _working_model()


def build_memhog() -> object:
    import numpy as np

    hog = np.ones(2**31)  # 16 GiB of float64: refused at once under the cell's address-space limit
    return hog.sum()


def build_hang() -> object:
    while True:
        time.sleep(1)


def build_sleepy() -> object:
    started = Path(os.environ["AEBENCH_FAULT_GATE"] + ".started")
    started.touch()  # the test waits for this, then acts
    while not Path(os.environ["AEBENCH_FAULT_GATE"]).exists():
        time.sleep(0.05)
    return _working_model()


aebench_variants = [
    VariantSpec(name=name, builder=f"fault_plugin:build_{name}", defaults={}, allowed={}, corrupts_input=False,
                description=f"fault injection: {name}")
    for name in ("segfault", "sigkill", "memhog", "hang", "sleepy")
]
