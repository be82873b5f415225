"""The worker: runs one cell in a process of its own.

A worker host is started once per Keras backend (``python -m aebench.worker serve``). It imports the framework once,
then forks a fresh child for every cell, so each cell is isolated (its own threads, affinity, memory and crash) without
paying the framework's multi-second import per cell. The host never runs a framework op itself: thread settings only
take effect before the backend's first op, and the child must be the first to run one.

Protocol (JSON lines): the runner writes ``{"kind": "cell" | "probe" | "classifier", ...}`` to the host's stdin; the host answers
``{"event": "started", "pid": N}`` once the child runs and ``{"event": "exited", "exit_code": N}`` when it ends.
The child writes its result JSON and artifacts to the paths in the task and its stdout/stderr to the log path.
The runner, not the host, enforces the timeout: it kills the child by pid.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from aebench import atomic, flops, machine
from aebench.config import Cell, Matrix
from aebench.data import Dataset, add_noise, load_dataset, subset
from aebench.quality import reconstruction_metrics, to_uint8
from aebench.speed import latency_metrics, run_timed_loop, throughput_metrics

GRID_IMAGES = 15  # the paper's figure shows 15 noisy test digits above their denoised outputs


def pin_cpus(threads: int | None) -> list[int]:
    """Pin this process to the first ``threads`` CPUs it may use; returns the CPUs it runs on."""
    allowed = machine.usable_cpus()
    if threads is not None:
        if threads > len(allowed):
            raise RuntimeError(f"threads={threads} but only {len(allowed)} CPUs are usable")
        os.sched_setaffinity(0, allowed[:threads])
        # NumPy's BLAS (and OpenMP, if loaded) started one thread per core at import, in the host: left alone they
        # would spin against each other on the pinned cores (12 s instead of 2 s for the quality metrics on 1 core).
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    return machine.usable_cpus()


def _accuracy_and_diagnostics(matrix: Matrix, cell: Cell, dataset: Dataset, model: Any, forward: Any,
                              x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, noisy_test: np.ndarray,
                              output: np.ndarray, y_test: np.ndarray, cache_dir: str | None) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Accuracy a downstream user would feel, latent diagnostics and the robustness sweep (aebench.accuracy).

    Returns (metrics, info, artifacts). Loading the reference classifier (the runner has it trained into the cache
    before the sweep) is reported as ``timing.classifier_s``, apart from every measured phase.
    """
    from aebench import models
    from aebench import accuracy

    metrics: dict[str, float] = {}
    info: dict[str, Any] = {}
    batch_size = matrix.throughput.batch_size
    encoder = models.encoder_of(model)
    if matrix.accuracy:
        reference = accuracy.reference_classifier(dataset, cell.seed, Path(cache_dir) if cache_dir else None)
        metrics["timing.classifier_s"] = reference.seconds
        info["classifier_cached"] = reference.cached
        info["classifier_test_acc"] = reference.test_accuracy
        scores = {name: accuracy.classify_accuracy(reference.model, images, y_test, batch_size)
                  for name, images in (("clean", x_test), ("noisy", noisy_test), ("denoised", output))}
        metrics.update({f"quality.acc_{name}": value for name, value in scores.items()})
        recovered = accuracy.recovered_fraction(scores["clean"], scores["noisy"], scores["denoised"])
        if recovered is not None:
            metrics["quality.acc_recovered"] = recovered
        # The probe reads codes of clean images: what the code knows about the digit, apart from the noise.
        metrics["quality.probe_acc"] = accuracy.latent_probe_accuracy(
            encoder, x_train, y_train, x_test, y_test, cell.seed, batch_size=batch_size)
    # Activation statistics on the codes of the cell's own (noisy) test inputs: the ones behind its outputs.
    metrics.update(accuracy.latent_activation_stats(accuracy.predict_batches(encoder, noisy_test, batch_size)))
    metrics.update(accuracy.per_digit_mse(x_test, output, y_test))
    if cell.variant == "contractive":
        jacobian, why_not = accuracy.contractive_jacobian_check(model, noisy_test[: accuracy.JACOBIAN_SAMPLE])
        metrics.update(jacobian)
        if why_not:
            info["jacobian_check"] = why_not
    levels = matrix.eval_noise or accuracy.DEFAULT_ROBUST_LEVELS
    # Seed + 1, as for the cell's test noise: the cell's own level then reproduces its quality.psnr_db.
    robust, artifacts = accuracy.robustness_curve(lambda images: forward.predict(images, batch_size), x_test,
                                                  cell.noise_type, levels, seed=cell.seed + 1,
                                                  known={cell.noise: (noisy_test, output)})
    metrics.update(robust)
    return metrics, info, artifacts


def execute_cell(matrix: Matrix, cell: Cell, dataset: Dataset, checkpoint_dir: str | None = None,
                 cache_dir: str | None = None) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Train and measure one cell. Returns (metrics, info, artifacts)."""
    phase: dict[str, float] = {}
    t_setup = time.perf_counter()
    if cell.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU cell must not drift onto a GPU the machine happens to have
    cpus = pin_cpus(cell.threads)

    import keras

    from aebench import models
    from aebench import backends

    info: dict[str, Any] = {"cpus": ",".join(map(str, cpus)), "pid": os.getpid()}
    info.update(backends.configure_threads(cell.threads))
    backends.set_precision(cell.precision)
    backends.place(cell.device)
    info["backend"] = backends.backend_name()
    info["backend_device"] = backends.device_description(cell.device)
    info["keras"] = keras.__version__

    # Data: the same test images for every cell, fresh noise draws for train (seed) and test (seed + 1).
    x_train, y_train = subset(dataset.x_train, dataset.y_train, matrix.train_size, cell.seed)
    x_test, y_test = dataset.x_test[: matrix.test_size], dataset.y_test[: matrix.test_size]
    noisy_test = add_noise(x_test, cell.noise_type, cell.noise, seed=cell.seed + 1)
    spec = models.REGISTRY[cell.variant]
    hparams = dict(cell.hparams)
    if spec.corrupts_input:
        # The denoising AE corrupts its own clean input afresh each step, at the cell's noise level.
        hparams["noise_factor"] = cell.noise
        train_inputs = x_train
    else:
        train_inputs = add_noise(x_train, cell.noise_type, cell.noise, seed=cell.seed)
    phase["setup_s"] = time.perf_counter() - t_setup

    t_build = time.perf_counter()
    model = models.build_autoencoder(cell.variant, hparams, seed=cell.seed)
    backends.compile_autoencoder(model, matrix.learning_rate, matrix.jit_compile)
    build_s = time.perf_counter() - t_build
    info["jit_compile"] = bool(model.jit_compile)
    info["parameters"] = int(model.count_params())
    info["weights_device"] = backends.weights_device(model)

    # Training: every epoch timed; the first (tracing, compilation) is reported apart.
    final_loss, epochs, info["train_input"] = backends.fit_timed(
        model, train_inputs, x_train, batch_size=matrix.batch_size, epochs=matrix.epochs, seed=cell.seed,
        checkpoint_dir=checkpoint_dir,
    )
    metrics = epochs.metrics(len(x_train))
    metrics["quality.train_loss"] = final_loss
    phase["train_s"] = metrics["speed.train_s"]

    # Inference through the compiled call: first call (trace + compile) timed apart as the cold start.
    t_speed = time.perf_counter()
    forward = backends.compiled_forward(model)
    info["inference_path"] = forward.path
    one = forward.prepare(noisy_test[:1])
    t_first = time.perf_counter()
    forward(one)
    metrics["speed.first_call_s"] = time.perf_counter() - t_first
    metrics["speed.cold_start_s"] = build_s + metrics["speed.first_call_s"]
    lat = matrix.latency
    single = run_timed_loop(lambda: forward(one), warmup=lat.warmup, min_count=lat.min_count,
                            min_duration_s=lat.min_duration_s, max_duration_s=lat.max_duration_s)
    metrics.update(latency_metrics(single, "speed.latency_b1"))
    tput = matrix.throughput
    batch = forward.prepare(noisy_test[: tput.batch_size])
    forward(batch)  # a new input shape traces once more; keep that out of the loop
    offline = run_timed_loop(lambda: forward(batch), warmup=tput.warmup, min_count=tput.min_count,
                             min_duration_s=tput.min_duration_s, max_duration_s=tput.max_duration_s)
    metrics.update(throughput_metrics(offline, tput.batch_size, "speed.infer"))
    metrics["speed.infer_batch_size"] = float(tput.batch_size)
    if matrix.predict_path:
        # The framework path, labelled as such: Keras predict() on one image, with all its per-call machinery.
        sample = noisy_test[:1]
        model.predict(sample, verbose=0)
        # Few calls: each costs tens of milliseconds, and only its order of magnitude is news.
        framework = run_timed_loop(lambda: model.predict(sample, verbose=0), warmup=2, min_count=10,
                                   min_duration_s=0.25, max_duration_s=lat.max_duration_s)
        metrics.update({k: v for k, v in latency_metrics(framework, "speed.predict_b1").items() if "_p" in k or "count" in k})
    phase["speed_s"] = time.perf_counter() - t_speed
    if cell.device == "cpu":
        metrics.update(flops.compute_metrics(flops.model_flops(model), metrics, cell.threads,
                                             machine.cpu_flags(), flops.cpu_clock_ghz()))
    else:
        metrics["compute.flops_per_image"] = float(flops.model_flops(model))

    # Quality on the test set, scored against the clean images.
    t_eval = time.perf_counter()
    output = forward.predict(noisy_test, tput.batch_size)
    metrics.update(reconstruction_metrics(x_test, noisy_test, output))
    phase["eval_s"] = time.perf_counter() - t_eval
    t_accuracy = time.perf_counter()
    extra_metrics, extra_info, extra_artifacts = _accuracy_and_diagnostics(
        matrix, cell, dataset, model, forward, x_train, y_train, x_test, noisy_test, output, y_test, cache_dir)
    metrics.update(extra_metrics)
    info.update(extra_info)
    # Loading the reference classifier (trained before the sweep) is reported on its own, as timing.classifier_s.
    phase["accuracy_s"] = time.perf_counter() - t_accuracy - extra_metrics.get("timing.classifier_s", 0.0)

    metrics["memory.peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics["speed.batch_size"] = float(matrix.batch_size)
    metrics.update({f"timing.{k}": v for k, v in phase.items()})
    artifacts = {
        "grid_clean": to_uint8(x_test[:GRID_IMAGES]),
        "grid_noisy": to_uint8(noisy_test[:GRID_IMAGES]),
        "grid_denoised": to_uint8(output[:GRID_IMAGES]),
        "grid_labels": y_test[:GRID_IMAGES].astype(np.int64),
        "latency_b1_s": single.seconds.astype(np.float64),
        **extra_artifacts,
    }
    return metrics, info, artifacts


def probe_devices() -> dict[str, Any]:
    """Accelerators the current backend sees (runs in a child: the host must not initialise the backend).

    Returns ``{"backend", "version", "gpu": count, "gpu_names": [...], "gpu_reason": why none or None, and the same
    for "tpu"}``; aebench.devices reads it.
    """
    import keras

    from aebench import backends

    name = backends.backend_name()
    found: dict[str, Any] = {"backend": name, "keras": keras.__version__}
    try:
        found["version"] = __import__(name).__version__
    except (ImportError, AttributeError):
        found["version"] = "unknown"
    for kind in ("gpu", "tpu"):
        try:
            names, reason = backends.find_accelerators(kind)
        except Exception as error:  # noqa: BLE001 - a broken driver is a reason, not a crash
            names, reason = [], f"{type(error).__name__}: {error}"[:300]
        found[kind], found[f"{kind}_names"], found[f"{kind}_reason"] = len(names), names, reason
    return found


def prepare_classifier(dataset: Dataset, seed: int, cache_dir: Path) -> dict[str, Any]:
    """Train (or find) the seed's reference classifier in the cache, on every CPU this process may use."""
    from aebench import accuracy

    reference = accuracy.reference_classifier(dataset, seed, cache_dir)
    return {"seed": seed, "seconds": reference.seconds, "cached": reference.cached,
            "test_accuracy": reference.test_accuracy, "path": str(reference.path)}


def _child(task: dict[str, Any], datasets: dict[str, Dataset]) -> None:
    """Runs in the forked child; never returns."""
    exit_code = 1
    try:
        log = os.open(task["log_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if task["kind"] == "probe":
            atomic.write_json(task["result_path"], probe_devices())
        elif task["kind"] == "classifier":
            atomic.write_json(task["result_path"], prepare_classifier(
                datasets[task["data_path"]], task["seed"], Path(task["cache_dir"])))
        else:
            matrix = Matrix.from_dict(task["matrix"])
            cell = Cell.from_dict(task["cell"])
            metrics, info, artifacts = execute_cell(matrix, cell, datasets[task["data_path"]], task.get("checkpoint_dir"),
                                                   task.get("cache_dir"))
            np.savez(task["artifacts_path"], **artifacts)
            atomic.write_json(task["result_path"], {"metrics": metrics, "info": info})
        exit_code = 0
    except BaseException:  # noqa: BLE001 - everything ends in the log and a non-zero exit status
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def serve(commands: Any = None, events: Any = None) -> None:
    """The host loop: preload the framework, then fork one child per task."""
    commands = commands or sys.stdin
    events = events or sys.stdout
    # Keras on torch asks torch.cuda.is_available() at import. Answered through the CUDA runtime, that initialises
    # CUDA in this host and every forked cell then fails to use the GPU; answered through NVML, it does not.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import keras  # noqa: F401 - the preload that every forked cell inherits

    from aebench import models  # noqa: F401
    from aebench import backends  # noqa: F401

    datasets: dict[str, Dataset] = {}

    def send(payload: dict[str, Any]) -> None:
        events.write(json.dumps(payload) + "\n")
        events.flush()

    send({"event": "ready", "pid": os.getpid()})
    for line in commands:
        if not line.strip():
            continue
        task = json.loads(line)
        data_path = task.get("data_path")
        if data_path and data_path not in datasets:
            # Loaded before the fork so every child shares the arrays copy-on-write.
            datasets[data_path] = load_dataset(task["dataset"], Path(data_path))
        pid = os.fork()
        if pid == 0:
            _child(task, datasets)
        send({"event": "started", "pid": pid})
        _, status = os.waitpid(pid, 0)
        send({"event": "exited", "exit_code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python -m aebench.worker serve   (started by the aebench runner, not by hand)")
    serve()
