"""aebench run --cluster: a real Dask cluster on 127.0.0.1, a scheduler and two workers with different resources,
started as a user would (`dask scheduler`, `dask worker --resources ...`) and stopped by each test.

The tests that place, retry and pack cells use the stand-in worker host (tests/fake_host.py); one runs a real tiny
matrix on the cluster and checks it against a local run of the same matrix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from aebench import cluster
from aebench.cli import main
from aebench.config import Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import open_store
from support import tiny_matrix_dict, write_matrix

FAKE_HOST = Path(__file__).parent / "fake_host.py"
DASK = Path(sys.executable).parent / "dask"
ACCELERATED, PLAIN = "accelerated", "plain"
WORKER_RESOURCES = {ACCELERATED: "TPU=1", PLAIN: "disk=1"}  # two workers that differ: one has a (pretend) TPU


@dataclass
class DaskCluster:
    address: str
    workers: dict[str, subprocess.Popen]  # worker name -> its process (no nanny: a kill is final)
    addresses: dict[str, str]  # worker name -> its address


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """`dask scheduler` and two `dask worker`s on 127.0.0.1; every process is stopped at the end of the test."""
    from distributed import Client

    # As the README says to start a scheduler for aebench: a cell whose worker is lost comes back to aebench at once.
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([str(DASK), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        processes.append(process)
        return process

    scheduler_file = tmp_path / "scheduler.json"
    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, (logs / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = {name: start(name, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                               "--no-dashboard", "--name", name, "--resources", resources)
                   for name, resources in WORKER_RESOURCES.items()}
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            addresses = {info["name"]: address for address, info in client.scheduler_info()["workers"].items()}
        yield DaskCluster(address, workers, addresses)
    finally:
        for process in reversed(processes):  # the workers first, each to its end, then the scheduler
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _sweep(dask_cluster: DaskCluster, tmp_path: Path, matrix: Matrix, behaviours: str,
           cells: list | None = None, **options: object) -> list[CellResult]:
    from distributed import Client

    unread = tmp_path / "unread.npz"  # the stand-in host reads no data; the node only checks that the file is there
    unread.touch()
    with Client(dask_cluster.address, timeout=30) as client:
        return cluster.run_cells(matrix, matrix.cells() if cells is None else cells, client=client, data_path=unread,
                                 on_result=lambda result: None, weights_root=tmp_path / "weights",
                                 cache_dir=tmp_path / "cache", host_command=[sys.executable, str(FAKE_HOST), behaviours],
                                 **options)


def test_cells_go_only_where_their_resources_are_and_the_rest_are_skipped_with_the_reason(
        dask_cluster: DaskCluster, tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], device=["cpu", "gpu", "tpu"],
                                               threads=[1, 512], accuracy=False))
    results = {(r.cell.device, r.cell.threads): r for r in _sweep(dask_cluster, tmp_path, matrix, "ok,ok,ok,ok")}
    assert results[("gpu", None)].status == "skipped"
    assert results[("gpu", None)].error.startswith("no worker of the cluster advertises a GPU resource: start one on "
                                                   "a GPU machine with `dask worker SCHEDULER --resources GPU=1`")
    assert results[("cpu", 512)].status == "skipped"
    assert results[("cpu", 512)].error.startswith("threads=512 needs 512 CPUs; the largest worker of the cluster")
    tpu, cpu = results[("tpu", None)], results[("cpu", 1)]
    assert tpu.status == cpu.status == "ok", (tpu.error, cpu.error)
    assert tpu.info["cluster_worker"] == dask_cluster.addresses[ACCELERATED]  # the only worker with a TPU
    assert cpu.info["cluster_worker"] in dask_cluster.addresses.values()
    assert tpu.info["trained_by"] == tpu.cell.key


class _Queued:
    """A future whose task has not started."""

    def done(self) -> bool:
        return False


class _QueueingCluster:
    """A scheduler whose tasks wait: what a cell sees when the workers it may run on leave before it starts."""

    def __init__(self, workers: list[str]) -> None:
        self.workers = {address: {"resources": {}} for address in workers}
        self.submitted: list[dict] = []
        self.cancelled: list[object] = []

    def submit(self, *args: object, **options: object) -> object:
        self.submitted.append(options)
        return _Queued()

    def cancel(self, futures: list) -> None:
        self.cancelled += futures

    def scheduler_info(self, n_workers: int) -> dict:
        return {"workers": self.workers}

    def run(self, function: object, *args: object, **options: object) -> dict:
        return {address: {"host": "h", "usable_cpus": 2, "machine_id": "m"} for address in self.workers}


def test_a_queued_cell_whose_workers_all_left_is_sent_elsewhere_or_failed_not_left_waiting() -> None:
    fake = _QueueingCluster(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"])
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], accuracy=False))
    (cell,) = matrix.cells()
    sweep = cluster.ClusterSweep(fake, matrix, cluster.Placement(cluster.survey(fake)), Path("d"), Path("c"),
                                 Path("w"))
    queued = sweep.submit(cell, trains=True)
    assert sweep.stranded([queued]) == []  # its workers are still there
    fake.workers = {"tcp://127.0.0.1:3": {"resources": {}}}  # both left; a new one joined
    ((old, result, moved),) = sweep.stranded([queued])
    assert old is queued and result is None and fake.cancelled == [queued]
    assert fake.submitted[-1]["workers"] == ["tcp://127.0.0.1:3"] and "-try1-" in fake.submitted[-1]["key"]
    assert fake.submitted[-1]["key"] != fake.submitted[0]["key"]  # a key of its own: the old one's cancel is on its way
    fake.workers = {}
    ((old, result, moved),) = sweep.stranded([moved])
    assert moved is None and result.status == "failed"
    assert result.error == ("its workers (tcp://127.0.0.1:3) left the cluster before it ran, and the cluster has no "
                            "worker left")


def test_a_stopped_driver_kills_the_cells_its_sweep_left_running_on_a_node(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], threads=[1], accuracy=False))
    unread = tmp_path / "unread.npz"
    unread.touch()
    (cell,) = matrix.cells()
    task = cluster.NodeTask(matrix, cell, unread, tmp_path / "cache", True, sweep="s1",
                            host_command=(sys.executable, str(FAKE_HOST), "hang"))
    replies: list[cluster.NodeReply] = []
    node = threading.Thread(target=lambda: replies.append(cluster.run_on_node(task)))
    node.start()
    try:
        deadline = time.monotonic() + 60
        while not any(host.running_cell_pid for hosts in cluster._HOSTS.values() for host in hosts.values()):
            assert time.monotonic() < deadline and node.is_alive()
            time.sleep(0.05)
        (cell_pid,) = [host.running_cell_pid for hosts in cluster._HOSTS.values() for host in hosts.values()
                       if host.running_cell_pid]
        assert cluster.stop_sweep("another sweep") == 0  # a sweep names only its own cells
        assert cluster.stop_sweep("s1") == 1
        node.join(timeout=30)
        assert not node.is_alive()
        # A cell of the stopped sweep that comes to the node afterwards (it was waiting for the machine lock) starts
        # nothing.
        late = cluster.run_on_node(task)
        assert late.result.status == "failed" and "its driver stopped the sweep" in late.result.error
    finally:
        if node.is_alive():  # the hanging cell was not stopped: stop it so that the test can fail, not hang
            cluster.stop_sweep("s1")
            node.join(timeout=30)
    (reply,) = replies
    assert reply.result.status == "failed" and "worker host exited" in reply.result.error
    assert not psutil.pid_exists(cell_pid) or psutil.Process(cell_pid).status() == psutil.STATUS_ZOMBIE
    assert cluster._RUNNING == {}


def test_the_cluster_skips_what_a_local_run_skips_for_its_precision() -> None:
    from aebench.runner import SkipCheck

    node = cluster.Node("tcp://127.0.0.1:1", {"TPU": 1, "GPU": 1}, "h", 2, "m")
    local = SkipCheck(usable_cpus=2, accelerators={("tensorflow", "gpu"): 1, ("tensorflow", "tpu"): 1},
                      backend_problems={})
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], device=["cpu", "gpu", "tpu"], threads=[1],
                                               precision=["float32", "mixed_float16"]))
    reasons = {cell.label: cluster.Placement((node,)).reason(cell) for cell in matrix.cells()}
    assert reasons == {cell.label: local.reason(cell) for cell in matrix.cells()}
    assert sum(reason is not None for reason in reasons.values()) == 2  # mixed_float16 on the CPU and on the TPU


def test_a_worker_killed_mid_cell_is_retried_once_on_the_other_worker(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    from distributed import Client

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], accuracy=False))
    found: list[CellResult] = []
    sweep = threading.Thread(target=lambda: found.extend(_sweep(dask_cluster, tmp_path, matrix, "slow")))
    sweep.start()
    victim = None
    with Client(dask_cluster.address, timeout=30) as client:
        deadline = time.monotonic() + 60
        while victim is None:  # the cell's worker, as soon as the scheduler has given it the cell
            assert time.monotonic() < deadline and sweep.is_alive()
            busy = [address for address, keys in client.processing().items() if keys]
            victim = next((name for name, address in dask_cluster.addresses.items() if address in busy), None)
            time.sleep(0.05)
        time.sleep(1.0)  # into the cell's 4 s: its host has forked it
        dask_cluster.workers[victim].send_signal(signal.SIGKILL)
    sweep.join(timeout=120)
    (result,) = found
    survivor = next(name for name in dask_cluster.addresses if name != victim)
    assert result.status == "ok", result.error
    assert result.info["cluster_worker"] == dask_cluster.addresses[survivor]
    assert result.info["earlier_attempt"] == (f"try 1: its Dask worker {dask_cluster.addresses[victim]} was lost "
                                              "mid-cell (KilledWorker)")


@pytest.mark.slow
def test_the_cells_of_a_lost_worker_run_on_the_worker_that_joined(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    """The one TPU worker is lost with a cell running and one queued behind it: Dask hands both back (KilledWorker)
    and both run again on a TPU worker that joined meanwhile."""
    from distributed import Client

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete", "conv"], device=["tpu"], accuracy=False))
    found: list[CellResult] = []
    sweep = threading.Thread(target=lambda: found.extend(_sweep(dask_cluster, tmp_path, matrix, "slow,ok")))
    sweep.start()
    log = open(tmp_path / "joiner.log", "wb")  # noqa: SIM115 - closed below
    joiner = subprocess.Popen([str(DASK), "worker", dask_cluster.address, "--host", "127.0.0.1", "--nthreads", "1",
                               "--no-nanny", "--no-dashboard", "--name", "joiner", "--resources", "TPU=1"],
                              stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        with Client(dask_cluster.address, timeout=30) as client:
            client.wait_for_workers(3, timeout=60)
            deadline = time.monotonic() + 60
            while not client.processing().get(dask_cluster.addresses[ACCELERATED]):  # the first cell has started
                assert time.monotonic() < deadline and sweep.is_alive()
                time.sleep(0.05)
            time.sleep(1.0)  # into its 4 s; the second waits behind it for the same worker
            dask_cluster.workers[ACCELERATED].send_signal(signal.SIGKILL)
            joined = next(address for address, info in client.scheduler_info()["workers"].items()
                          if info["name"] == "joiner")
        sweep.join(timeout=120)
        assert not sweep.is_alive()
    finally:
        joiner.terminate()
        joiner.wait(timeout=30)
    slow, queued = sorted(found, key=lambda result: result.cell.index)
    assert slow.status == queued.status == "ok", (slow.error, queued.error)
    assert slow.info["earlier_attempt"].startswith("try 1: its Dask worker")
    assert slow.info["cluster_worker"] == queued.info["cluster_worker"] == joined


def test_a_cell_sent_to_a_worker_that_has_left_is_sent_again_and_runs(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    """Through a real scheduler, which keeps a task waiting for its workers forever: a cell placed on a worker that
    left (a placement surveyed before it did) is sent to those there are now, under a key of its own (a reused key
    would be cancelled by its predecessor's cancel), and runs."""
    from distributed import Client, wait

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], threads=[1], accuracy=False))
    (cell,) = matrix.cells()
    unread = tmp_path / "unread.npz"
    unread.touch()
    with Client(dask_cluster.address, timeout=30) as client:
        gone = cluster.Node("tcp://127.0.0.1:9", {}, "h", 2, "m")  # no worker listens there
        sweep = cluster.ClusterSweep(client, matrix, cluster.Placement((gone,)), unread, tmp_path / "cache",
                                     tmp_path / "weights", host_command=(sys.executable, str(FAKE_HOST), "ok"))
        stuck = sweep.submit(cell, trains=True)
        with pytest.raises(TimeoutError):
            wait([stuck], timeout=2)
        ((old, result, moved),) = sweep.stranded([stuck])
        assert old is stuck and result is None
        wait([moved], timeout=60)
        time.sleep(0.5)  # time for a stray cancel of the old key to arrive, were the key shared
        assert moved.status == "finished"
        reply, weights, notes, retry = sweep.collect(moved)
    assert reply.status == "ok" and reply.info["cluster_worker"] in dask_cluster.addresses.values()


def test_a_cell_whose_workers_are_all_lost_is_stored_as_failed_with_the_reason() -> None:
    from distributed import KilledWorker

    class Lost:
        def result(self) -> None:
            raise KilledWorker("aebench-cell0000", SimpleNamespace(address="tcp://127.0.0.1:1"), 0)

    class Cluster:
        """Two workers, one after the other lost mid-cell; then none."""

        def __init__(self) -> None:
            self.workers = {"tcp://127.0.0.1:1": {"resources": {}}, "tcp://127.0.0.1:2": {"resources": {}}}

        def submit(self, *args: object, **kwargs: object) -> Lost:
            return Lost()

        def scheduler_info(self, n_workers: int) -> dict:
            return {"workers": self.workers}

        def run(self, function: object, *args: object, **options: object) -> dict:
            return {address: {"host": "h", "usable_cpus": 2, "machine_id": "m"} for address in self.workers}

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], accuracy=False))
    (cell,) = matrix.cells()
    fake = Cluster()
    sweep = cluster.ClusterSweep(fake, matrix, cluster.Placement(()), Path("d"), Path("c"), Path("w"))
    first = sweep.submit(cell, trains=True)
    result, _, notes, retry = sweep.collect(first)
    assert result is None and notes[0].endswith("trying it once more elsewhere")
    result, _, _, again = sweep.collect(retry)
    assert again is None and result.status == "failed"
    assert result.error == ("its Dask worker tcp://127.0.0.1:1 was lost mid-cell (KilledWorker), on each of 2 tries: "
                            "not tried again")
    assert result.info["earlier_attempt"] == "try 1: its Dask worker tcp://127.0.0.1:1 was lost mid-cell (KilledWorker)"

    fake.workers.clear()  # a retry with no worker left to take it fails at once instead of waiting for one
    result, _, _, again = sweep.collect(sweep.submit(cell, trains=True))
    assert again is None and result.error == ("its Dask worker tcp://127.0.0.1:1 was lost mid-cell (KilledWorker), "
                                              "and the cluster has no worker left")


def test_by_default_two_workers_on_one_machine_run_its_cells_one_after_the_other(dask_cluster: DaskCluster,
                                                                                 tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete", "conv"], accuracy=False))
    results = _sweep(dask_cluster, tmp_path, matrix, "slow,slow")
    assert [r.status for r in results] == ["ok", "ok"]
    assert {r.info["cluster_worker"] for r in results} == set(dask_cluster.addresses.values())  # one cell each
    waits = sorted(r.info["cluster_wait_s"] for r in results)
    assert waits[0] < 2.0 < waits[1]  # the second waited for the machine lock while the first ran its 4 s


def test_packed_cells_share_a_node_on_disjoint_cores(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("packing two 1-thread cells needs two usable CPUs")
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete", "conv"], accuracy=False))
    results = _sweep(dask_cluster, tmp_path, matrix, "slow,slow", pack=True)
    assert [r.status for r in results] == ["ok", "ok"]
    assert max(r.info["cluster_wait_s"] for r in results) < 2.0  # side by side, not one after the other
    cores = [r.info["packed"].rsplit("on CPUs ", 1)[1] for r in results]
    assert cores[0] != cores[1]
    # Side by side, their speed figures are contaminated (left out of every comparison); their quality is not.
    assert all(r.metrics["speed.contaminated"] == 1.0 and r.info["contaminated"] == r.info["packed"] for r in results)
    assert all(r.metrics["quality.mse"] == 0.01 and r.metrics["speed.infer_ips"] > 0 for r in results)


def test_a_resumed_cluster_run_times_the_stored_training_cells_weights(dask_cluster: DaskCluster,
                                                                       tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], threads=[1, 2], accuracy=False))
    trainer, timer = sorted(matrix.cells(), key=lambda cell: -(cell.threads or 0))
    stored = CellResult(cell=trainer, status="ok", duration_s=1.0, metrics={"quality.mse": 0.02},
                        info={"trained_by": trainer.key})
    (tmp_path / "weights").mkdir()
    from aebench.runner import weights_file

    weights_file(tmp_path / "weights", trainer).write_text("weights of the first invocation")
    (result,) = _sweep(dask_cluster, tmp_path, matrix, "ok,ok", cells=[timer], trained_before={trainer.quality_key: stored})
    assert result.status == "ok" and result.info["trained_by"] == trainer.key
    assert result.metrics["quality.mse"] == 0.02  # the stored training's figure, shared
    assert result.info["trains"] is False  # it only timed the weights it was sent:
    assert result.info["weights_seen"] == "weights of the first invocation"


@pytest.mark.parametrize(("options", "message"), [
    (["--cluster", "local:0"], "--cluster 'local:0' is invalid: allowed local:N"),
    (["--cluster", "127.0.0.1:8786"], "--cluster '127.0.0.1:8786' is invalid: allowed local:N"),
    (["--pack"], "--pack lets a cluster's node run several cells at once: allowed only with --cluster"),
    (["--cluster", "local:2", "--wait-idle", "5"], "--wait-idle waits for this machine's CPUs: allowed without --cluster"),
    (["--cluster", "local:2", "--allow-concurrent"], "--allow-concurrent runs beside another run of this machine: "
                                                      "allowed without --cluster"),
])
def test_bad_cluster_options_are_one_line_exit_2_with_nothing_written(
        options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    matrix = write_matrix(tmp_path / "m.toml", variants=["undercomplete"])
    assert main(["run", str(matrix), "--store", str(tmp_path / "s.sqlite"), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()


def test_a_scheduler_that_does_not_answer_is_a_user_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match=f"--cluster tcp://127.0.0.1:{port}: no Dask scheduler answers there"):
        with cluster.connect(f"tcp://127.0.0.1:{port}", timeout_s=2):
            pass


@pytest.mark.slow
def test_a_tiny_matrix_on_the_cluster_gives_the_local_runs_cells_and_bit_identical_quality(
        dask_cluster: DaskCluster, tmp_path: Path, tiny_dataset_dir: Path, capsys: pytest.CaptureFixture) -> None:
    matrix = write_matrix(tmp_path / "tiny.toml", threads=[1, 2], accuracy=False)  # 2 models, each timed twice
    store = tmp_path / "s.sqlite"
    common = ["run", str(matrix), "--store", str(store), "--data-dir", str(tiny_dataset_dir), "--no-report"]
    assert main([*common, "--cluster", dask_cluster.address]) == 0
    assert main(common) == 0
    with open_store(store, create=False) as opened:
        on_cluster, local = (opened.frame([run_id]) for run_id in opened.runs_frame()["run_id"])
    capsys.readouterr()
    assert main(["export", on_cluster["run_id"][0], "--store", str(store), "--format", "csv"]) == 0
    exported = capsys.readouterr().out.splitlines()
    assert "info.machine_id" in exported[0].split(",")
    assert on_cluster["key"].tolist() == local["key"].tolist()
    quality = [column for column in local.columns if column.startswith("quality.")]
    assert len(quality) >= 5
    assert on_cluster[quality].equals(local[quality])  # bit-identical: same seed, same thread count
    assert set(on_cluster["info.cluster_worker"]) <= set(dask_cluster.addresses.values())
    assert on_cluster["info.machine_id"].notna().all() and "info.cluster_worker" not in local.columns
    fingerprint = ["info.machine_id", "info.hostname", "info.cpu_model", "info.cpu_logical_cores", "info.ram_gb",
                   "info.keras", "info.backend_version"]
    assert on_cluster[fingerprint].notna().all().all()  # the node's machine, per cell
    trained_by = dict(zip(on_cluster["key"], on_cluster["info.trained_by"]))
    assert sum(key == trainer for key, trainer in trained_by.items()) == 2  # the 1-thread cells timed sent weights


def test_a_local_cluster_is_on_127_0_0_1_and_leaves_each_lost_worker_to_aebench() -> None:
    with cluster.connect("local:2") as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2 and all(address.startswith("tcp://127.0.0.1:") for address in workers)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 0
        assert {node.usable_cpus for node in cluster.survey(client)} == {len(os.sched_getaffinity(0))}


@pytest.mark.slow
def test_a_cluster_run_interrupted_after_its_training_cell_resumes_with_the_weights_it_kept(
        dask_cluster: DaskCluster, tmp_path: Path, tiny_dataset_dir: Path) -> None:
    matrix = write_matrix(tmp_path / "tiny.toml", variants=["undercomplete"], threads=[1, 2], accuracy=False)
    store = tmp_path / "s.sqlite"
    common = ["run", str(matrix), "--store", str(store), "--data-dir", str(tiny_dataset_dir), "--no-report",
              "--cluster", dask_cluster.address]
    log = tmp_path / "driver.log"
    with open(log, "w") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "aebench.cli", *common], stderr=stderr)
    try:
        deadline = time.monotonic() + 180
        stored = 0
        while stored == 0:  # the training cell (2 threads) comes back first; its 1-thread cell is then sent out
            assert time.monotonic() < deadline and driver.poll() is None, log.read_text()
            time.sleep(0.1)
            try:  # the file comes first, then its schema, then the run's row
                with open_store(store, create=False) as opened:
                    if not opened.runs_frame().empty:
                        stored = len(opened.results(opened.resolve_run(None), with_artifacts=False))
            except UserError:
                continue
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) == 130, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    with open_store(store, create=False) as opened:
        run_id = opened.resolve_run(None)
        assert opened.run_record(run_id)["status"] == "interrupted"
        (trainer,) = opened.results(run_id, with_artifacts=False)
    assert trainer.cell.threads == 2 and trainer.info["trained_by"] == trainer.cell.key

    resumed = subprocess.run([sys.executable, "-m", "aebench.cli", *common, "--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run {run_id}: 1 cells stored, 1 to run" in resumed.stderr
    with open_store(store, create=False) as opened:
        assert opened.run_record(run_id)["status"] == "complete"
        results = {result.cell.threads: result for result in opened.results(run_id, with_artifacts=False)}
    timer = results[1]
    assert timer.status == "ok" and results[2] == trainer
    assert timer.info["trained_by"] == trainer.cell.key  # it timed the weights the first invocation trained
    assert timer.metrics["quality.psnr_db"] == trainer.metrics["quality.psnr_db"]
