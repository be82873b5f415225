"""TensorFlow's start-up chatter is held back on the command line; everything else on stderr still gets through."""

from __future__ import annotations

import os

import pytest

from aebench.quiet import quiet_tensorflow

CHATTER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795770892.892803    9111 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "I0000 00:00:1795770892.944045    9111 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.\n"
    "W0000 00:00:1795770893.000001    9111 some_op.cc:12] a warning TF_CPP_MIN_LOG_LEVEL=2 is meant to hide\n"
)
NEWS = (
    "E0000 00:00:1795770893.100000    9111 cuda_dnn.cc:8] an error, which the user must see\n"
    "/work/x.py:3: UserWarning: a Python warning\n"
)


def test_chatter_is_held_back_and_the_rest_passed_on(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet_tensorflow():
        os.write(2, (CHATTER[:200]).encode())  # the C++ libraries write to fd 2 directly, in pieces
        os.write(2, (CHATTER[200:] + NEWS).encode())
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert capfd.readouterr().err == NEWS


def test_a_user_asking_for_logs_gets_them(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet_tensorflow():
        os.write(2, CHATTER.encode())
    assert capfd.readouterr().err == CHATTER


@pytest.mark.slow
def test_aebench_models_prints_no_tensorflow_log_line_unless_asked_with_v() -> None:
    import subprocess
    import sys

    from aebench.quiet import CHATTER as CHATTER_PATTERN

    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-m", "aebench.cli", "models"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0 and "conv" in quiet.stdout
    assert quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-m", "aebench.cli", "-v", "models"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert any(CHATTER_PATTERN.match(line) for line in loud.stderr.splitlines()), loud.stderr[-500:]


def test_the_commands_that_only_read_results_import_no_ml_framework() -> None:
    """Reports, comparisons, history and hardware tables run where no framework may be installed, start in a second,
    and print no framework chatter: none of what they import may pull one in."""
    import subprocess
    import sys

    probe = ("import sys, aebench.cli, aebench.report, aebench.ab, aebench.compare, aebench.history, aebench.hardware; "
             "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
