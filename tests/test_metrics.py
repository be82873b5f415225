"""The metric registry (aebench.metrics): every entry well formed, lookups, ordering."""

from __future__ import annotations

import pytest

from aebench.metrics import GROUPS, REGISTRY, Metric, Registry, is_metric_column


def _member(metric: Metric) -> str:
    """A column name the entry covers: the name itself, or a family's name with its parameter filled in."""
    return metric.name.replace("{}", "7")


@pytest.mark.parametrize("metric", list(REGISTRY), ids=lambda metric: metric.name)
def test_every_metric_is_well_formed(metric: Metric) -> None:
    assert metric.group in GROUPS
    assert metric.label.strip() and metric.description.strip() and "\n" not in metric.description
    assert ("{}" in metric.label) == metric.is_family  # a family's label names its parameter
    for value in (0, 0.5, 1234.5678, -3):
        text = metric.format(value)
        assert isinstance(text, str) and text.strip()
    if metric.unstable is not None:
        assert REGISTRY[metric.unstable].format(1) == "yes"
    if metric.gated:
        assert metric.better is not None and metric.group in ("quality", "speed") and metric.margin >= 0
    column = _member(metric)
    assert is_metric_column(column) and REGISTRY[column] is metric
    if metric.is_family:
        assert REGISTRY.parameter(column) == "7" and "7" in REGISTRY.label(column)


def test_names_are_unique_and_a_second_definition_is_refused() -> None:
    names = [metric.name for metric in REGISTRY]
    assert len(names) == len(set(names))
    psnr = REGISTRY["quality.psnr_db"]
    with pytest.raises(ValueError, match="'quality.psnr_db' is defined twice"):
        Registry([psnr, psnr])


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="group 'info': allowed quality, speed"):
        Metric("info.cpus", "cpus", "", None, "pinned CPUs")
    with pytest.raises(ValueError, match="better='up'"):
        Metric("speed.x", "x", "", "up", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a gate needs one"):
        Metric("speed.x", "x", "", None, "x", margin=5.0)
    with pytest.raises(ValueError, match="allowed a number >= 0"):
        Metric("speed.x", "x", "", "higher", "x", margin=-1.0)


def test_only_figure_columns_are_metric_columns() -> None:
    for column in ("run_id", "variant", "status", "duration_s", "info.cpus", "info.quality.x"):
        assert not is_metric_column(column)
    assert is_metric_column("robust.psnr_db@0.3") and REGISTRY["robust.psnr_db@0.3"].group == "quality"


def test_the_gated_metrics() -> None:
    assert [metric.name for metric in REGISTRY.gated()] == [
        "quality.bce", "quality.psnr_db", "quality.ssim", "quality.acc_denoised",
        "speed.train_ips", "speed.infer_ips", "speed.latency_b1_p50_ms", "speed.latency_b1_p99_ms",
    ]


def test_columns_sort_group_by_group_in_registry_order() -> None:
    columns = ["timing.train_s", "diag.mse_digit1", "speed.old_figure", "robust.psnr_db@0.5", "diag.mse_digit0",
               "quality.psnr_db", "robust.psnr_db@0.1", "speed.train_ips", "quality.bce"]
    assert REGISTRY.sort_columns(columns) == [
        "quality.bce", "quality.psnr_db", "robust.psnr_db@0.5", "robust.psnr_db@0.1", "speed.train_ips",
        "diag.mse_digit1", "diag.mse_digit0", "timing.train_s", "speed.old_figure",
    ]
    groups = [metric.group for metric in REGISTRY]
    assert groups == sorted(groups, key=GROUPS.index), "the registry lists its metrics group by group"


def test_check_known_names_every_unknown_metric() -> None:
    REGISTRY.check_known(["quality.psnr_db", "robust.psnr_db@0.3", "diag.mse_digit9"])
    with pytest.raises(ValueError, match=r"registry \(aebench.metrics\): quality.made_up, speed.x$"):
        REGISTRY.check_known(["speed.x", "quality.psnr_db", "quality.made_up"])
