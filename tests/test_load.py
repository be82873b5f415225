"""Load checks on fake counters and a fake clock: what other processes, the hypervisor and memory stalls took."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from aebench import load
from aebench.load import LoadMonitor, Snapshot, Window


def test_other_processes_are_the_cpus_busy_time_less_the_cells_own() -> None:
    start = Snapshot(wall_s=0.0, busy_s=0.0, steal_s=0.0, own_s=0.0, memory_stall_us=0.0)
    # 2 s on 2 CPUs: 4 CPU-seconds, of which the cell used 2.5 and the CPUs were busy 3.7 in all
    end = Snapshot(wall_s=2.0, busy_s=3.7, steal_s=0.4, own_s=2.5, memory_stall_us=300_000.0)
    window = Window.between("training", start, end, cpus=2)
    assert window.other_cpu_pct == pytest.approx(30.0) and window.steal_pct == pytest.approx(10.0)
    assert window.memory_pressure_pct == pytest.approx(15.0)
    assert window.breaches() == [
        "other processes used 30% of the cell's CPUs during training (limit 10%)",
        "the hypervisor stole 10% of the cell's CPU time during training (limit 5%)",
        "tasks stalled on memory 15% of the time during training (limit 10%)"]


def test_a_cell_alone_is_clean_and_a_missing_psi_is_no_figure() -> None:
    start = Snapshot(0.0, 0.0, 0.0, 0.0, None)
    window = Window.between("inference", start, Snapshot(1.0, 1.02, 0.0, 1.0, None), cpus=1)
    assert window.other_cpu_pct == pytest.approx(2.0) and window.memory_pressure_pct is None
    assert window.breaches() == []
    # The cell's own time is measured finely, the CPUs' in 10 ms ticks: never a negative share.
    assert Window.between("x", start, Snapshot(1.0, 0.99, 0.0, 1.0, None), cpus=1).other_cpu_pct == 0.0


def _fake_counters(states: Sequence[tuple[float, float, float]]) -> Callable[..., Snapshot]:
    """A snapshot function that replays (wall, busy, own) states, one per call."""
    queue = list(states)

    def take(cpus: Sequence[int], clock: Callable[[], float]) -> Snapshot:
        wall, busy, own = queue.pop(0)
        return Snapshot(wall, busy, 0.0, own, None)

    return take


def test_the_monitor_names_the_phase_that_was_busy_and_merges_short_windows() -> None:
    take = _fake_counters([(0.0, 0.0, 0.0),  # started
                           (3.0, 3.0, 3.0),  # setup: the cell alone
                           (3.1, 3.1, 3.1),  # 0.1 s later: too short, merged into the next window
                           (8.0, 8.0, 5.5),  # training, with the 0.1 s before it: half the CPU went elsewhere
                           (10.0, 10.0, 7.9)])  # inference: 5% elsewhere
    monitor = LoadMonitor([0], take=take)
    for phase in ("setup", "nothing", "training", "inference"):
        monitor.mark(phase)
    assert [(w.phase, round(w.seconds, 1)) for w in monitor.windows] == [("setup", 3.0), ("training", 5.0),
                                                                           ("inference", 2.0)]
    assert monitor.reason() == "other processes used 50% of the cell's CPUs during training (limit 10%)"
    metrics = monitor.metrics()
    assert metrics["speed.contaminated"] == 1.0 and metrics["speed.load_other_cpu_pct"] == pytest.approx(50.0)
    assert metrics["speed.load_memory_pressure_pct"] is None


def test_a_quiet_cell_is_not_contaminated() -> None:
    monitor = LoadMonitor([0, 1], take=_fake_counters([(0.0, 0.0, 0.0), (4.0, 8.0, 7.9)]))
    monitor.mark("training")
    assert monitor.reason() is None and monitor.metrics()["speed.contaminated"] == 0.0


def test_a_real_snapshot_reads_this_machine() -> None:
    snap = load.snapshot([0])
    assert snap.busy_s > 0 and snap.own_s > 0 and math.isfinite(snap.wall_s)


def test_the_cells_finished_child_processes_are_its_own_work() -> None:
    """XLA compiles a JAX cell's GPU kernels in ptxas subprocesses: their CPU time is the cell's, not another
    process's. A child that burns 0.3 s of CPU moves the cell's own seconds by at least that much."""
    import subprocess
    import sys

    before = load.snapshot([0])
    burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert load.snapshot([0]).own_s - before.own_s >= 0.3


def test_wait_for_idle_waits_for_quiet_cpus_or_gives_up_saying_so() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sampler(loads: list[float]) -> Callable[[Sequence[int]], float]:
        def sample(cpus: Sequence[int]) -> float:
            now[0] += 0.5
            return loads.pop(0)
        return sample

    notes: list[str] = []
    waited = load.wait_for_idle([0], 10.0, notes.append, sample=sampler([90.0, 60.0, 3.0]), clock=clock)
    assert waited == {"waited_idle_s": 1.5, "load_before_pct": 3.0} and notes == []
    now[0] = 0.0
    waited = load.wait_for_idle([0, 1], 1.0, notes.append, sample=sampler([90.0] * 10), clock=clock)
    assert waited["load_before_pct"] == 90.0 and waited["waited_idle_s"] == 1.0
    assert notes and "still 90% busy after waiting 1 s" in notes[0]


def test_cpu_seconds_are_read_by_cpu_id_with_an_offline_cpu(tmp_path) -> None:
    import os

    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {3 * tick} 0 0 0 0 0 0 0 0 0\n"  # the total line is not a CPU
                    f"cpu0 {tick} 0 {tick} 500 0 0 0 {tick // 2} 0 0\n"
                    f"cpu2 0 {tick} 0 500 0 {tick} {tick} 0 0 0\n"  # cpu1 is offline: no line
                    "intr 123\n")
    assert load.cpu_seconds(stat) == {0: (2.0, 0.5), 2: (3.0, 0.0)}


def test_a_last_window_shorter_than_the_minimum_is_judged_not_dropped() -> None:
    monitor = LoadMonitor([0], take=_fake_counters([(0.0, 0.0, 0.0), (5.0, 5.0, 5.0), (5.1, 5.1, 5.05)]))
    monitor.mark("training")
    monitor.mark("inference", last=True)
    assert [w.phase for w in monitor.windows] == ["training", "inference"]
    assert monitor.windows[1].other_cpu_pct == pytest.approx(50.0)
