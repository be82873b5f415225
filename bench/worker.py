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

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aebench import atomic, backends, flops, load, machine, scenarios, spike, timetoquality
from aebench.backends import Forward
from aebench.config import Cell, Matrix
from aebench.data import Dataset, add_noise, load_dataset, training_split
from aebench.quality import psnr_db, reconstruction_metrics, to_uint8

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

GRID_IMAGES = 15  # the paper's figure shows 15 noisy test digits above their denoised outputs


def pin_cpus(threads: int | None) -> list[int]:
    """Pin this process to the first ``threads`` CPUs it may use; returns the CPUs it runs on."""
    if threads is not None:
        os.sched_setaffinity(0, machine.cell_cpus(threads))
        # NumPy's BLAS (and OpenMP, if loaded) started one thread per core at import, in the host: left alone they
        # would spin against each other on the pinned cores (12 s instead of 2 s for the quality metrics on 1 core).
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    return machine.usable_cpus()


@dataclass(frozen=True)
class TrainingData:
    """What training reads: the training subset, what the model trains on, and the held-out validation slice with
    its noise. No test image: ``aebench tune`` tunes on this alone."""

    x_train: np.ndarray
    y_train: np.ndarray
    train_inputs: np.ndarray  # noisy copies of x_train, or x_train itself for a model that corrupts its own input
    x_validation: np.ndarray
    noisy_validation: np.ndarray


@dataclass(frozen=True)
class CellData(TrainingData):
    """The training data and the test images with their noise: what a cell reads."""

    x_test: np.ndarray
    y_test: np.ndarray
    noisy_test: np.ndarray


@dataclass(frozen=True)
class TrainedCell:
    """The cell's data and its trained model: what the accuracy phase reads."""

    data: CellData
    model: Any
    forward: Forward
    output: np.ndarray  # the model's outputs on data.noisy_test


class _Phases:
    """Wall time of the cell's phases, reported as ``timing.<name>``; a phase timed in several parts adds them up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"timing.{name}": value for name, value in self.seconds.items()}


def execute_cell(matrix: Matrix, cell: Cell, dataset: Dataset, *, trains: bool = True, weights_path: str | None = None,
                 checkpoint_dir: str | None = None,
                 cache_dir: str | None = None) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Measure one cell. Returns (metrics, info, artifacts).

    A training cell (``trains``) trains the model with its quality clock, saves the weights to ``weights_path``
    (when given) and scores them. Every other thread count of the model loads them from there and only times it: its
    quality figures are the training cell's (the runner copies them). Both time inference and a fixed number of
    training steps on the trained weights, the same way, so thread counts compare."""
    phases = _Phases()
    with phases.timed("setup_s"):
        info = _pin(cell)
        monitor = load.LoadMonitor([int(cpu) for cpu in info["cpus"].split(",")])  # was the machine ours alone?
        data = cell_data(matrix, cell, dataset)
    model, build_s, model_info = build_model(matrix, cell)
    # The cold start first, before training or loading weights: every thread count's first call is then the same
    # event (after a training run the framework is warm, and the training cell's would look faster). The weights do
    # not change how long a call takes.
    with phases.timed("speed_s"):
        cold = _cold_start(model, data, build_s)
    if trains:
        monitor.mark("the setup before training")
        metrics, artifacts = _train(matrix, cell, data, model, weights_path, checkpoint_dir, phases)
        monitor.mark("training")
    else:
        model.load_weights(weights_path)
        metrics, artifacts = {}, {}
        monitor.mark("the setup")
    # The trained weights' digest: identical code and seed give identical weights; `aebench ab` shows it, and every
    # thread count of a model shows the same one.
    model_info["weights_sha256"] = weights_digest(model)
    timed = _time_model(matrix, cell, data, model, monitor, phases)
    model_info |= timed.info
    metrics |= cold.metrics() | timed.metrics | monitor.metrics()
    if monitor.reason():
        info["contaminated"] = monitor.reason()
    metrics.update(_compute(cell, model, metrics))
    if trains:
        scored, scored_info, scored_artifacts = _score(matrix, cell, dataset, data, model, timed.forward, cache_dir,
                                                       phases)
        metrics |= scored
        info |= scored_info
        artifacts |= scored_artifacts
    metrics["memory.peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics.update(phases.metrics())
    info |= model_info
    artifacts[scenarios.Latency.ARTIFACT] = timed.latency_samples
    return metrics, info, artifacts


def _train(matrix: Matrix, cell: Cell, data: CellData, model: Any, weights_path: str | None,
           checkpoint_dir: str | None, phases: _Phases) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The training cell's one training run (time to quality, its curve, the final loss); the weights saved."""
    # The whole training run's wall, so that the evaluations and checkpoint saves the quality clock reports (some of
    # them outside any epoch: the end's own evaluation, a resumed run's restore) all lie inside it.
    with phases.timed("train_s"):
        training, curve = train_to_quality(matrix, cell, model, data, checkpoint_dir)
    if weights_path:
        _save_weights(model, Path(weights_path))
    return curve.metrics() | {"quality.train_loss": training.final_loss}, curve.artifacts()


@dataclass(frozen=True)
class TimedModel:
    """What timing a trained model gave: its compiled call, speed figures, raw batch-1 latencies and info."""

    forward: Forward
    metrics: dict[str, float | None]
    latency_samples: np.ndarray
    info: dict[str, Any]


def _compiled_forward(model: Any) -> tuple[Forward, float]:
    """The model's compiled call, with the calibration spike-in when ``aebench ab --calibrate`` asks for one (known
    extra work on every timed call), and that spike's share (0 without)."""
    share = spike.fraction()
    forward = backends.current().compiled_forward(model)
    return (spike.spiked_forward(forward, share), share) if share else (forward, 0.0)


def _cold_start(model: Any, data: CellData, build_s: float) -> scenarios.ColdStart:
    """The first call (trace and compile) of a compiled call made for it alone, with the model's build time."""
    forward, _ = _compiled_forward(model)
    return scenarios.cold_start(forward, data.noisy_test[:1], build_s)


def _time_model(matrix: Matrix, cell: Cell, data: CellData, model: Any, monitor: load.LoadMonitor,
                phases: _Phases) -> TimedModel:
    """Inference on the compiled call (SingleStream, whose warm-up takes its first trace, Offline, the framework
    path), then the timed training steps from a fresh compile (the same step and optimizer state in every thread
    count's cell, the training cell's included), whose weights are put back afterwards: every thread count times the
    same trained model the same way."""
    info: dict[str, Any] = {}
    trained_weights = model.get_weights()
    with phases.timed("speed_s"):
        forward, share = _compiled_forward(model)
        if share:
            info["spike_fraction"] = share
        first = data.noisy_test[:1]
        single = scenarios.single_stream(forward, first, matrix.latency)
        offline = scenarios.offline(forward, data.noisy_test, matrix.throughput)
        framework = scenarios.framework_path(model, first, matrix.latency.max_duration_s) if matrix.predict_path \
            else None
    monitor.mark("inference")
    with phases.timed("train_timing_s"):
        # A new train function and optimizer: after fit() the training cell's would be traced and built already.
        scenarios.compile_autoencoder(model, matrix.learning_rate, matrix.jit_compile, matrix.decay_steps)
        steps = scenarios.training_steps(model, data.train_inputs, data.x_train, matrix.train_timing,
                                         batch_size=matrix.batch_size, seed=cell.seed,
                                         callbacks=[spike.training_callback(share)] if share else ())
        model.set_weights(trained_weights)
    monitor.mark("the timed training steps", last=True)
    metrics = {key: value for record in (steps, single, offline, framework) if record is not None
               for key, value in record.metrics().items()}
    info |= {"train_input": steps.feed, "inference_path": forward.path}
    return TimedModel(forward, metrics, single.samples.seconds.astype(np.float64), info)


def _score(matrix: Matrix, cell: Cell, dataset: Dataset, data: CellData, model: Any, forward: Forward,
           cache_dir: str | None, phases: _Phases) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """The training cell's quality figures: the test set scored, then accuracy, diagnostics and robustness."""
    with phases.timed("eval_s"):
        output, quality = _quality(matrix, data, forward)
    trained = TrainedCell(data, model, forward, output)
    with phases.timed("accuracy_s"):
        metrics, info, artifacts = _accuracy_and_diagnostics(matrix, cell, dataset, trained, cache_dir)
    # Loading the reference classifier (trained before the sweep) is reported on its own, as timing.classifier_s.
    phases.seconds["accuracy_s"] -= metrics.get("timing.classifier_s", 0.0)
    return quality | metrics, info, _grid(trained) | artifacts


def train_to_quality(matrix: Matrix, cell: Cell, model: Any, data: TrainingData,
                     checkpoint_dir: str | None = None) -> tuple[scenarios.Training, timetoquality.Curve]:
    """The model's one training run, with its quality clock: validation PSNR every few steps, time to target. Reads
    the training images and the held-out validation slice only (``aebench tune`` relies on it)."""
    settings = matrix.time_to_quality
    clock = timetoquality.QualityClock(
        timetoquality.psnr_evaluator(model, data.x_validation, data.noisy_validation, matrix.throughput.batch_size),
        noisy_psnr_db=psnr_db(data.x_validation, data.noisy_validation), target_gain_db=settings.target_gain_db,
        every_steps=settings.every_steps, batch_size=matrix.batch_size, images_per_epoch=len(data.train_inputs),
        state_path=Path(checkpoint_dir) / timetoquality.STATE_FILE if checkpoint_dir else None)
    training = scenarios.train(model, data.train_inputs, data.x_train, batch_size=matrix.batch_size,
                               epochs=matrix.epochs, seed=cell.seed, checkpoint_dir=checkpoint_dir,
                               callbacks=[clock.callback()], on_checkpoint_saved=clock.checkpoint_saved)
    return training, clock.curve()


def _save_weights(model: Any, path: Path) -> None:
    """Write the trained weights where the model's other thread counts load them, atomically: a cell killed while
    writing leaves no half file for them to load."""
    with atomic.replacing(path) as partial:
        model.save_weights(partial)


def weights_digest(model: Any) -> str:
    """sha256 of the model's weights, in order, as float32 bytes (whatever precision they are kept in)."""
    import hashlib

    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(np.asarray(array, dtype=np.float32)).tobytes())
    return digest.hexdigest()


def _pin(cell: Cell) -> dict[str, Any]:
    """Pin the CPUs, then set threads, precision and device before the backend's first op; returns what was set."""
    if cell.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU cell must not drift onto a GPU the machine happens to have
    cpus = pin_cpus(cell.threads)

    import keras

    backend = backends.current()
    info: dict[str, Any] = {"cpus": ",".join(map(str, cpus)), "pid": os.getpid()}
    info.update(backend.configure_threads(cell.threads))
    backend.set_precision(cell.precision)
    backend.place(cell.device)
    info["backend"] = backend.name
    info["backend_device"] = backend.device_description(cell.device)
    # The machine that timed this cell, whichever ran the sweep (a cluster's node): a fleet's rows say it per cell.
    info |= machine.fingerprint()
    info["keras"] = keras.__version__
    info["backend_version"] = backend.version()
    return info


# The noise draw of each part of a cell's data: seed + these. The robustness sweep draws the test noise again at its
# levels with TEST_NOISE, so that at the cell's own level it reproduces the test images' noise exactly.
TRAIN_NOISE, TEST_NOISE, VALIDATION_NOISE = 0, 1, 2


def training_data(matrix: Matrix, cell: Cell, dataset: Dataset) -> TrainingData:
    """The cell's training subset and validation slice; fresh noise draws for train (seed) and validation
    (seed + 2)."""
    from aebench import models

    x_train, y_train, x_validation = training_split(dataset.x_train, dataset.y_train, matrix.train_size,
                                                    matrix.validation_size, cell.seed)
    noisy_validation = add_noise(x_validation, cell.noise_type, cell.noise, seed=cell.seed + VALIDATION_NOISE)
    # The denoising AE corrupts its own clean input afresh each step (see build_model); the others train on noisy
    # copies.
    train_inputs = x_train if models.REGISTRY[cell.variant].corrupts_input else \
        add_noise(x_train, cell.noise_type, cell.noise, seed=cell.seed + TRAIN_NOISE)
    return TrainingData(x_train, y_train, train_inputs, x_validation, noisy_validation)


def cell_data(matrix: Matrix, cell: Cell, dataset: Dataset) -> CellData:
    """The training data, and the same test images for every cell with a fresh noise draw (seed + 1)."""
    train = training_data(matrix, cell, dataset)
    x_test, y_test = dataset.x_test[: matrix.test_size], dataset.y_test[: matrix.test_size]
    noisy_test = add_noise(x_test, cell.noise_type, cell.noise, seed=cell.seed + TEST_NOISE)
    return CellData(**vars(train), x_test=x_test, y_test=y_test, noisy_test=noisy_test)


def build_model(matrix: Matrix, cell: Cell) -> tuple[Any, float, dict[str, Any]]:
    """The compiled model, the seconds building it took, and what it is (info)."""
    from aebench import models

    started = time.perf_counter()
    hparams = dict(cell.hparams)
    if models.REGISTRY[cell.variant].corrupts_input:  # at the cell's noise level, unless the matrix sets its own
        hparams.setdefault(models.registry.CORRUPTION_HPARAM, cell.noise)
    model = models.build_autoencoder(cell.variant, hparams, seed=cell.seed)
    scenarios.compile_autoencoder(model, matrix.learning_rate, matrix.jit_compile, matrix.decay_steps)
    build_s = time.perf_counter() - started
    info = {"jit_compile": bool(model.jit_compile), "parameters": int(model.count_params()),
            "weights_device": backends.current().weights_device(model)}
    return model, build_s, info


def _compute(cell: Cell, model: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """FLOPs per image; on a CPU also the achieved GFLOP/s of training and inference against the CPU's peak."""
    if cell.device == "cpu":
        return flops.compute_metrics(flops.model_flops(model), metrics, cell.threads, machine.cpu_flags(),
                                     flops.cpu_clock_ghz())
    return {"compute.flops_per_image": float(flops.model_flops(model))}


def _quality(matrix: Matrix, data: CellData, forward: Forward) -> tuple[np.ndarray, dict[str, float]]:
    """The model's outputs on the noisy test images, scored against the clean ones."""
    output = forward.predict(data.noisy_test, matrix.throughput.batch_size)
    return output, reconstruction_metrics(data.x_test, data.noisy_test, output)


def _accuracy_and_diagnostics(matrix: Matrix, cell: Cell, dataset: Dataset, trained: TrainedCell,
                              cache_dir: str | None) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Accuracy a downstream user would feel, latent diagnostics and the robustness sweep (aebench.accuracy).

    Returns (metrics, info, artifacts). Loading the reference classifier (the runner has it trained into the cache
    before the sweep) is reported as ``timing.classifier_s``, apart from every measured phase.
    """
    from aebench import models

    encoder = models.encoder_of(trained.model)  # one object for both: its compiled call is traced once
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {}
    if matrix.accuracy:
        metrics, info = _classifier_accuracy(matrix, cell, dataset, trained, encoder, cache_dir)
    metrics.update(_diagnostics(matrix, cell, trained, encoder))
    robust, artifacts = _robustness(matrix, cell, trained)
    metrics.update(robust)
    return metrics, info, artifacts


def _classifier_accuracy(matrix: Matrix, cell: Cell, dataset: Dataset, trained: TrainedCell, encoder: Any,
                         cache_dir: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """The reference classifier on the clean, noisy and denoised test images, and the linear probe on the codes."""
    from aebench import accuracy

    data, batch_size = trained.data, matrix.throughput.batch_size
    reference = accuracy.reference_classifier(dataset, cell.seed, Path(cache_dir) if cache_dir else None)
    metrics = {"timing.classifier_s": reference.seconds}
    info = {"classifier_cached": reference.cached, "classifier_test_acc": reference.test_accuracy}
    scores = {name: accuracy.classify_accuracy(reference.model, images, data.y_test, batch_size)
              for name, images in (("clean", data.x_test), ("noisy", data.noisy_test), ("denoised", trained.output))}
    metrics.update({f"quality.acc_{name}": value for name, value in scores.items()})
    metrics["quality.acc_gain_points"] = accuracy.accuracy_points_gained(scores["noisy"], scores["denoised"])
    recovered = accuracy.recovered_fraction(scores["clean"], scores["noisy"], scores["denoised"])
    if recovered is not None:
        metrics["quality.acc_recovered"] = recovered
    # The probe reads codes of clean images: what the code knows about the digit, apart from the noise.
    metrics["quality.probe_acc"] = accuracy.latent_probe_accuracy(
        encoder, data.x_train, data.y_train, data.x_test, data.y_test, cell.seed,
        batch_size=batch_size)
    return metrics, info


def _diagnostics(matrix: Matrix, cell: Cell, trained: TrainedCell, encoder: Any) -> dict[str, float]:
    """Latent activation statistics, per-digit error and, for a variant whose loss penalises its Jacobian in closed
    form (the contractive AE), the check of that form against autodiff."""
    from aebench import accuracy, models

    data = trained.data
    # Activation statistics on the codes of the cell's own (noisy) test inputs: the ones behind its outputs.
    codes = accuracy.predict_batches(encoder, data.noisy_test, matrix.throughput.batch_size)
    metrics = accuracy.latent_activation_stats(codes)
    metrics.update(accuracy.per_digit_mse(data.x_test, trained.output, data.y_test))
    if models.REGISTRY[cell.variant].jacobian_penalty:
        metrics.update(accuracy.contractive_jacobian_check(trained.model, data.noisy_test[: accuracy.JACOBIAN_SAMPLE]))
    return metrics


def _robustness(matrix: Matrix, cell: Cell, trained: TrainedCell) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """PSNR over the sweep of test noise levels; the cell's own level reuses its outputs."""
    from aebench import accuracy

    levels = matrix.eval_noise or accuracy.DEFAULT_ROBUST_LEVELS
    batch_size = matrix.throughput.batch_size
    # The test noise's seed: the cell's own level then reproduces its quality.psnr_db.
    return accuracy.robustness_curve(lambda images: trained.forward.predict(images, batch_size), trained.data.x_test,
                                     cell.noise_type, levels, seed=cell.seed + TEST_NOISE,
                                     known={cell.noise: (trained.data.noisy_test, trained.output)})


def _grid(trained: TrainedCell) -> dict[str, np.ndarray]:
    """The image grid the paper's figure shows: clean, noisy and denoised test digits with their labels."""
    data = trained.data
    return {
        "grid_clean": to_uint8(data.x_test[:GRID_IMAGES]),
        "grid_noisy": to_uint8(data.noisy_test[:GRID_IMAGES]),
        "grid_denoised": to_uint8(trained.output[:GRID_IMAGES]),
        "grid_labels": data.y_test[:GRID_IMAGES].astype(np.int64),
    }


def probe_devices() -> dict[str, Any]:
    """Accelerators the current backend sees (runs in a child: the host must not initialise the backend).

    Returns ``{"backend", "version", "gpu": count, "gpu_names": [...], "gpu_reason": why none or None, and the same
    for "tpu"}``; aebench.devices reads it.
    """
    import keras

    backend = backends.current()
    found: dict[str, Any] = {"backend": backend.name, "keras": keras.__version__, "version": backend.version()}
    for kind in ("gpu", "tpu"):
        try:
            names, reason = backend.find_accelerators(kind)
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


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when the thread that forked it ends (a cell when its host
    dies, however it dies). A no-op where prctl is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _watch_runner(runner_pid: int, interval_s: float = 0.5) -> None:
    """A daemon thread of the host: once the runner that started it is gone (SIGKILL, which no handler of the
    runner's sees, leaves this host waiting on its cell), the host kills itself, and with it its cell
    (``_die_with_parent``). Polled, not a parent-death signal: the runner may start hosts from short-lived threads."""
    def watch() -> None:
        while os.getppid() == runner_pid:
            time.sleep(interval_s)
        # The runner starts each host in a process group of its own, which its cells join: kill it all. A host
        # started otherwise (by hand, by a test) kills only itself, never a group it merely belongs to.
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="aebench-runner-watch", daemon=True).start()


def _limit_memory(limit_mb: float) -> None:
    """Cap the address space this cell may add to what it inherited from its host (the framework, the dataset):
    an allocation past it fails here (MemoryError, or the framework's own abort) instead of swapping the machine."""
    if limit_mb <= 0:
        return
    with open("/proc/self/statm") as statm:  # sizes in pages; the first is the whole address space
        inherited = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    ceiling = inherited + int(limit_mb * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


def _child(task: dict[str, Any], datasets: dict[str, Dataset], host_pid: int) -> None:
    """Runs in the forked child; never returns."""
    _die_with_parent()  # before anything else: a cell never outlives its host
    if os.getppid() != host_pid:  # the host died between the fork and the line above: no signal will come
        os._exit(1)
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
            _limit_memory(matrix.memory_limit_mb)
            metrics, info, artifacts = execute_cell(
                matrix, cell, datasets[task["data_path"]], trains=task.get("trains", True),
                weights_path=task.get("weights_path"), checkpoint_dir=task.get("checkpoint_dir"),
                cache_dir=task.get("cache_dir"))
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
    _watch_runner(os.getppid())
    # Keras on torch asks torch.cuda.is_available() at import. Answered through the CUDA runtime, that initialises
    # CUDA in this host and every forked cell then fails to use the GPU; answered through NVML, it does not.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    from aebench.models import registry

    registry.load_registered_plugins()  # before Keras: a broken plugin stops the host before "ready", its log says why
    import keras  # noqa: F401 - the preload that every forked cell inherits

    from aebench import models  # noqa: F401

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
        host_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(task, datasets, host_pid)
        send({"event": "started", "pid": pid})
        _, status = os.waitpid(pid, 0)
        send({"event": "exited", "exit_code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python -m aebench.worker serve   (started by the aebench runner, not by hand)")
    serve()
