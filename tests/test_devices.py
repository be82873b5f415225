"""Device discovery and the skip path: faked device lists for the logic, then this machine for real (no GPU, no TPU)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from aebench import devices, runner
from aebench.cli import main
from aebench.config import Matrix
from aebench.store import open_store
from support import tiny_matrix_dict, write_matrix

NO_ACCELERATOR = {
    "tensorflow": {"backend": "tensorflow", "gpu": 0, "gpu_names": [], "tpu": 0, "tpu_names": [],
                   "gpu_reason": "this TensorFlow 2.21.0 build has no CUDA support (tensorflow-cpu)",
                   "tpu_reason": "TPUClusterResolver: Please provide a TPU Name to connect to."},
    "jax": {"backend": "jax", "gpu": 0, "gpu_names": [], "tpu": 0, "tpu_names": [],
            "gpu_reason": "jax.devices('gpu'): Unknown backend: 'gpu' requested",
            "tpu_reason": "jax.devices('tpu'): Backend 'tpu' failed to initialize"},
}


def fake_probe(answers: dict[str, dict]) -> devices.Probe:
    def probe(backends: Sequence[str]) -> dict[str, dict]:
        return {backend: answers[backend] for backend in backends}

    return probe


def _row(rows: list[devices.DeviceRow], device: str, backend: str) -> devices.DeviceRow:
    return next(row for row in rows if (row.device, row.backend) == (device, backend))


@pytest.mark.parametrize(("usable", "expected"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_thread_settings_double_up_to_the_usable_cores(usable: int, expected: list[int]) -> None:
    assert devices.thread_settings(usable) == expected


def test_no_accelerator_means_unavailable_with_the_backends_reasons() -> None:
    rows = devices.discover(("tensorflow", "jax", "torch"), probe=fake_probe(NO_ACCELERATOR),
                            problems={"torch": "backend torch is not installed (pip install 'aebench[torch]')"})
    cpu = rows[0]
    assert cpu.device == "cpu" and cpu.available and cpu.threads and "usable" in cpu.detail
    tf_tpu = _row(rows, "tpu", "tensorflow")
    assert not tf_tpu.available
    assert tf_tpu.status == "unavailable: TPUClusterResolver: Please provide a TPU Name to connect to."
    assert _row(rows, "gpu", "jax").status.startswith("unavailable: jax.devices('gpu')")
    assert _row(rows, "gpu", "torch").status == (
        "unavailable: backend torch is not installed (pip install 'aebench[torch]')")
    assert len(rows) == 1 + 2 * 3 and all(not row.available for row in rows[1:])

    text = devices.format_devices(rows)
    assert "unavailable: TPUClusterResolver" in text and "CPU threads to sweep: " in text


def test_a_faked_gpu_and_tpu_are_available_by_name() -> None:
    answers = {
        "jax": {**NO_ACCELERATOR["jax"], "gpu": 1, "gpu_names": ["cuda:0 (NVIDIA H100 80GB HBM3)"], "gpu_reason": None,
                "tpu": 4, "tpu_names": [f"TPU_{i}(process=0,(0,0,0,{i}))" for i in range(4)], "tpu_reason": None},
        "torch": {"backend": "torch", "gpu": 1, "gpu_names": ["cuda:0 NVIDIA H100 80GB HBM3"], "gpu_reason": None,
                  "tpu": 0, "tpu_names": [], "tpu_reason": "aebench runs torch on CPUs and CUDA GPUs only"},
    }
    rows = devices.discover(("jax", "torch"), probe=fake_probe(answers), problems={})
    assert _row(rows, "gpu", "jax").status == "available: cuda:0 (NVIDIA H100 80GB HBM3)"
    assert _row(rows, "gpu", "torch").available
    assert _row(rows, "tpu", "jax").available and "TPU_3" in _row(rows, "tpu", "jax").detail
    assert _row(rows, "tpu", "torch").status.startswith("unavailable: aebench runs torch")


def test_a_backend_whose_probe_failed_is_unavailable_everywhere() -> None:
    failed = {"jax": {"problem": "backend jax cannot start here: ImportError: x"}}
    rows = devices.discover(("jax",), probe=fake_probe(failed), problems={})
    assert [row.status for row in rows[1:]] == ["unavailable: backend jax cannot start here: ImportError: x"] * 2


def test_probe_answers_drive_the_skip_check() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], device=["cpu", "gpu", "tpu"],
                                               backend=["tensorflow", "jax"]))
    answers = {"tensorflow": NO_ACCELERATOR["tensorflow"],
               "jax": {**NO_ACCELERATOR["jax"], "gpu": 1, "gpu_names": ["cuda:0"], "gpu_reason": None}}
    found = devices.summarize(fake_probe(answers)(["tensorflow", "jax"]))
    check = runner.SkipCheck(2, found.counts, found.problems, found.reasons)
    reasons = {(cell.device, cell.backend): check.reason(cell) for cell in matrix.cells()}
    assert reasons[("cpu", "tensorflow")] is None and reasons[("cpu", "jax")] is None
    assert reasons[("gpu", "jax")] is None
    assert reasons[("gpu", "tensorflow")] == ("no GPU visible to tensorflow on this machine: "
                                              "this TensorFlow 2.21.0 build has no CUDA support (tensorflow-cpu)")
    assert reasons[("tpu", "tensorflow")].endswith("TPUClusterResolver: Please provide a TPU Name to connect to.")
    assert reasons[("tpu", "jax")].startswith("no TPU visible to jax")


@pytest.mark.slow
def test_aebench_devices_here_reports_no_gpu_and_no_tpu() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["devices"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("cpu") and "available: " in lines[1]
    accelerators = [line for line in lines if line.startswith(("gpu", "tpu"))]
    assert len(accelerators) == 6 and all("unavailable: " in line for line in accelerators)
    tf_tpu = next(line for line in accelerators if line.split()[:2] == ["tpu", "tensorflow"])
    assert "TPUClusterResolver" in tf_tpu  # the resolver was really asked, in a worker's child process


@pytest.mark.slow
def test_cpu_and_gpu_matrix_runs_the_cpu_and_skips_the_gpu(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "m.toml", variants=["conv"], device=["cpu", "gpu"], accuracy=False)
    store = tmp_path / "aebench.sqlite"
    status = main(["run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store),
                   "--reports-dir", str(tmp_path / "reports")])
    assert status == 0
    with open_store(store, create=False) as opened:
        run_id = opened.resolve_run(None)
        results = opened.results(run_id)
        summary = opened.run_record(run_id)["summary"]
    assert [(r.cell.device, r.status) for r in results] == [("cpu", "ok"), ("gpu", "skipped")]
    assert results[0].info["weights_device"].endswith("CPU:0")
    assert results[1].error.startswith("no GPU visible to tensorflow on this machine: ")
    assert summary["cells_ok"] == 1 and summary["cells_skipped"] == 1
    page = (tmp_path / "reports" / run_id / "index.html").read_text()
    devices_section = page[page.index('<section id="devices">'):]
    devices_section = devices_section[: devices_section.index("</section>")]
    assert ">ok<" in devices_section and "skipped: no GPU visible to tensorflow" in devices_section


def test_a_missing_backend_names_its_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("jax", "tensorflow") else real(name, *a))
    problems = devices.backend_problems(["jax", "tensorflow", "torch"])
    assert problems["jax"] == "backend jax is not installed (pip install 'aebench[jax]')"
    assert problems["tensorflow"] == "backend tensorflow is not installed"  # a dependency of aebench: no extra
    assert "torch" not in problems
