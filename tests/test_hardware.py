"""aebench hardware: two synthetic machines, B twice as fast as A on conv and 1.5 times on the dense variant."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from aebench import hardware, stats
from aebench.cli import main
from aebench.config import Matrix
from aebench.results import CellResult
from aebench.scenarios import Latency, Samples
from aebench.store import Store, open_store
from support import tiny_matrix_dict

FASTER_B = {"conv": 2.0, "undercomplete": 1.5}
TRAIN_IPS = {"conv": 1000.0, "undercomplete": 4000.0}
LATENCY_S = 0.001
EVIL = "<script>alert('x')</script>"
RUN_A, RUN_B = "20260101T000000-aaaaaa", "20260102T000000-bbbbbb"


def _environment(machine: str, **differences: object) -> dict:
    return {"machine_id": machine, "git_commit": "c" * 40, "python": "3.11.9", "os": "Linux-6.8",
            "cpu_model": "Intel Xeon", "cpu_logical_cores": 2, "ram_gb": 8.0, "version.tensorflow": "2.16.1",
            **differences}


MACHINE_A = _environment("aaaa")
MACHINE_B = _environment("bbbb", cpu_model="AMD EPYC", cpu_logical_cores=8, ram_gb=64.0,
                         **{"version.tensorflow": "2.17.0"})


def _add_run(store: Store, run_id: str, environment: Mapping, *, faster: Mapping[str, float] | None = None,
             jitter: float = 1.0, seeds: int = 1, psnr_shift: Mapping[str, float] | None = None,
             psnr_per_seed: float = 0.0, timed_on: Mapping[str, Mapping] | None = None,
             backend_device: Mapping[str, str] | None = None, **matrix_overrides: object) -> None:
    """One run of conv + undercomplete: the same latency samples on every machine (a cell's own generator), divided
    by the machine's speed-up; ``jitter`` slows the whole run down as run-to-run noise does. ``timed_on`` gives a
    variant's cells the fingerprint of the machine that ran them, as a cluster's node stores its own;
    ``backend_device`` gives each device configuration (cpu1, gpu) the device its cells report."""
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv", "undercomplete"], repeats=seeds, **matrix_overrides))
    store.begin_run(matrix, environment, [], run_id=run_id)
    for cell in matrix.cells():
        factor = (faster or {}).get(cell.variant, 1.0)
        seconds = np.random.default_rng(cell.index).lognormal(math.log(LATENCY_S), 0.1, 400) / factor * jitter
        latency = Latency(Samples(seconds, float(seconds.sum()), False)).metrics()
        metrics = {
            "speed.train_ips": TRAIN_IPS[cell.variant] * factor / jitter,
            "speed.infer_ips": 10 * TRAIN_IPS[cell.variant] * factor / jitter,
            "speed.latency_b1_p50_ms": latency["speed.latency_b1_p50_ms"],
            "speed.latency_b1_p99_ms": latency["speed.latency_b1_p99_ms"],
            "quality.psnr_db": 20.0 + psnr_per_seed * cell.seed + (psnr_shift or {}).get(cell.variant, 0.0),
        }
        node = (timed_on or {}).get(cell.variant, {})
        info = {key: node[key] for key in ("machine_id", "hostname", "cpu_model", "cpu_logical_cores", "ram_gb")
                if key in node}
        device = cell.key.split("/")[2]
        if backend_device and device in backend_device:
            info["backend_device"] = backend_device[device]
        store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0, metrics=metrics, info=info,
                                            artifacts={"latency_b1_s": seconds}))
    store.finish_run(run_id, "complete", 1.0, {})


@pytest.fixture
def single_runs(tmp_path: Path) -> tuple[Path, Path]:
    """One run per machine, one seed, in two store files; B's conv PSNR is 0.5 dB off, its dense PSNR identical."""
    with open_store(tmp_path / "a.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
    with open_store(tmp_path / "b.sqlite") as store:
        _add_run(store, RUN_B, {**MACHINE_B, "os": EVIL}, faster=FASTER_B, psnr_shift={"conv": 0.5})
    return tmp_path / "a.sqlite", tmp_path / "b.sqlite"


@pytest.fixture
def repeated_runs(tmp_path: Path) -> Path:
    """Three runs x two seeds per machine in one store; PSNR moves 1 dB from seed to seed, and B's conv is 0.5 off."""
    with open_store(tmp_path / "s.sqlite") as store:
        for day, jitter in enumerate([1.0, 1.03, 0.97]):
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", MACHINE_A, jitter=jitter, seeds=2,
                     psnr_per_seed=1.0)
            _add_run(store, f"2026011{day + 1}T000000-bbbbb{day}", {**MACHINE_B, "git_commit": "d" * 40},
                     faster=FASTER_B, jitter=jitter, seeds=2, psnr_per_seed=1.0, psnr_shift={"conv": 0.5})
    return tmp_path / "s.sqlite"


def _compare(*operands: str, store: Path) -> hardware.HardwareComparison:
    return hardware.compare_machines(hardware.load_machines(operands, store))


def _ratio(comparison: hardware.HardwareComparison, variant: str, metric: str) -> hardware.SpeedRatio:
    (found,) = [r for r in comparison.ratios if r.variant == variant and r.metric == metric]
    return found


def test_single_runs_bootstrap_latency_and_leave_throughput_without_interval(single_runs: tuple[Path, Path]) -> None:
    a, b = single_runs
    comparison = _compare(RUN_A, f"{b}:{RUN_B}", store=a)
    for variant, factor in FASTER_B.items():
        for metric in ("speed.latency_b1_p50_ms", "speed.latency_b1_p99_ms"):
            ratio = _ratio(comparison, variant, metric)
            assert ratio.method == hardware.WITHIN_RUN and ratio.counts == (1, 1)
            assert ratio.ratio == pytest.approx(factor, rel=1e-9)  # reference latency / B's: above 1 is faster
            assert factor * 0.9 < ratio.low < factor < ratio.high < factor * 1.1
        for metric in ("speed.train_ips", "speed.infer_ips"):
            ratio = _ratio(comparison, variant, metric)
            assert ratio.ratio == pytest.approx(factor) and ratio.method == hardware.NO_INTERVAL
            assert math.isnan(ratio.low) and ratio.verdict == ""


def test_repeats_give_welch_intervals_and_verdicts(repeated_runs: Path) -> None:
    comparison = _compare("commit:cccc", "commit:dddd", store=repeated_runs)
    for variant, factor in FASTER_B.items():
        for metric in ("speed.train_ips", "speed.latency_b1_p50_ms"):
            ratio = _ratio(comparison, variant, metric)
            assert ratio.method == hardware.WELCH and ratio.counts == (3, 3)  # runs: two seeds of one run are one
            assert ratio.ratio == pytest.approx(factor, rel=1e-9)
            assert ratio.low < factor < ratio.high and ratio.verdict == "faster"


def test_geometric_means_per_variant_and_overall(single_runs: tuple[Path, Path]) -> None:
    a, b = single_runs
    means = _compare(RUN_A, f"{b}:{RUN_B}", store=a).geomeans
    train = means[means["metric"] == "speed.train_ips"].set_index("variant")
    assert train.loc["all", "geomean"] == pytest.approx(math.sqrt(2.0 * 1.5))
    assert train.loc["conv", "geomean"] == pytest.approx(2.0)
    assert train.loc["undercomplete", "geomean"] == pytest.approx(1.5)
    assert train["cells"].to_dict() == {"all": 2, "conv": 1, "undercomplete": 1}


def test_environment_diff_side_by_side(single_runs: tuple[Path, Path]) -> None:
    a, b = single_runs
    comparison = _compare(RUN_A, f"{b}:{RUN_B}", store=a)
    table = comparison.environment.set_index("key")
    assert list(table.columns) == ["aaaa", "bbbb"]
    assert list(table.index) == ["os", "cpu_model", "cpu_logical_cores", "ram_gb", "version.tensorflow"]
    assert table.loc["cpu_model"].tolist() == ["Intel Xeon", "AMD EPYC"]
    assert comparison.same_environment == {"git_commit": "c" * 40, "python": "3.11.9"}


def test_divergence_beyond_the_margin_with_one_seed(single_runs: tuple[Path, Path]) -> None:
    a, b = single_runs
    checks = {c.key.split("/")[0]: c for c in _compare(RUN_A, f"{b}:{RUN_B}", store=a).quality}
    assert checks["conv"].difference == pytest.approx(0.5) and checks["conv"].basis == "margin"
    assert checks["conv"].threshold == 0.1 and checks["conv"].diverges
    assert checks["undercomplete"].difference == 0.0 and not checks["undercomplete"].diverges


def test_divergence_beyond_the_margin_is_flagged_even_within_a_wider_seed_spread(repeated_runs: Path) -> None:
    checks = [c for c in _compare("commit:cccc", "commit:dddd", store=repeated_runs).quality
              if c.key.startswith("conv/")]
    assert len(checks) == 2  # one per seed
    for check in checks:  # the seeds spread by 0.71 dB, but 0.5 dB is past the 0.1 dB margin
        assert check.basis == "margin" and check.threshold == 0.1
        assert check.difference == pytest.approx(0.5) and check.diverges


def test_divergence_beyond_a_seed_spread_narrower_than_the_margin(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day in range(2):  # seeds 0.02 dB apart: a spread of 0.014 dB, under the 0.1 dB margin
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", MACHINE_A, seeds=2, psnr_per_seed=0.02)
            _add_run(store, f"2026011{day + 1}T000000-bbbbb{day}", {**MACHINE_B, "git_commit": "d" * 40}, seeds=2,
                     psnr_per_seed=0.02, psnr_shift={"conv": 0.05, "undercomplete": 0.01})
    checks = _compare("commit:cccc", "commit:dddd", store=tmp_path / "s.sqlite").quality
    assert {c.basis for c in checks} == {"seed spread"}
    assert all(c.threshold == pytest.approx(0.02 / math.sqrt(2)) for c in checks)
    assert {c.key.split("/")[0]: c.diverges for c in checks} == {"conv": True, "undercomplete": False}


def test_cli_text_and_page(single_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = single_runs
    monkeypatch.chdir(tmp_path)
    assert main(["hardware", RUN_A, f"{b}:{RUN_B}", "--store", str(a)]) == 0
    out = capsys.readouterr().out
    assert "2.00×" in out and "1.50×" in out and "within-run samples only: understates run-to-run noise" in out
    assert "none: one figure per run (throughput)" in out and "1 of 2 quality figures diverge" in out
    assert "same on every machine: git_commit=" in out and "AMD EPYC" in out
    page = (tmp_path / "reports" / "hardware" / f"{RUN_A}-vs-{RUN_B}.html").read_text(encoding="utf-8")
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page
    # The store's text escaped; the one script is the page's own table sorter.
    assert page.count("<script") == 1 and "<script>alert" not in page and "&lt;script&gt;" in page
    for needle in ("<h2>Speed ratios</h2>", "<h2>Geometric means</h2>", "<h2>Environment</h2>",
                   "<h2>Quality across hardware</h2>", "<table", "2.00×", "AMD EPYC", "DIVERGES",
                   "within-run samples only"):
        assert needle in page, needle


def test_out_names_the_page(single_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = single_runs
    assert main(["hardware", RUN_A, f"{b}:{RUN_B}", "--store", str(a), "--out", str(tmp_path / "p" / "x.html")]) == 0
    assert "<h2>Speed ratios</h2>" in (tmp_path / "p" / "x.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("operands, message", [
    (["A", "A2"], "are the same machine"),
    (["A", "nope"], "'nope' matches no run"),
    (["A,B", "A2"], "mixes machines"),
    (["A", "B:x"], "is invalid: allowed RUN"),
    (["A", "missing.sqlite:x"], "no result store at missing.sqlite"),
    (["A", "b.sqlite:"], "is invalid: allowed RUN"),
    (["A"], "at least two operands"),
    (["A", "OTHER_SETTINGS"], "epochs: 2 -> 3"),
    (["A@cpu1", "B"], "names no device while"),
    (["A@gpu", "B@cpu1"], "no ok cell ran on device 'gpu': allowed cpu1"),
    (["A@cpu1", "A@cpu1"], "are the same machine and device (aaaa@cpu1)"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, operands: list[str], message: str,
                                              capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
        _add_run(store, "20260103T000000-aaaaa2", MACHINE_A)
        _add_run(store, RUN_B, MACHINE_B)
        _add_run(store, "20260104T000000-cccccc", _environment("cccc"), epochs=3)
    (tmp_path / "b.sqlite").touch()  # exists, so only the missing run is at fault
    aliases = {"A": RUN_A, "A2": "20260103T000000-aaaaa2", "B": RUN_B, "OTHER_SETTINGS": "20260104T000000-cccccc"}
    operands = [",".join(aliases.get(part, part) for part in operand.split(",")) for operand in operands]
    operands = [aliases.get(operand.split("@")[0], "") + "@" + operand.split("@")[1] if "@" in operand else operand
                for operand in operands]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["hardware", *operands, "--store", "s.sqlite"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no reports/ folder, no page


def test_out_must_be_a_file(single_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = single_runs
    assert main(["hardware", RUN_A, f"{b}:{RUN_B}", "--store", str(a), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err and not list(tmp_path.glob("*.html"))
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "h.html"
    assert main(["hardware", RUN_A, f"{b}:{RUN_B}", "--store", str(a), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot be written" in err and len(err.strip().splitlines()) == 1


def test_cells_on_one_machine_only_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
        _add_run(store, RUN_B, MACHINE_B, faster=FASTER_B, threads=[1, 2])
    assert main(["hardware", RUN_A, RUN_B, "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "p.html")]) == 0
    out = capsys.readouterr().out
    assert "(not compared): conv/gaussian0.2/cpu2/tensorflow/float32/seed0, undercomplete/gaussian0.2/cpu2" in out


def test_one_workload_on_a_cpu_against_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """OPERAND@DEVICE keeps one device configuration and matches cells without their device: machine A's 2-thread
    CPU cells against machine B's GPU cells of the same matrix, and one machine's CPU against its own GPU."""
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A, threads=[1, 2])
        _add_run(store, RUN_B, MACHINE_B, faster=FASTER_B, device=["gpu"])
    with open_store(tmp_path / "own.sqlite") as store:
        _add_run(store, "20260105T000000-eeeeee", _environment("eeee"), device=["cpu", "gpu"],
                 backend_device={"cpu1": "cpu:0 (cpu)", "gpu": "cuda:0 (NVIDIA H200)"})
    location, own_store = tmp_path / "s.sqlite", tmp_path / "own.sqlite"
    assert not _compare(RUN_A, RUN_B, store=location).ratios  # keys with their devices: no cell in common
    comparison = _compare(f"{RUN_A}@cpu2", f"{RUN_B}@gpu", store=location)
    assert [machine.label for machine in comparison.machines] == ["aaaa@cpu2", "bbbb@gpu"]
    for variant, factor in FASTER_B.items():
        assert _ratio(comparison, variant, "speed.train_ips").ratio == pytest.approx(factor)
    assert not comparison.unmatched  # the 1-thread cells were left out, not unmatched
    assert {check.key for check in comparison.quality} == {"conv/gaussian0.2/tensorflow/float32/seed0",
                                                          "undercomplete/gaussian0.2/tensorflow/float32/seed0"}
    own = _compare(f"{own_store}:20260105T000000-eeeeee@cpu1", f"{own_store}:20260105T000000-eeeeee@gpu",
                   store=location)  # PATH.sqlite:RUN@DEVICE
    assert [machine.label for machine in own.machines] == ["eeee@cpu1", "eeee@gpu"]
    assert _ratio(own, "conv", "speed.train_ips").ratio == pytest.approx(1.0)
    assert own.environment.set_index("key").loc["backend_device"].tolist() == ["cpu:0 (cpu)", "cuda:0 (NVIDIA H200)"]
    pages = {hardware.default_page_path(machines) for machines in
             (own.machines, own.machines[::-1], comparison.machines)}
    assert len(pages) == 3  # one run on two devices names two pages, not one that the next overwrites
    assert main(["hardware", f"{RUN_A}@cpu2", f"{RUN_B}@gpu", "--store", str(location),
                 "--out", str(tmp_path / "p.html")]) == 0
    out = capsys.readouterr().out
    assert "machine:   bbbb@gpu" in out and "aaaa@cpu2" in out and "(2 ok cells on other devices left out)" in out
    assert "(not compared)" not in out
    assert "bbbb@gpu" in (tmp_path / "p.html").read_text()


def test_a_cluster_runs_machine_is_the_one_that_timed_its_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run driven from machine A whose cells ran on B's node is B's: its ratios, its CPU, and it is not 'the same
    machine' as A's own run."""
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
        _add_run(store, RUN_B, MACHINE_A, faster=FASTER_B, timed_on={"conv": MACHINE_B, "undercomplete": MACHINE_B})
    comparison = hardware.compare_machines(hardware.load_machines([RUN_A, RUN_B], tmp_path / "s.sqlite"))
    assert [machine.machine_id for machine in comparison.machines] == ["aaaa", "bbbb"]
    assert comparison.machines[1].environment["cpu_model"] == "AMD EPYC"
    overall = comparison.geomeans.set_index(["metric", "variant"]).loc[("speed.train_ips", hardware.ALL_VARIANTS)]
    assert (overall["machine"], overall["geomean"]) == ("bbbb", pytest.approx(math.sqrt(2.0 * 1.5), rel=1e-6))


def test_an_operand_whose_cells_ran_on_two_machines_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
        _add_run(store, RUN_B, MACHINE_A, timed_on={"conv": MACHINE_B, "undercomplete": _environment("cccc")})
    assert main(["hardware", RUN_A, RUN_B, "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "p.html")]) == 2
    assert "mixes machines (bbbb, cccc)" in capsys.readouterr().err and not (tmp_path / "p.html").exists()


def test_force_compares_runs_whose_settings_differ(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        _add_run(store, RUN_A, MACHINE_A)
        _add_run(store, RUN_B, MACHINE_B, faster=FASTER_B, epochs=3)
    args = ["hardware", RUN_A, RUN_B, "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "p.html")]
    assert main(args) == 2 and not (tmp_path / "p.html").exists()
    assert main([*args, "--force"]) == 0
    assert "note: --force: the settings differ (bbbb: epochs: 2 -> 3)" in capsys.readouterr().out


def test_sample_statistics_reproduce_the_stored_latency_figures() -> None:
    seconds = np.random.default_rng(3).lognormal(math.log(LATENCY_S), 0.3, 1000)  # enough for a stated p99.9
    figures = Latency(Samples(seconds, float(seconds.sum()), False)).metrics()
    for metric, statistic in hardware.SAMPLE_STATISTICS.items():
        assert float(statistic(seconds * 1e3, axis=-1)) == pytest.approx(figures[metric], rel=1e-12), metric


def test_bootstrap_log_ratio_covers_the_true_ratio_and_needs_samples() -> None:
    base = np.random.default_rng(1).lognormal(0.0, 0.2, 300)
    candidate = np.random.default_rng(2).lognormal(math.log(3.0), 0.2, 300)
    gain = stats.bootstrap_log_ratio(base, candidate, hardware.SAMPLE_STATISTICS["speed.latency_b1_p50_ms"])
    assert gain.low < math.log(3.0) < gain.high and gain.high - gain.low < 0.15 and gain.n == 300
    assert gain == stats.bootstrap_log_ratio(base, candidate, hardware.SAMPLE_STATISTICS["speed.latency_b1_p50_ms"])
    with pytest.raises(ValueError, match="at least two"):
        stats.bootstrap_log_ratio([1.0], candidate, np.mean)


def test_runs_pushed_from_two_machines_to_a_shared_postgres_store_read_as_from_files(
        repeated_runs: Path, postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A fleet: one store file per machine, pushed to one PostgreSQL database, then every reading command on it."""
    machine_a, machine_b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with open_store(repeated_runs, create=False) as both:
        for run_id in both.runs_frame()["run_id"]:
            with open_store(machine_a if "aaaa" in run_id else machine_b) as own:
                own.receive_run(both.copy_of_run(run_id))
    for local in (machine_a, machine_b):
        assert main(["push", "all", "--to", postgres_url, "--store", str(local)]) == 0
    assert capsys.readouterr().out.count("4 of 4 cells copied") == 6
    assert main(["push", "all", "--to", postgres_url, "--store", str(machine_a)]) == 0
    assert capsys.readouterr().out.count("already there, nothing copied") == 3

    assert main(["list", "--store", postgres_url]) == 0
    listed = capsys.readouterr().out
    assert all(machine in listed for machine in ("aaaa", "bbbb")) and listed.count("complete") == 6
    assert main(["export", "20260101T000000-aaaaa0", "--store", postgres_url]) == 0
    exported = capsys.readouterr().out
    assert main(["export", "20260101T000000-aaaaa0", "--store", str(machine_a)]) == 0
    assert exported == capsys.readouterr().out  # the same table from either backend
    shared = ["commit:cccc", "commit:dddd", "--store", postgres_url, "--out", str(tmp_path / "hw.html")]
    assert main(["hardware", *shared]) == 0
    from_pg = capsys.readouterr().out
    assert main(["hardware", "commit:cccc", "commit:dddd", "--store", str(repeated_runs),
                 "--out", str(tmp_path / "hw-file.html")]) == 0
    from_file = capsys.readouterr().out
    assert from_pg.replace(postgres_url, "STORE") == from_file.replace(str(repeated_runs), "STORE")
    assert main(["compare", "20260101T000000-aaaaa0", "20260102T000000-aaaaa1", "--store", postgres_url]) == 0
    assert "candidate: 20260102T000000-aaaaa1  commit cccccccccc  machine aaaa" in capsys.readouterr().out
    with open_store(machine_a) as own:  # a fourth run, for a history of two segments of two
        _add_run(own, "20260104T000000-aaaaa3", MACHINE_A, jitter=1.01, seeds=2, psnr_per_seed=1.0)
    assert main(["push", "latest", "--to", postgres_url, "--store", str(machine_a)]) == 0
    assert "20260104T000000-aaaaa3: 4 of 4 cells copied" in capsys.readouterr().out
    history = ["history", "--machine", "aaaa", "--min-segment", "2", "--out", str(tmp_path / "h.html")]
    assert main([*history, "--store", postgres_url]) == 0
    from_pg = capsys.readouterr().out
    assert main([*history, "--store", str(machine_a)]) == 0
    assert from_pg.replace(postgres_url, "STORE") == capsys.readouterr().out.replace(str(machine_a), "STORE")
    assert "history of machine aaaa, matrix tiny: 4 complete runs" in from_pg
