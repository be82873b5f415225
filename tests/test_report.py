"""The HTML report: self-contained, complete, escaped, and robust to runs with missing metrics or no ok cell.

Regenerate the golden results table after an intended change with `make golden` (a plain test run never writes it),
and review the diff of tests/golden/results_table.html before committing it.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aebench import report
from aebench.config import Cell, Matrix
from aebench.metrics import REGISTRY, fixed
from aebench.report import quality, results, throughput
from aebench.report.latency import latency_cells
from aebench.report.page import Run
from aebench.report.results import RESULT_COLUMNS, results_table
from aebench.report.table import NA, UNSTABLE_LEGEND, Column
from aebench.results import CellResult
from aebench.store import Store, open_store
from support import assert_matches_golden

GOLDEN = Path(__file__).parent / "golden" / "results_table.html"
SECTION_TITLES = [section.title for section in report.SECTIONS]
EVIL = "<script>alert('x')</script>"


def small_matrix(**overrides: object) -> Matrix:
    raw = {"name": "report-test", "dataset": "mnist", "variants": ["conv", "undercomplete"], "noise": [0.0, 0.5],
           "threads": [1, 2], "epochs": 2, "train_size": 64, "test_size": 64, "throughput": {"batch_size": 32}}
    raw.update(overrides)
    return Matrix.from_dict(raw)


def ok_result(cell: Cell, rng: np.random.Generator) -> CellResult:
    """Plausible numbers: quality falls with noise, throughput grows with threads, latency is lognormal."""
    noisy_psnr = 30.0 if cell.noise == 0 else 8.0 - cell.noise
    psnr = 22.0 - 4 * cell.noise + (1.0 if cell.variant == "conv" else 0.0) + rng.normal(0, 0.05)
    threads = cell.threads or 1
    latency = rng.lognormal(np.log(0.4e-3 / threads**0.5), 0.2, 150)
    metrics = {
        "quality.psnr_db": psnr, "quality.noisy_psnr_db": noisy_psnr, "quality.gain_db": psnr - noisy_psnr,
        "quality.ssim": 0.8 - 0.1 * cell.noise, "quality.bce": 0.1 + 0.05 * cell.noise,
        "quality.mse": 10 ** (-psnr / 10),
        "speed.train_ips": 5000.0 * threads**0.8 * (0.3 if cell.variant == "conv" else 1.0),
        "speed.train_unstable": float(threads == 2), "speed.train_first_epoch_s": 2.5,
        "speed.infer_ips": 40000.0 * threads**0.9, "speed.infer_unstable": 0.0,
        "speed.latency_b1_p50_ms": float(np.percentile(latency, 50) * 1e3),
        "speed.latency_b1_p90_ms": float(np.percentile(latency, 90) * 1e3),
        "speed.latency_b1_p99_ms": float(np.percentile(latency, 99) * 1e3),
        "speed.latency_b1_p999_ms": float(np.percentile(latency, 99.9) * 1e3),
        "speed.latency_b1_unstable": float(cell.noise > 0),
        "speed.predict_b1_p50_ms": 30.0, "speed.cold_start_s": 1.2, "memory.peak_rss_mb": 812.0,
        **accuracy_metrics(cell, rng),
    }
    info = {"backend_device": "CPU", "inference_path": "tf.function", "train_input": "numpy",
            "intra_op_threads": threads, "pid": 1234}
    grids = {name: rng.integers(0, 256, (15, 28, 28), dtype=np.uint8)
             for name in ("grid_clean", "grid_noisy", "grid_denoised")}
    artifacts = {**grids, "grid_labels": np.arange(15) % 10, "latency_b1_s": latency}
    return CellResult(cell=cell, status="ok", duration_s=3.0, metrics=metrics, info=info, exit_code=0,
                      artifacts=artifacts)


def accuracy_metrics(cell: Cell, rng: np.random.Generator) -> dict[str, float]:
    """aebench.accuracy's columns: accuracy falls with noise and denoising wins part of it back; PSNR falls with the
    test noise level of the robustness sweep."""
    noisy = 0.99 - 0.6 * cell.noise
    metrics = {
        "quality.acc_clean": 0.99, "quality.acc_noisy": noisy,
        "quality.acc_denoised": noisy + 0.5 * (0.99 - noisy) + rng.normal(0, 0.002),
        "quality.probe_acc": 0.9 + rng.normal(0, 0.005),
        "diag.mean_activation": 0.2 if cell.variant == "conv" else 1.5, "diag.near_zero_fraction": 0.4,
        "diag.dead_unit_fraction": 0.1, "diag.mse_digit0": 0.01, "diag.mse_digit7": 0.02,
    }
    if cell.noise > 0:
        metrics["quality.acc_recovered"] = 0.5
    for level in (0.0, 0.25, 0.5):
        metrics[f"robust.psnr_db@{level:g}"] = 22.0 - 8 * level + rng.normal(0, 0.05)
        metrics[f"robust.noisy_psnr_db@{level:g}"] = 120.0 if level == 0 else 12.0 - 8 * level
    metrics["robust.psnr_auc"] = 20.0
    return metrics


def failed_result(cell: Cell) -> CellResult:
    return CellResult(cell=cell, status="failed", duration_s=1.0, exit_code=1, error=f"RuntimeError: {EVIL}",
                      stderr_tail=f"Traceback (most recent call last):\n  File \"x.py\"\nRuntimeError: {EVIL} & more")


def skipped_result(cell: Cell) -> CellResult:
    return CellResult(cell=cell, status="skipped", duration_s=0.0, error="no GPU visible to tensorflow on this machine")


ENVIRONMENT = {"cpu_model": "Test CPU <v2>", "cpu_logical_cores": 2, "ram_gb": 7.7, "os": "Linux", "python": "3.12",
               "version.keras": "3.9", "git_commit": "abc123", "git_dirty": True, "machine_id": "m1"}


def fill_run(store: Store, results: list[CellResult], run_id: str | None = None, finish: bool = True) -> str:
    run_id = store.begin_run(small_matrix(), ENVIRONMENT, ["aebench", "run", "t"], run_id=run_id)
    for result in results:
        store.add_result(run_id, result)
    if finish:
        store.finish_run(run_id, "complete", 12.5, {"wall_s": 12.5, "measured_s": 10.0, "overhead_s": 2.5,
                                                    "overhead_pct": 20.0, "cells_ok": 8, "cells_failed": 1})
    return run_id


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One store with 8 ok cells (2 variants x 2 noise x 2 threads), one failed and one skipped; report written."""
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    cells = small_matrix().cells()
    results = [ok_result(cell, rng) for cell in cells]
    extra = dataclasses.replace(cells[0], index=len(cells), variant="sparse_l1")
    results.append(failed_result(extra))
    results.append(skipped_result(dataclasses.replace(extra, index=len(cells) + 1, device="gpu", threads=None)))
    with open_store(tmp / "s.sqlite") as store:
        run_id = fill_run(store, results)
        path = report.write_report(store, run_id, tmp / "reports")
    return path, tmp / "reports", run_id


def test_report_is_written_with_latest_copy(full_report: tuple[Path, Path, str]) -> None:
    path, reports_dir, run_id = full_report
    assert path == reports_dir / run_id / "index.html"
    assert path.is_file()
    assert (reports_dir / "latest.html").read_bytes() == path.read_bytes()
    assert not list(path.parent.glob("*.partial")) and not list(reports_dir.glob(".*partial"))


def test_report_is_self_contained(full_report: tuple[Path, Path, str]) -> None:
    text = full_report[0].read_text(encoding="utf-8")
    assert 'src="http' not in text and "href=\"http" not in text
    assert "<link" not in text and "@import" not in text and "url(" not in text
    # One script, the page's own inline table sorter; none that loads anything.
    assert text.count("<script") == 1 and "<script>\n/* Click a column heading to sort" in text
    assert not re.search(r"<script[^>]*\bsrc=", text)


def test_report_has_every_section_in_order(full_report: tuple[Path, Path, str]) -> None:
    text = full_report[0].read_text(encoding="utf-8")
    positions = [text.index(f"<h2>{html.escape(title)}</h2>") for title in SECTION_TITLES]
    assert positions == sorted(positions)
    for needle in ("How these numbers were taken", "Run summary", "overhead_pct", "report-test", "abc123 (dirty",
                   html.escape(UNSTABLE_LEGEND), "framework path", "tf.function"):
        assert needle in text, needle


def test_report_escapes_store_text(full_report: tuple[Path, Path, str]) -> None:
    text = full_report[0].read_text(encoding="utf-8")
    assert EVIL not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text or "&lt;script&gt;alert(&#39;x&#39;)" in text
    assert "Test CPU &lt;v2&gt;" in text
    assert "<details>" in text and "&amp; more" in text  # the failed cell's stderr tail, escaped in a <pre>


def test_report_embeds_png_figures(full_report: tuple[Path, Path, str]) -> None:
    text = full_report[0].read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # the overview's Pareto figure, quality, robustness, throughput, latency CDF, one image grid per noise level
    assert len(images) == 7
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)


def test_report_content(full_report: tuple[Path, Path, str]) -> None:
    text = full_report[0].read_text(encoding="utf-8")
    assert "status-failed" in text and "status-skipped" in text
    assert re.search(r'<td [^>]*class="[^"]*\bunstable\b[^"]*" >[^<]* ≈</td>', text)
    assert "Compiled inference path in this run: tf.function." in text
    assert "speedup" in text and "efficiency" in text
    assert "Test digits: 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4" in text


def test_latest_is_only_the_newest_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cell = small_matrix().cells()[0]
    with open_store(tmp_path / "s.sqlite") as store:
        older = fill_run(store, [ok_result(cell, rng)], run_id="20000101T000000-000000")
        newest = fill_run(store, [ok_result(cell, rng)], run_id="20990101T000000-ffffff")  # started after it
        assert store.resolve_run(None) == newest
        report.write_report(store, older, tmp_path / "reports")
        assert not (tmp_path / "reports" / "latest.html").exists()
        path = report.write_report(store, newest, tmp_path / "reports")
    assert (tmp_path / "reports" / "latest.html").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_run_with_only_failed_cells_renders(tmp_path: Path) -> None:
    cells = small_matrix().cells()
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = fill_run(store, [failed_result(cells[0]), skipped_result(cells[1])])
        path = report.write_report(store, run_id, tmp_path / "reports")
    text = path.read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert f"<h2>{html.escape(title)}</h2>" in text
    assert "data:image/png" not in text and EVIL not in text
    assert "nothing to plot" in text


def test_unfinished_empty_run_renders(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = fill_run(store, [], finish=False)
        text = report.write_report(store, run_id, tmp_path / "reports").read_text(encoding="utf-8")
    assert "recorded no cells" in text and "may be partial" in text


# -- helpers on synthetic frames (no store) ----------------------------------------------------------------------------


def golden_frame() -> pd.DataFrame:
    """A fixed frame: two ok cells (one with unstable speed figures, one missing metrics), one failed cell."""
    base = {"run_id": "r", "noise_type": "gaussian", "device": "cpu", "backend": "tensorflow", "precision": "float32",
            "seed": 0, "exit_code": 0, "error": "", "duration_s": 1.0}
    rows = [
        {**base, "cell": 1, "variant": "conv", "noise": 0.5, "threads": 2, "status": "ok",
         "quality.psnr_db": 18.1234, "quality.noisy_psnr_db": 7.5, "quality.gain_db": 10.6234, "quality.ssim": 0.71234,
         "quality.bce": 0.10567, "quality.mse": 0.0154321, "speed.train_ips": 12345.6, "speed.train_unstable": 1.0,
         "speed.infer_ips": 98765.4, "speed.infer_unstable": 0.0, "speed.latency_b1_p50_ms": 0.41234,
         "speed.latency_b1_p99_ms": 12.3456, "speed.latency_b1_unstable": 1.0, "speed.predict_b1_p50_ms": 31.5,
         "speed.cold_start_s": 1.234, "memory.peak_rss_mb": 812.4},
        {**base, "cell": 0, "variant": "undercomplete", "noise": 0.0, "threads": 1, "status": "ok",
         "quality.psnr_db": 22.0, "quality.noisy_psnr_db": 100.0, "quality.gain_db": -78.0, "quality.ssim": 0.9,
         "quality.bce": 0.09, "quality.mse": 0.0063, "speed.train_ips": 4000.0, "speed.train_unstable": 0.0,
         "speed.latency_b1_p50_ms": 1234.5, "speed.latency_b1_unstable": 0.0, "memory.peak_rss_mb": 1500.0},
        {**base, "cell": 2, "variant": "conv", "noise": 1.0, "threads": 1, "status": "failed", "exit_code": 1,
         "error": "boom"},
    ]
    return pd.DataFrame(rows)


def test_results_table_matches_golden() -> None:
    assert_matches_golden(GOLDEN, str(results_table(golden_frame())))


def test_results_table_formats_and_marks() -> None:
    html_text = results_table(golden_frame())
    assert html_text.index(">undercomplete<") < html_text.index(">conv<")  # rows in cell order
    assert "12,346 ≈" in html_text and "0.412 ≈" in html_text and "12.35 ≈" in html_text
    assert "98,765" in html_text and "98,765 ≈" not in html_text
    assert "18.12" in html_text and "+10.62" in html_text and "0.01543" in html_text
    assert NA in html_text  # missing and NaN metrics render as a dash
    assert "predict() b1 p50 (ms, framework path)" in html_text
    assert ">seed<" not in html_text  # a single seed gets no column


def test_contaminated_speed_figures_are_marked_and_explained() -> None:
    frame = golden_frame()
    frame["speed.contaminated"] = [1.0, np.nan, np.nan]  # the conv cell ran beside another benchmark
    html_text = results_table(frame)
    assert "12,346 ≈ ‼" in html_text and "98,765 ‼" in html_text and "1.23 ‼" in html_text
    assert "18.12 ‼" not in html_text and "4,000 ‼" not in html_text  # quality, and the clean cell, unmarked
    assert 'class="data results"' in html_text and "contaminated" in html_text
    assert "contaminated: taken while another aebench run held the machine" in results.section(Run(frame))
    assert "contaminated: taken" not in results.section(Run(golden_frame()))


def test_contaminated_speed_figures_stay_out_of_every_figure_mean_and_ranking() -> None:
    from aebench.report import devices, overview

    rng = np.random.default_rng(0)
    cells = [c for c in small_matrix(backend=["tensorflow", "torch"]).cells() if c.noise == 0.5]
    frame = pd.DataFrame([{"cell": c.index, "variant": c.variant, "noise": c.noise, "threads": c.threads,
                           "device": c.device, "backend": c.backend, "precision": c.precision, "seed": c.seed,
                           "status": "ok", **ok_result(c, rng).metrics} for c in cells])
    # One undercomplete cell ran beside other work and "trained" 100 times faster: no figure may show that.
    dirty = (frame["variant"] == "undercomplete") & (frame["threads"] == 2) & (frame["backend"] == "torch")
    clean_mean = frame.loc[(frame["variant"] == "undercomplete") & (frame["threads"] == 2), "speed.train_ips"].mean()
    frame.loc[dirty, "speed.train_ips"] *= 100
    frame["speed.contaminated"] = dirty.astype(float)
    table = devices.device_table(frame)
    assert f"{clean_mean:,.0f}" in table and f"{clean_mean * 100:,.0f}" not in table
    winners = overview.variant_table(overview.measured_cells(frame))[0]
    assert f"{clean_mean * 100:,.0f}" not in " ".join(winners["train (img/s)"])
    artifacts = {int(cell): {"latency_b1_s": np.full(5, 1e-3)} for cell in frame["cell"]}
    assert set(latency_cells(frame, artifacts)["cell"]) == set(frame.loc[~dirty, "cell"])


def test_a_device_group_takes_the_colour_of_its_worst_cell() -> None:
    from aebench.report.devices import group_status

    errors = pd.Series(["", "", "", "boom"])
    assert group_status(pd.Series(["skipped", "skipped", "skipped", "failed"]), errors) == (
        "3 skipped, 1 failed", "failed")
    assert group_status(pd.Series(["skipped", "skipped", "skipped", "ok"]), errors)[1] == "skipped"
    assert group_status(pd.Series(["ok", "ok"]), errors[:2]) == ("ok", "ok")
    assert group_status(pd.Series(["failed"]), pd.Series(["boom"])) == ("failed: boom", "failed")


def test_the_overview_ranks_latency_lowest_first_and_accuracy_only_at_one_noise_level() -> None:
    from aebench.report import overview

    def row(variant: str, noise: float, gain: float, p99: float, accuracy: float) -> dict[str, object]:
        return {"variant": variant, "noise": noise, "threads": 1, "device": "cpu", "quality.gain_db": gain,
                "speed.latency_b1_p99_ms": p99, "quality.acc_denoised": accuracy}

    same_noise = pd.DataFrame([row("conv", 0.5, 5.0, 2.0, 0.90), row("dense", 0.5, 4.0, 0.5, 0.95)])
    table, winners = overview.variant_table(same_noise)
    assert winners["batch-1 p99 (ms)"] == "dense" and winners["accuracy on denoised"] == "dense"
    assert winners["best PSNR gain (dB)"] == "conv"
    # dense's best gain came at noise 0.1, where accuracy is easy: its accuracy is not comparable with conv's.
    mixed = pd.DataFrame([row("conv", 0.5, 5.0, 2.0, 0.90), row("dense", 0.1, 6.0, 0.5, 0.99)])
    assert "accuracy on denoised" not in overview.variant_table(mixed)[1]


def test_results_table_survives_missing_columns() -> None:
    frame = pd.DataFrame([{"cell": 0, "variant": "conv", "noise": 0.1, "device": "gpu", "threads": None,
                           "backend": "jax", "precision": "float32", "seed": 0, "status": "ok"}])
    html_text = results_table(frame)
    assert html_text.count(NA) >= len(RESULT_COLUMNS)
    assert quality.section(Run(frame)).startswith('<p class="note">')
    assert "No CPU cell" in throughput.section(Run(frame))


def test_table_headings_and_formats_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    psnr = REGISTRY["quality.psnr_db"]
    # the registry has no setter: a metric's entry is replaced for this test only
    monkeypatch.setitem(REGISTRY._exact, psnr.name, dataclasses.replace(psnr, label="output PSNR", format=fixed(3)))
    html_text = results_table(golden_frame())
    assert ">output PSNR (dB)<" in html_text and ">18.123<" in html_text
    assert ">PSNR (dB)<" not in html_text


def test_report_columns_are_registry_metrics() -> None:
    with pytest.raises(ValueError, match="quality.psnr"):
        Column("quality.psnr")
    assert Column("quality.gain_db").format(0.123) == "+0.12"
    assert Column("quality.gain_db").half_width(0.123) == "0.12"  # a half-width carries no sign


def test_quality_accuracy_panel_when_recorded() -> None:
    frame = golden_frame().assign(**{"quality.acc_denoised": [0.9, 0.95, np.nan], "quality.acc_noisy": 0.5})
    assert "data:image/png;base64," in quality.section(Run(frame))


def test_latency_curves_are_limited_to_the_conv_variant_when_many() -> None:
    rows = [{"cell": index, "variant": variant, "noise": noise, "seed": 0, "status": "ok"}
            for index, (variant, noise) in enumerate((v, n) for v in ("undercomplete", "conv") for n in (0.0, 0.5, 1.0))]
    frame = pd.DataFrame(rows * 2).assign(cell=range(12), threads=[1] * 6 + [2] * 6)
    artifacts = {cell: {"latency_b1_s": np.full(5, 1e-3)} for cell in range(12)}
    chosen = latency_cells(frame, artifacts)
    assert set(chosen["variant"]) == {"conv"} and len(chosen) == 6
    del artifacts[3]  # a cell without samples is left out
    assert 3 not in set(latency_cells(frame, artifacts)["cell"])


def _section(text: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert match, anchor
    return match.group(1)


def test_accuracy_section_single_seed(full_report: tuple[Path, Path, str]) -> None:
    section = _section(full_report[0].read_text(encoding="utf-8"), "accuracy")
    for needle in ("acc denoised", "recovered", "probe acc", "50.0%", "mean activation", "near-zero fraction",
                   "Robustness to test noise", "trained at 0.5", "Reconstruction MSE per class label"):
        assert needle in section, needle
    assert "±" not in section and ">seeds<" not in section  # one seed: no interval, no seed count
    assert "0.2000" in section and "1.5000" in section  # conv and undercomplete mean activations


def test_several_seeds_show_confidence_intervals(tmp_path: Path) -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    cells = small_matrix(repeats=3, threads=[1]).cells()
    results = [ok_result(cell, rng) for cell in cells]
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = fill_run(store, results)
        text = report.write_report(store, run_id, tmp_path / "reports").read_text(encoding="utf-8")
    chosen = [r.metrics["quality.acc_denoised"] for r in results if r.cell.variant == "conv" and r.cell.noise == 0.5]
    assert len(chosen) == 3
    half_width = stats.t.ppf(0.975, 2) * np.std(chosen, ddof=1) / np.sqrt(3)
    expected = f"{np.mean(chosen):.4f} ± {half_width:.4f}"
    assert expected in _section(text, "accuracy")
    results_part = _section(text, "results")
    assert "Over seeds" in results_part and "±" in results_part and "95% confidence interval" in results_part
    assert "± +" not in text and "± -" not in text
    psnr = [r.metrics["quality.psnr_db"] for r in results if r.cell.variant == "undercomplete" and r.cell.noise == 0.0]
    assert f"{np.mean(psnr):.2f} ± {stats.t.ppf(0.975, 2) * np.std(psnr, ddof=1) / np.sqrt(3):.2f}" in results_part


def test_every_string_from_the_user_or_the_store_renders_as_text(tmp_path: Path) -> None:
    """Matrix name and description, a plugin's variant name, an error and a stderr tail, each a script tag."""
    rng = np.random.default_rng(0)
    # A variant name cannot hold '/', the separator of cell keys (config.Cell refuses it): an unclosed script tag.
    cells = [dataclasses.replace(cell, variant=EVIL.split("</")[0]) if cell.variant == "undercomplete" else cell
             for cell in small_matrix().cells()]
    results = [ok_result(cell, rng) for cell in cells]
    results.append(CellResult(cell=dataclasses.replace(cells[0], index=len(cells), noise=0.9), status="failed",
                              duration_s=1.0, exit_code=1, error=EVIL, stderr_tail=f"Traceback\n{EVIL}"))
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = store.begin_run(small_matrix(name=EVIL, description=EVIL), ENVIRONMENT, ["aebench", "run", EVIL])
        for result in results:
            store.add_result(run_id, result)
        store.finish_run(run_id, "complete", 1.0, {"wall_s": 1.0})
        text = report.build_report(store, run_id)
    assert EVIL not in text and "<script>alert" not in text
    assert text.count("<script") == 1  # the page's own sorter, nothing from the store
    # Shown as text where each appears: title, header, overview, tables, the failure and its stderr (quotes are
    # escaped as &#39; by jinja2 and &#x27; by the Styler).
    assert text.count("&lt;script&gt;alert(") >= 6
    escaped = "&lt;script&gt;alert("
    title, header = text[:text.index("</title>")], text[:text.index('<section id="overview">')]
    assert escaped in title and header.count(escaped) >= 3  # the title, the matrix name and description, the argv
    for section in ("overview", "results", "failures"):  # the plugin's variant name; the error and its stderr tail
        assert escaped in _section(text, section), section
    failures = _section(text, "failures")
    assert failures.count(escaped) >= 2 and "Traceback" in failures


def test_pareto_front_keeps_the_cells_no_other_beats_on_both() -> None:
    from aebench.plots import pareto_front

    # (p99 ms, gain dB): b is slower and worse than a; d ties a on both (not strictly beaten); NaN is on no front.
    cost = [1.0, 2.0, 0.5, 1.0, 3.0, float("nan")]
    gain = [5.0, 4.0, 3.0, 5.0, 6.0, 9.0]
    assert pareto_front(cost, gain) == [True, False, True, True, True, False]


def test_the_pareto_figure_falls_back_to_p50_where_no_cell_states_a_p99() -> None:
    """A p99 needs 100 calls; a run with a shorter latency loop still gets its quality-against-speed figure."""
    from aebench.report import overview

    rng = np.random.default_rng(0)
    frame = pd.DataFrame([{"cell": c.index, "key": c.key, "variant": c.variant, "noise": c.noise,
                           "threads": c.threads, "device": c.device, "backend": c.backend, "precision": c.precision,
                           "seed": c.seed, "status": "ok", **ok_result(c, rng).metrics}
                          for c in small_matrix().cells()])
    assert overview.pareto_speed_metric(frame) == "speed.latency_b1_p99_ms"
    frame["speed.latency_b1_p99_ms"] = None
    assert overview.pareto_speed_metric(frame) == "speed.latency_b1_p50_ms"
    panels = overview.pareto_panels(frame, "speed.latency_b1_p50_ms")
    assert panels and sum(len(points) for _, points in panels) == len(frame)
    assert overview.pareto_panels(frame, "speed.latency_b1_p99_ms") == []


def test_overview_names_the_winner_of_each_column_and_counts_cells(full_report: tuple[Path, Path, str]) -> None:
    from aebench.report import overview

    text = full_report[0].read_text(encoding="utf-8")
    section = " ".join(text[text.index('<section id="overview">'):text.index('<section id="results">')].split())
    assert "Test CPU &lt;v2&gt;" in section and "commit abc123 (dirty)" in section
    assert "8 ok, 1 failed, 0 timed out, 1 skipped; 0 with contaminated speed figures" in section
    assert "Pareto front" in section and section.count("data:image/png") == 1
    rng = np.random.default_rng(0)
    frame = pd.DataFrame([{"cell": c.index, "variant": c.variant, "noise": c.noise, "threads": c.threads,
                           "device": c.device, "status": "ok", **ok_result(c, rng).metrics}
                          for c in small_matrix().cells()])
    table, winners = overview.variant_table(frame)
    # conv gets 1 dB more PSNR in ok_result; undercomplete trains 1/0.3 times faster.
    assert winners["best PSNR gain (dB)"] == "conv" and winners["train (img/s)"] == "undercomplete"
    assert table.loc[table["variant"] == "conv", "best PSNR gain (dB)"].item().endswith(overview.WINNER)
    assert "(2 threads)" in table.loc[table["variant"] == "undercomplete", "train (img/s)"].item()
    # Time to target, at each variant's best noise level (0.5 for both): the quicker wins, as the other columns.
    frame["speed.time_to_target_s"] = np.where(frame["variant"] == "conv", 10.0, 5.0)
    frame["quality.target_reached"] = 1.0
    table, winners = overview.variant_table(frame)
    assert winners[overview.TO_TARGET_HEADING] == "undercomplete"
    frame.loc[(frame["variant"] == "conv") & (frame["noise"] == 0.0), "quality.gain_db"] = 99.0  # best at 0 now
    assert overview.TO_TARGET_HEADING not in overview.variant_table(frame)[1]  # not comparable across noise levels
    assert overview.threads_text(1) == "1 thread"


def test_the_overview_links_the_history_ab_and_hardware_pages_beside_it(tmp_path: Path) -> None:
    reports_dir = tmp_path / "reports"
    (reports_dir / "ab").mkdir(parents=True)
    (reports_dir / "history.html").write_text("h")
    for name in ("20261101-a-b.html", "20261102-c-d.html"):
        (reports_dir / "ab" / name).write_text("ab")
    rng = np.random.default_rng(0)
    with open_store(tmp_path / "s.sqlite") as store:
        run_id = fill_run(store, [ok_result(cell, rng) for cell in small_matrix().cells()])
        index = report.write_report(store, run_id, reports_dir)
    text, latest = index.read_text(encoding="utf-8"), (reports_dir / "latest.html").read_text(encoding="utf-8")
    assert '<a href="../history.html">history</a>' in text
    assert '<a href="../ab/20261102-c-d.html">latest ab comparison</a>' in text  # the newest of the two
    assert "hardware comparison" not in text  # no such page: no link
    assert '<a href="history.html">history</a>' in latest and 'href="../' not in latest  # one folder up


def test_the_results_table_says_which_cell_trained_the_weights_each_row_timed() -> None:
    from aebench.report import results

    cells = small_matrix(noise=[0.5]).cells()
    trainer = {c.variant: next(t.key for t in cells if t.variant == c.variant and t.threads == 2) for c in cells}
    rng = np.random.default_rng(0)
    frame = pd.DataFrame([{**ok_result(c, rng).flat(), "info.trained_by": trainer[c.variant]} for c in cells])
    assert list(results.weights_column(frame)) == ["from 2 threads", "trained"] * 2
    assert "from 2 threads" in results.results_table(frame)
    assert results.weights_column(frame.drop(columns=["info.trained_by"])) is None  # a run from before sharing
