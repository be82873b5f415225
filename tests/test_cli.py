"""The command line, end to end: real worker processes on tiny data, and bad input that must write nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aebench import cli
from aebench.cli import main
from aebench.metrics import REGISTRY
from aebench.store import open_store
from support import REPO, tiny_matrix_dict, write_matrix


def _aebench(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO, timeout=600)


@pytest.mark.slow
def test_run_two_cells_end_to_end(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "tiny.toml", accuracy=False)
    store = tmp_path / "out" / "aebench.sqlite"
    done = _aebench("run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store),
                    "--reports-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "[2/2] ok" in done.stderr and "harness overhead" in done.stderr

    with open_store(store, create=False) as opened:
        run_id = opened.resolve_run(None)
        results = opened.results(run_id)
        record = opened.run_record(run_id)
    assert [r.status for r in results] == ["ok", "ok"]
    assert record["status"] == "complete" and record["summary"]["cells_ok"] == 2
    for result in results:
        metrics = result.metrics
        assert [name for name in metrics if name not in REGISTRY] == []
        assert metrics["speed.train_ips"] > 0 and metrics["speed.infer_ips"] > 0
        assert 0 < metrics["speed.latency_b1_p50_ms"] <= metrics["speed.latency_b1_p90_ms"]
        # A p99 needs 100 calls: this tiny matrix's loop has fewer, so it states none rather than a maximum.
        assert (metrics["speed.latency_b1_p99_ms"] is None) == (metrics["speed.latency_b1_count"] < 100)
        assert metrics["quality.bce"] > 0 and metrics["quality.psnr_db"] > 0
        assert metrics["memory.peak_rss_mb"] > 50
        assert result.info["inference_path"] == "tf.function"
        assert result.info["cpus"] == "0" or len(result.info["cpus"].split(",")) == 1  # pinned to one CPU
        assert result.info["intra_op_threads"] == 1
        assert result.artifacts["grid_denoised"].shape == (15, 28, 28)
        assert result.info["machine_id"] == record["machine_id"]  # each cell names the machine that timed it
    assert results[1].info["parameters"] == 2561

    report = tmp_path / "out" / run_id / "index.html"
    assert report.is_file() and (tmp_path / "out" / "latest.html").read_text() == report.read_text()

    listing = _aebench("list", "--store", str(store))
    assert listing.returncode == 0 and run_id in listing.stdout and " 2 " in listing.stdout
    exported = _aebench("export", "--store", str(store), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 2
    for column in ("run_id", "variant", "noise", "threads", "device", "status", "quality.bce", "quality.mse",
                   "quality.psnr_db", "quality.noisy_psnr_db", "speed.train_ips", "speed.infer_ips",
                   "speed.latency_b1_p50_ms", "speed.latency_b1_p99_ms", "memory.peak_rss_mb"):
        assert column in rows[0], column
    rebuilt = _aebench("report", run_id[:10], "--store", str(store), "--reports-dir", str(tmp_path / "again"))
    assert rebuilt.returncode == 0 and Path(rebuilt.stdout.strip()).is_file()


@pytest.mark.parametrize(
    ("matrix_text", "args", "message"),
    [
        ("name = 'x'\nvariants = [conv\n", [], "malformed TOML"),
        (None, ["--set", 'variants=["resnet"]'], "variants = 'resnet' is invalid: allowed one of undercomplete"),
        (None, ["--set", "noise=[-0.5]"], "noise = -0.5 is invalid: allowed finite numbers >= 0"),
        (None, ["--set", "epoch=2"], "--set: unknown key 'epoch'"),
        (None, ["--data-dir", "/nonexistent/folder"], "mnist.npz not found in --data-dir folder '/nonexistent/folder'"),
        (None, ["--shard", "3/2"], "--shard '3/2' is invalid"),
        (None, ["--wait-idle", "0"], "--wait-idle 0 is invalid: allowed seconds above 0"),
        (None, ["--retry-failed"], "--retry-failed reruns the failed cells of a stored run: allowed only with"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, tiny_dataset_dir: Path, capsys: pytest.CaptureFixture,
                                                          matrix_text: str | None, args: list[str], message: str) -> None:
    matrix = tmp_path / "m.toml"
    if matrix_text is None:
        write_matrix(matrix)
    else:
        matrix.write_text(matrix_text)
    store = tmp_path / "s.sqlite"
    data_args = [] if "--data-dir" in args else ["--data-dir", str(tiny_dataset_dir)]
    status = main(["run", str(matrix), "--store", str(store), *data_args, *args])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not store.exists()  # nothing written: not even an empty store


def test_missing_data_everywhere_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("AEBENCH_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("aebench.data._keras_download", lambda name: (_ for _ in ()).throw(ConnectionError("offline")))
    matrix = write_matrix(tmp_path / "m.toml")
    status = main(["run", str(matrix), "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert status == 2 and "Set AEBENCH_DATA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_corrupt_data_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    status = main(["run", str(write_matrix(tmp_path / "m.toml")), "--data-dir", str(tmp_path), "--store", str(tmp_path / "s.sqlite")])
    assert status == 2 and "corrupt or truncated" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()


def test_dry_run_lists_cells(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "36 cells" in out and "conv/gaussian0.5/cpu2/tensorflow/float32/seed0" in out


def test_list_and_export_without_a_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "no result store" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()


def test_list_shows_a_running_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from aebench.config import Matrix

    with open_store(tmp_path / "s.sqlite") as store:  # no wall time yet: it used to crash `aebench list`
        store.begin_run(Matrix.from_dict(tiny_matrix_dict()), {"machine_id": "m1"}, [], run_id="20260104T000000-dddddd")
    assert main(["list", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "20260104T000000-dddddd" in capsys.readouterr().out


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_unwind_like_ctrl_c(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                               signum: int, status: int) -> None:
    unwound: list[bool] = []

    def command_stopped_midway(args: object) -> int:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # interrupted by the handler's exception
            return 0
        finally:
            unwound.append(True)  # a run records itself as interrupted here

    monkeypatch.setitem(cli.COMMANDS, "list", command_stopped_midway)
    before = signal.getsignal(signum)
    assert main(["list"]) == status
    assert unwound == [True] and f"aebench: stopped by {signal.Signals(signum).name}" in capsys.readouterr().err
    assert signal.getsignal(signum) is before  # the handlers are main()'s only while it runs


def test_a_resumed_runs_exit_status_counts_the_cells_of_earlier_invocations(
        tmp_path: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aebench.config import Matrix
    from aebench.results import CellResult

    matrix_path = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], noise=[0.1, 0.2])
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], noise=[0.1, 0.2]))
    store_path = tmp_path / "s.sqlite"
    with open_store(store_path) as store:  # the first invocation: its first cell failed, then it was interrupted
        run_id = store.begin_run(matrix, {"machine_id": "m1"}, ["aebench", "run"])
        store.add_result(run_id, CellResult(cell=matrix.cells()[0], status="failed", duration_s=1.0, exit_code=3,
                                            error="ValueError: boom"))
        store.finish_run(run_id, "interrupted", 5.0, {})

    def every_cell_ok(matrix: object, cells: list, *, on_result, **ignored: object) -> list:
        results = [CellResult(cell=cell, status="ok", duration_s=1.0, metrics={"quality.mse": 0.01}) for cell in cells]
        for result in results:
            on_result(result)
        return results

    monkeypatch.setattr("aebench.runner.run_cells", every_cell_ok)
    status = main(["run", str(matrix_path), "--resume", "--data-dir", str(tiny_dataset_dir), "--store",
                   str(store_path), "--no-report"])
    assert status == 1  # this invocation's one cell passed; the run's other one had failed
    with open_store(store_path, create=False) as store:
        assert [r.status for r in store.results(run_id)] == ["failed", "ok"]


def test_retry_failed_reruns_failed_cells_and_keeps_what_they_were(
        tmp_path: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from aebench.config import Matrix
    from aebench.results import CellResult

    matrix_path = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], noise=[0.1, 0.2, 0.3])
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], noise=[0.1, 0.2, 0.3]))
    store_path = tmp_path / "s.sqlite"
    first, second, third = matrix.cells()
    with open_store(store_path) as store:  # a complete run: one cell ok, one failed, one timed out
        run_id = store.begin_run(matrix, {"machine_id": "m1"}, ["aebench", "run"])
        store.add_result(run_id, CellResult(cell=first, status="ok", duration_s=1.0, metrics={"quality.mse": 0.01}))
        store.add_result(run_id, CellResult(cell=second, status="failed", duration_s=1.0, exit_code=3,
                                            error="ValueError: boom"))
        store.add_result(run_id, CellResult(cell=third, status="timeout", duration_s=9.0, exit_code=-9,
                                            error="killed after the 9 s timeout"))
        store.finish_run(run_id, "complete", 12.0, {})
    ran: list[str] = []

    def every_cell_ok(matrix: object, cells: list, *, on_result, **ignored: object) -> list:
        ran.extend(cell.key for cell in cells)
        for cell in cells:
            on_result(CellResult(cell=cell, status="ok", duration_s=1.0, metrics={"quality.mse": 0.02}))
        return []

    monkeypatch.setattr("aebench.runner.run_cells", every_cell_ok)
    common = [str(matrix_path), "--data-dir", str(tiny_dataset_dir), "--store", str(store_path), "--no-report"]
    assert main(["run", *common, "--retry-failed"]) == 2  # without --resume: bad input, nothing run
    assert "allowed only with --resume" in capsys.readouterr().err and not ran
    assert main(["run", *common, "--resume"]) == 2  # a complete run is not resumed without --retry-failed
    assert main(["run", *common, "--resume", "--retry-failed"]) == 0
    assert ran == [second.key, third.key] and "2 failed, again" in capsys.readouterr().err
    with open_store(store_path, create=False) as store:
        results = store.results(run_id)
        assert [r.status for r in results] == ["ok", "ok", "ok"] and store.run_record(run_id)["status"] == "complete"
    assert "earlier_attempt" not in results[0].info
    assert results[1].info["earlier_attempt"] == "failed (exit code 3): ValueError: boom"
    assert results[2].info["earlier_attempt"].startswith("timeout (exit code -9)")


def test_every_path_option_is_made_absolute_before_a_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Path] = {}

    def record(args: object) -> int:
        seen.update({name: value for name, value in vars(args).items() if isinstance(value, Path)})
        return 0

    monkeypatch.setitem(cli.COMMANDS, "run", record)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--data-dir", "data", "--store", "s.sqlite", "--reports-dir", "out"]) == 0
    assert seen == {"data_dir": tmp_path / "data", "store": tmp_path / "s.sqlite", "reports_dir": tmp_path / "out"}


def test_export_orders_figures_as_the_registry_does(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from aebench.config import Matrix
    from aebench.results import CellResult

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.1, 0.2, 0.3]))
    # The first cell failed (no figures) and the second lacks figures the third has: the frame's own order would put
    # quality.bce after the info columns and timing before quality.
    cells = [({}, {}), ({"timing.train_s": 2.0, "quality.psnr_db": 20.0}, {"cpus": "0"}),
             ({"diag.mse_digit1": 0.1, "robust.psnr_db@0.3": 18.0, "quality.bce": 0.1, "quality.psnr_db": 21.0},
              {"cpus": "1", "parameters": 2561})]
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = store.begin_run(matrix, {"machine_id": "m"}, ["aebench"])
        for cell, (metrics, info) in zip(matrix.cells(), cells):
            status, error = ("ok", "") if metrics else ("failed", "it broke")
            store.add_result(run_id, CellResult(cell=cell, status=status, duration_s=1.0, metrics=metrics, info=info,
                                                error=error))
    assert main(["export", "--store", str(tmp_path / "s.sqlite")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[:6] == ["run_id", "started_at", "git_commit", "git_dirty", "machine_id", "matrix_name"]
    assert header[6:] == ["cell", "key", "variant", "noise", "noise_type", "device", "threads", "backend", "precision",
                          "seed", "status", "exit_code", "error", "duration_s", "quality.bce", "quality.psnr_db",
                          "robust.psnr_db@0.3", "diag.mse_digit1", "timing.train_s", "info.cpus", "info.parameters"]
    assert main(["export", "--store", str(tmp_path / "s.sqlite"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and len(rows) == 3 and list(rows[2]) == header
    assert rows[2]["robust.psnr_db@0.3"] == 18.0 and rows[0]["quality.bce"] is None


def test_models_lists_the_zoo(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    conv = next(line for line in out.splitlines() if line.startswith("conv "))
    assert conv.split()[1] == "2,561"  # the parameters column (the description names the count too)
    assert all(name in out for name in ("undercomplete", "sparse_l1", "sparse_kl", "denoising", "contractive"))


def test_shapes_table_is_checked_against_keras_and_printed_alone() -> None:
    # A fresh process, so TensorFlow starts up in it, with no log level set by the caller.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "aebench.cli", "shapes"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no oneDNN, absl or cpu_feature_guard lines
    out = done.stdout
    assert "4/4" in out
    for size in ("28x28x16", "14x14x16", "26x26x16", "13x13x16"):
        assert size in out.replace(" ", "") or size.replace("x", ", ") in out, size


@pytest.mark.slow
def test_a_busy_loop_on_the_cells_cpu_contaminates_its_speed_figures(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    """The load checks see another process on the cell's pinned CPU; the figures are stored, flagged and explained."""
    from aebench import machine

    cpu = machine.usable_cpus()[0]  # the CPU a 1-thread cell pins
    busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, [{cpu}])\nwhile True: pass"])
    try:
        matrix = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], accuracy=False, predict_path=False)
        store = tmp_path / "aebench.sqlite"
        done = _aebench("run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store), "--no-report")
    finally:  # the test stops the load it started
        busy.kill()
        busy.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    with open_store(store, create=False) as opened:
        (result,) = opened.results(opened.resolve_run(None))
    assert result.metrics["speed.contaminated"] == 1.0, result.metrics
    assert result.metrics["speed.load_other_cpu_pct"] > 25  # two processes on one CPU: about half each
    assert "other processes used" in result.info["contaminated"]


@pytest.mark.slow
def test_resume_runs_only_the_missing_cells(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], noise=[0.1, 0.2])
    store = tmp_path / "aebench.sqlite"
    common = ["--data-dir", str(tiny_dataset_dir), "--store", str(store), "--no-report"]
    first = _aebench("run", str(matrix), "--shard", "1/2", *common)
    assert first.returncode == 0, first.stderr
    with open_store(store, create=False) as opened:  # as if the run had been interrupted after its first cell
        run_id = opened.resolve_run(None)
        opened.finish_run(run_id, "interrupted", opened.run_record(run_id)["wall_s"], {})
    changed = _aebench("run", str(matrix), "--resume", "--set", "epochs=3", *common)
    assert changed.returncode == 2 and "different matrix" in changed.stderr
    resumed = _aebench("run", str(matrix), "--resume", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {run_id}: 1 cells stored, 1 to run" in resumed.stderr
    with open_store(store, create=False) as opened:
        assert len(opened.runs_frame()) == 1 and opened.run_record(run_id)["status"] == "complete"
        assert [r.cell.noise for r in opened.results(run_id)] == [0.1, 0.2]
    again = _aebench("run", str(matrix), "--resume", *common)
    assert again.returncode == 2 and f"run {run_id} is complete" in again.stderr


# Tiny data says nothing about the timing gates, so the test sets them: the latency gate can never pass (a ratio of
# two times is > 0), the others always do. The exit status then depends on the gate logic alone.
CROSSCHECK_WITH_SET_GATES = (
    "import sys; from aebench import cli, crosscheck; "
    "crosscheck.GATES.update(latency_ratio_max=0.0, offline_ratio_min=0.0, train_speedup_min=0.0, loss_rel_diff_max=1.0); "
    "sys.exit(cli.main(sys.argv[1:]))"
)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--threads", "0"], "--threads 0 is invalid: allowed 1 to"),
    (["--threads", "4096"], "--threads 4096 is invalid: allowed 1 to"),
    (["--rounds", "0"], "--rounds 0 is invalid: allowed integers >= 1"),
    (["--data-dir", "/nonexistent/folder"], "mnist.npz not found in --data-dir folder"),
])
def test_crosscheck_bad_options_are_one_line_exit_2_before_any_timing(
        args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["crosscheck", *args, "--json", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out.json").exists()


def test_crosscheck_reports_both_paths_then_fails_on_a_gate(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CROSSCHECK_WITH_SET_GATES, "crosscheck", "--threads", "1", "--rounds", "1",
         "--latency-count", "5", "--offline-batch", "16", "--offline-count", "2", "--train-size", "256", "--epochs", "2",
         "--train-rounds", "1", "--data-dir", str(tiny_dataset_dir), "--json", str(tmp_path / "cc.json")],
        capture_output=True, text=True, cwd=REPO, timeout=600,  # no log level from the caller, as a user's shell
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 1, done.stderr  # reported first (stdout, --json), failed second
    rows = {re.split(r"\s{2,}", line)[0]: line for line in done.stdout.splitlines()}
    assert rows["batch-1 p50 latency (ms)"].endswith("<= 0.0 FAIL")
    assert rows["offline throughput (img/s)"].endswith(">= 0.0 ok")
    assert ">= 0.0 ok" in rows["training (img/s)"] and "<= 100% ok" in rows["held-out BCE, same order"]
    result = json.loads((tmp_path / "cc.json").read_text())
    assert result["latency_b1_p50_ms"]["hand_tf_function"] > 0 and result["latency_b1_p50_ms"]["harness"] > 0
    assert result["training"]["plain_fit_ips"] > 0 and result["training"]["harness_ips"] > 0
    assert result["training"]["step_ceiling_ips"] > 0
    # Trained in the same order from the same weights, the two paths see the same batches: the feed changes nothing.
    assert result["training"]["loss_rel_diff"] < 1e-4
    assert "batch-1 p50 latency (ms)" in done.stdout and "step ceiling" in done.stdout
    from aebench.quiet import CHATTER

    assert not [line for line in done.stderr.splitlines() if CHATTER.match(line)]  # TensorFlow's start-up chatter


@pytest.mark.slow
def test_each_model_trains_once_and_its_thread_counts_share_its_quality(tmp_path: Path,
                                                                        tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], threads=[1, 2])
    store = tmp_path / "aebench.sqlite"
    done = _aebench("run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(store),
                    "--reports-dir", str(tmp_path / "reports"))
    assert done.returncode == 0, done.stderr
    with open_store(store, create=False) as opened:
        run_id = opened.resolve_run(None)
        one, two = sorted(opened.results(run_id, with_artifacts=True), key=lambda r: r.cell.threads)
    assert one.info["trained_by"] == two.info["trained_by"] == two.cell.key  # the 2-thread cell trained it
    assert one.info["weights_sha256"] == two.info["weights_sha256"]  # the 1-thread cell loaded those weights
    shared = [name for name in two.metrics if REGISTRY[name].from_training]
    assert "quality.psnr_db" in shared and "quality.target_reached" in shared
    assert {name: one.metrics[name] for name in shared} == {name: two.metrics[name] for name in shared}
    assert one.metrics["speed.train_ips"] != two.metrics["speed.train_ips"]  # each times its own threads
    assert "timing.train_s" in two.metrics and "timing.train_s" not in one.metrics
    reached = two.metrics["quality.target_reached"]
    assert (two.metrics["speed.time_to_target_s"] is not None) == (reached == 1.0)
    assert len(two.artifacts["curve_images"]) == len(two.artifacts["curve_val_psnr_db"]) >= 2
    assert not (tmp_path / "checkpoints" / run_id).exists()  # a complete run's shared weights are cleaned up

    for kind in ("grid", "curve"):
        written = _aebench("figure", kind, "--store", str(store), "--out", str(tmp_path / "docs" / f"{kind}.png"))
        assert written.returncode == 0, written.stderr
        assert (tmp_path / "docs" / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The curve's numbers come with it, read from the same artifacts: the last evaluation's PSNR ends the line.
        last = f"{two.artifacts['curve_val_psnr_db'][-1]:.2f} dB"
        assert (f"validation PSNR after epoch 1" in written.stdout and last in written.stdout) == (kind == "curve")
    bad = _aebench("figure", "grid", "--store", str(store), "--out", str(tmp_path / "grid.svg"))
    assert bad.returncode == 2 and "allowed a path ending in .png" in bad.stderr and not (tmp_path / "grid.svg").exists()
    missing = _aebench("figure", "grid", "--store", str(store), "--variant", "conv", "--out", str(tmp_path / "g.png"))
    assert missing.returncode == 2 and "allowed undercomplete at noise 0.2" in missing.stderr


def test_a_run_writes_to_a_postgres_store_and_its_report_reads_it_back(
        tmp_path: Path, tiny_dataset_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """`run --store postgresql://...` (the sweep faked: the store is what is tested), then `report` and `list` on it."""
    from aebench.results import CellResult

    def every_cell_ok(matrix: object, cells: list, *, on_result, **ignored: object) -> list:
        results = [CellResult(cell=cell, status="ok", duration_s=1.0, metrics={"quality.psnr_db": 20.0 + cell.index})
                   for cell in cells]
        for result in results:
            on_result(result)
        return results

    monkeypatch.setattr("aebench.runner.run_cells", every_cell_ok)
    matrix = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], threads=[1, 2])
    reports = tmp_path / "reports"
    assert main(["run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", postgres_url,
                 "--reports-dir", str(reports)]) == 0
    with open_store(postgres_url, create=False) as store:
        run_id = store.resolve_run("latest")
        assert store.run_record(run_id)["status"] == "complete"
        assert [r.metrics["quality.psnr_db"] for r in store.results(run_id)] == [20.0, 21.0]
    assert (reports / run_id / "index.html").is_file()
    (reports / run_id / "index.html").unlink()
    assert main(["report", run_id, "--store", postgres_url, "--reports-dir", str(reports)]) == 0
    assert "21.00" in (reports / run_id / "index.html").read_text(encoding="utf-8")
    assert main(["list", "--store", postgres_url]) == 0
    assert run_id in capsys.readouterr().out
