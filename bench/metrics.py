"""The metric registry: every figure a cell stores, defined once.

Each entry says what a stored column is: its unit, which direction is better, its group, how to display it and what
it means. The store, ``export``, ``compare``, the report and the README's column table all read it from here, so a
metric is added, renamed or re-described in one place. A cell that writes a metric this registry lacks fails
(``check_known``): an undocumented column is a bug, not data.

Families of columns that differ only by a parameter (the robustness sweep's ``robust.psnr_db@0.3``, the per-digit
``diag.mse_digit7``) are one entry each, with ``{}`` standing for the parameter.

Free of Keras and of the ML frameworks: the CLI and the report import it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

Formatter = Callable[[Any], str]
Direction = Literal["higher", "lower"] | None
GROUPS = ("quality", "speed", "memory", "diag", "compute", "timing")
# A column's prefix names its group, except the robustness sweep's, which are quality figures.
_PREFIX_GROUP = {**{group: group for group in GROUPS}, "robust": "quality"}
# |h| below this counts as an inactive latent unit (diag.near_zero_fraction, diag.dead_unit_fraction). Codes of the
# zoo (linear, relu or sigmoid) are of order 0.1 to 10 when active; 1e-2 is well below that yet above float noise,
# and the same for every variant so they compare.
NEAR_ZERO = 1e-2
# Below this drop in accuracy (clean - noisy) the noise hardly hurts the classifier, and the recovered fraction would
# divide by almost nothing: it is left undefined (None) rather than reported as a huge, meaningless ratio.
MIN_ACCURACY_DROP = 0.05


# -- display formats -------------------------------------------------------------------------------------------------


def flag_is_set(value: object) -> bool:
    """How every reader takes a stored 0/1 flag (``*_unstable``, ``speed.contaminated``): set at 1; 0, None, NaN or
    a missing column are not set."""
    try:
        return float(value) >= 0.5  # NaN compares False
    except (TypeError, ValueError):
        return False


def fixed(digits: int) -> Formatter:
    return lambda value: f"{float(value):.{digits}f}"


def signed(digits: int) -> Formatter:
    return lambda value: f"{float(value):+.{digits}f}"


def significant(digits: int) -> Formatter:
    return lambda value: f"{float(value):.{digits}g}"


def thousands(value: Any) -> str:
    return f"{float(value):,.0f}"


def milliseconds(value: Any) -> str:
    """Three decimals for sub-10 ms latencies, two above, none past a second."""
    value = float(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def general(value: Any) -> str:
    return f"{float(value):g}"


def integer(value: Any) -> str:
    return str(int(value))


def percent(value: Any) -> str:
    """A fraction shown as a percentage: 0.5 -> 50.0%."""
    return f"{float(value) * 100:.1f}%"


def flag(value: Any) -> str:
    return "yes" if flag_is_set(value) else "no"


# -- the registry ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One stored figure (or one family of them, when ``name`` holds ``{}``)."""

    name: str  # dotted column name; the part before the first dot names the group
    label: str  # short heading for tables and plots
    unit: str  # "" for dimensionless figures
    better: Direction  # None: a property of the setting (the noisy input, a count), not a figure to improve
    description: str
    format: Formatter = significant(4)
    unstable: str | None = None  # the column of this figure's stability flag (1 = stdev > 10% of the mean)
    # The practical margin a change must exceed to be called a regression or an improvement by compare, ab and
    # history: a percentage for speed figures (they are judged by ratios over noisy rounds), an amount in the
    # metric's own unit for quality figures (bit-identical for the same seed, so any difference is real). A metric
    # with a margin is gated: those commands judge it by default.
    margin: float | None = None
    # A figure of the training run rather than of the cell's own process: every thread count of a model shares the
    # one its training cell measured (quality and diagnostics always are; a few speed figures, such as time to
    # target, too).
    of_training: bool = False

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"metric {self.name!r} is in group {self.group!r}: allowed {', '.join(GROUPS)}")
        if self.better not in ("higher", "lower", None):
            raise ValueError(f"metric {self.name!r} better={self.better!r}: allowed 'higher', 'lower' or None")
        if self.margin is not None and (self.better is None or not self.margin >= 0):
            raise ValueError(f"metric {self.name!r} margin={self.margin!r}: allowed a number >= 0 on a metric with a "
                             "better direction (a gate needs one)")

    @property
    def gated(self) -> bool:
        return self.margin is not None

    @property
    def judged_by_ratio(self) -> bool:
        """Speed-like figures (and memory, compute) change by ratios: judged on logs, their margins in percent.
        Quality figures change by differences in their own unit, and their margins are amounts in it."""
        return self.group != "quality"

    @property
    def group(self) -> str:
        prefix = self.name.split(".", 1)[0]
        return _PREFIX_GROUP.get(prefix, prefix)

    @property
    def from_training(self) -> bool:
        """Measured once per model by the cell that trained it, and shared by the cells that only time it."""
        return self.of_training or self.group in ("quality", "diag")

    @property
    def is_family(self) -> bool:
        return "{}" in self.name

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.name).replace(r"\{\}", r"(.+)") + r"\Z")

    def heading(self, label: str | None = None, aside: str = "") -> str:
        """The label with its unit, as a column heading: "PSNR (dB)". A table may put its own label in place of the
        registry's, and an aside after the unit: "predict() b1 p50 (ms, framework path)"."""
        details = ", ".join(part for part in (self.unit, aside) if part)
        label = self.label if label is None else label
        return f"{label} ({details})" if details else label



def _latency_family(prefix: str, short: str, path: str, margins: Mapping[str, float] | None = None) -> list[Metric]:
    """The batch-1 latency columns of one inference path (aebench.scenarios.Latency.metrics writes them); ``margins``
    gives the gated statistics (``"p50"``, ...) their margins in percent."""
    margins = margins or {}
    unstable = f"{prefix}_unstable"
    stats = [
        ("p50", "p50", "median"), ("p90", "p90", "90th percentile"),
        ("p99", "p99", "99th percentile (from 100 calls on; none with fewer)"),
        ("p999", "p99.9", "99.9th percentile (from 1,000 calls on; none with fewer)"), ("mean", "mean", "mean"),
    ]
    metrics = [Metric(f"{prefix}_{key}_ms", f"{short} {label}", "ms", "lower",
                      f"{description} of batch-1 latency through {path}", milliseconds, unstable, margins.get(key))
               for key, label, description in stats]
    metrics += [
        Metric(f"{prefix}_stdev_ms", f"{short} stdev", "ms", None, f"standard deviation of batch-1 latency through {path}",
               milliseconds),
        Metric(f"{prefix}_count", f"{short} calls", "", None, f"timed batch-1 calls through {path}", integer),
        Metric(f"{prefix}_duration_s", f"{short} loop", "s", None, f"duration of the batch-1 loop through {path}",
               fixed(2)),
        Metric(unstable, f"{short} unstable", "", None,
               f"1 when the stdev of batch-1 latency through {path} exceeds 10% of its mean", flag),
        Metric(f"{prefix}_hit_cap", f"{short} capped", "", None,
               f"1 when the batch-1 loop through {path} stopped at its time cap before its minimum call count", flag),
    ]
    return metrics


_ALL: tuple[Metric, ...] = (
    # Quality: the output against the clean test images, and the classifier a downstream user would run on it.
    Metric("quality.bce", "BCE", "", "lower", "binary cross-entropy of the output against the clean test images",
           fixed(4), margin=0.001),
    Metric("quality.mse", "MSE", "", "lower", "mean squared error of the output against the clean test images", fixed(5)),
    Metric("quality.psnr_db", "PSNR", "dB", "higher", "PSNR of the output (peak 1, MSE over the test set)", fixed(2),
           margin=0.1),
    Metric("quality.noisy_psnr_db", "noisy PSNR", "dB", None, "PSNR of the noisy input itself", fixed(2)),
    Metric("quality.gain_db", "gain", "dB", "higher", "PSNR of the output minus PSNR of the noisy input", signed(2)),
    Metric("quality.ssim", "SSIM", "", "higher", "SSIM of the output (Gaussian window 11, sigma 1.5), averaged "
           "over every pixel, the border a denoiser must also clean included", fixed(4),
           margin=0.001),
    Metric("quality.noisy_ssim", "noisy SSIM", "", None, "SSIM of the noisy input itself", fixed(4)),
    Metric("quality.train_loss", "train loss", "", "lower", "the last epoch's training loss (penalties included)",
           fixed(4)),
    # Time-to-quality (aebench.timetoquality): validation PSNR on the held-out slice of the training set, evaluated
    # every time_to_quality.every_steps steps during training.
    Metric("quality.val_psnr_db", "val PSNR", "dB", "higher",
           "PSNR on the held-out validation slice of the training set at the end of training", fixed(2)),
    Metric("quality.val_gain_db", "val gain", "dB", "higher", "validation PSNR minus the noisy validation images' PSNR",
           signed(2)),
    Metric("quality.target_psnr_db", "target PSNR", "dB", None,
           "the time-to-quality target: the noisy validation images' PSNR + time_to_quality.target_gain_db", fixed(2)),
    Metric("quality.target_reached", "target reached", "", None,
           "1 when validation PSNR reached the target during training; 0: not reached (no time to target then)", flag),
    Metric("quality.images_to_target", "images to target", "img", "lower",
           "training images seen at the first evaluation at or above the target", thousands),
    Metric("quality.acc_clean", "acc clean", "", None, "reference classifier accuracy on the clean test images",
           fixed(4)),
    Metric("quality.acc_noisy", "acc noisy", "", None, "reference classifier accuracy on the noisy test images",
           fixed(4)),
    Metric("quality.acc_denoised", "acc denoised", "", "higher",
           "reference classifier accuracy on the autoencoder's outputs", fixed(4), margin=0.005),
    Metric("quality.acc_recovered", "recovered", "", "higher",
           "(acc denoised - acc noisy) / (acc clean - acc noisy), clipped to ±100%: the share of the accuracy lost to "
           f"noise that denoising wins back; only where noise costs at least {MIN_ACCURACY_DROP * 100:g} points (else "
           "see acc gained)", percent),
    Metric("quality.acc_gain_points", "acc gained", "points", "higher",
           "classifier accuracy on denoised minus on noisy test images, in points (percent of the images)", signed(1)),
    Metric("quality.probe_acc", "probe acc", "", "higher",
           "accuracy of a logistic regression on the encoder's codes of clean images", fixed(4)),
    # Robustness: the trained model at other test noise levels (quality figures under a prefix of their own).
    Metric("robust.psnr_db@{}", "PSNR at test noise {}", "dB", "higher",
           "PSNR of the output at another test noise level (robustness sweep)", fixed(2)),
    Metric("robust.noisy_psnr_db@{}", "noisy PSNR at test noise {}", "dB", None,
           "PSNR of the noisy input at that test noise level", fixed(2)),
    Metric("robust.psnr_auc", "robust PSNR", "dB", "higher",
           "area under the robustness curve divided by the level range: its mean PSNR", fixed(2)),
    # Speed: training, the Offline and SingleStream scenarios on the compiled call, and the framework path.
    Metric("speed.time_to_target_s", "time to target", "s", "lower",
           "training seconds until validation PSNR first reached the target (compilation included, evaluations "
           "and checkpoint saves excluded), on the training cell's threads; absent when not reached "
           "(quality.target_reached = 0)",
           fixed(1), of_training=True),
    Metric("speed.train_total_s", "training run", "s", None,
           "the whole training run, evaluations and checkpoint saves excluded, on the training cell's threads",
           fixed(1), of_training=True),
    Metric("speed.train_ips", "train", "img/s", "higher",
           "training images per second over the timed steps from the trained weights (train_timing), warm-up excluded",
           thousands, "speed.train_unstable", margin=5.0),
    Metric("speed.train_ips_stdev", "train stdev", "img/s", None,
           "standard deviation of the training rate over the timed repeats", thousands),
    Metric("speed.train_unstable", "train unstable", "", None,
           "1 when the training rate's stdev over the timed repeats exceeds 10% of its mean", flag),
    Metric("speed.train_first_epoch_s", "warm-up", "s", "lower",
           "the timed steps' warm-up repeat: tracing, compilation and the optimizer's first step included", fixed(2)),
    Metric("speed.train_steady_epoch_s", "steady repeat", "s", "lower", "median duration of a timed repeat of the steps",
           fixed(2)),
    Metric("speed.train_compile_overhead_s", "compile overhead", "s", "lower",
           "what the warm-up repeat costs beyond a steady one", fixed(2)),
    Metric("speed.train_s", "steps timed", "s", None, "the timed repeats of the training steps, warm-up included",
           fixed(1)),
    Metric("speed.train_epochs_timed", "repeats", "", None, "repeats of the training steps timed, warm-up included",
           integer),
    Metric("speed.batch_size", "train batch", "", None, "training batch size", integer),
    Metric("speed.infer_ips", "infer", "img/s", "higher", "Offline inference images per second on the compiled call",
           thousands, "speed.infer_unstable", margin=5.0),
    Metric("speed.infer_ips_stdev", "infer stdev", "img/s", None, "standard deviation of the per-batch inference rate",
           thousands),
    Metric("speed.infer_batches", "infer batches", "", None, "timed Offline batches", integer),
    Metric("speed.infer_duration_s", "infer loop", "s", None, "duration of the Offline loop", fixed(2)),
    Metric("speed.infer_unstable", "infer unstable", "", None,
           "1 when the per-batch inference rate's stdev exceeds 10% of its mean", flag),
    Metric("speed.infer_batch_size", "infer batch", "", None, "Offline batch size", integer),
    Metric("speed.contaminated", "contaminated", "", None,
           "1 when something else used the machine while the cell measured (a load check past its limit, "
           "--allow-concurrent beside another aebench run, or --pack beside other cells on a cluster node; the "
           "reason in info.contaminated): compare, hardware, history and ab leave its speed figures out", flag),
    Metric("speed.load_other_cpu_pct", "other CPU load", "%", None,
           "the most that other processes used of the cell's pinned CPUs in one phase (setup, training, "
           "inference)", fixed(1)),
    Metric("speed.load_steal_pct", "steal", "%", None,
           "the most CPU time the hypervisor stole from the cell's CPUs in one phase", fixed(1)),
    Metric("speed.load_memory_pressure_pct", "memory pressure", "%", None,
           "the largest share of a phase in which tasks stalled on memory (Linux PSI; absent without it)", fixed(1)),
    # One practical margin for every gated speed figure: the margin says how large a change matters, and a 5% longer
    # tail matters as much as a 5% longer median. How noisy a figure is belongs to the interval, which the rounds
    # narrow, not to the margin: a 10% margin for p99 made a 20% slowdown's p99 a coin toss (found 2 times in 6 by
    # the README's calibration) without buying a false alarm the A/A runs would have shown.
    *_latency_family("speed.latency_b1", "batch-1", "the compiled call", margins={"p50": 5.0, "p99": 5.0}),
    *_latency_family("speed.predict_b1", "predict() b1", "Keras predict() (the framework path)"),
    Metric("speed.first_call_s", "first call", "s", "lower", "the compiled call's first (tracing) call", fixed(3)),
    Metric("speed.cold_start_s", "cold start", "s", "lower", "model build plus the compiled call's first call", fixed(2)),
    # Memory.
    Metric("memory.peak_rss_mb", "peak RSS", "MB", "lower", "the worker's peak resident memory, framework included",
           thousands),
    # Diagnostics of what the model learned: read, not ranked.
    Metric("diag.mean_activation", "mean activation", "", None,
           "mean |h| of the latent codes of the noisy test inputs", fixed(4)),
    Metric("diag.near_zero_fraction", "near-zero fraction", "", None,
           f"share of (example, unit) latent entries with |h| < {NEAR_ZERO:g}", fixed(3)),
    Metric("diag.dead_unit_fraction", "dead-unit fraction", "", None,
           f"share of latent units with |h| < {NEAR_ZERO:g} for every test input", fixed(3)),
    Metric("diag.jacobian_fro_sq_autodiff", "‖J‖²_F autodiff", "", None,
           "contractive variant: squared Frobenius norm of d(code)/d(input) by automatic differentiation",
           significant(5)),
    Metric("diag.jacobian_fro_sq_closed_form", "‖J‖²_F closed form", "", None,
           "contractive variant: the same norm by the closed form its penalty uses", significant(5)),
    Metric("diag.mse_digit{}", "MSE digit {}", "", None, "reconstruction MSE of the test images of that true label",
           fixed(4)),
    # Compute: FLOPs from layer shapes against the CPU's estimated peak (aebench.flops).
    Metric("compute.flops_per_image", "FLOPs/image", "FLOP", None, "forward FLOPs per image from the layer shapes",
           thousands),
    Metric("compute.infer_gflops", "infer GFLOP/s", "GFLOP/s", "higher", "achieved inference GFLOP/s", fixed(2)),
    Metric("compute.train_gflops", "train GFLOP/s", "GFLOP/s", "higher", "achieved training GFLOP/s (3x forward)",
           fixed(2)),
    Metric("compute.peak_gflops", "peak GFLOP/s", "GFLOP/s", None, "the pinned CPUs' estimated float32 peak", fixed(1)),
    Metric("compute.infer_peak_fraction", "infer of peak", "", "higher", "inference GFLOP/s / peak", percent),
    Metric("compute.train_peak_fraction", "train of peak", "", "higher", "training GFLOP/s / peak", percent),
    # Where the cell's time went.
    Metric("timing.setup_s", "setup", "s", None, "pinning, imports, data and noise", fixed(2)),
    Metric("timing.train_s", "train", "s", None,
           "the training run (training cell only), evaluations and checkpoint saves included", fixed(2)),
    Metric("timing.validation_s", "validation", "s", None,
           "the time-to-quality evaluations during training, excluded from its times (training cell only)", fixed(2)),
    Metric("timing.checkpoint_s", "checkpoints", "s", None,
           "saving checkpoints during the training run (checkpointed runs), left out of time to target", fixed(2)),
    Metric("timing.train_timing_s", "train timing", "s", None, "the timed training steps and their warm-up", fixed(2)),
    Metric("timing.speed_s", "speed", "s", None, "cold start and the timed inference loops", fixed(2)),
    Metric("timing.eval_s", "eval", "s", None, "scoring the test set", fixed(2)),
    Metric("timing.accuracy_s", "accuracy", "s", None, "classifier accuracy, probe, diagnostics, robustness sweep",
           fixed(2)),
    Metric("timing.classifier_s", "classifier", "s", None, "loading the reference classifier from the cache", fixed(2)),
)


class Registry:
    """Metrics by name, in the order they are defined (group by group); a family entry answers for every column it
    covers."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._ordered: list[Metric] = []
        self._exact: dict[str, Metric] = {}
        self._families: list[Metric] = []
        for metric in metrics:
            if any(known.name == metric.name for known in self._ordered):
                raise ValueError(f"metric {metric.name!r} is defined twice")
            self._ordered.append(metric)
            if metric.is_family:
                self._families.append(metric)
            else:
                self._exact[metric.name] = metric
        self._position = {metric.name: index for index, metric in enumerate(self._ordered)}

    def __iter__(self) -> Iterator[Metric]:
        yield from self._ordered

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def find(self, name: str) -> Metric | None:
        """The entry for a column name, or None."""
        if name in self._exact:
            return self._exact[name]
        return next((family for family in self._families if family.pattern.match(name)), None)

    def __getitem__(self, name: str) -> Metric:
        metric = self.find(name)
        if metric is None:
            raise KeyError(f"metric {name!r} is not in the registry (aebench.metrics)")
        return metric

    def parameter(self, name: str) -> str:
        """The ``{}`` part of a family's column: "0.3" for robust.psnr_db@0.3."""
        match = self[name].pattern.match(name)
        if match is None or not match.groups():
            raise ValueError(f"metric {name!r} is not a member of a family")
        return match.group(1)

    def label(self, name: str) -> str:
        metric = self[name]
        return metric.label.replace("{}", self.parameter(name)) if metric.is_family else metric.label

    def format(self, name: str, value: Any) -> str:
        return self[name].format(value)

    def gated(self, group: str | None = None) -> list[Metric]:
        """The metrics compare, ab, history and hardware judge by default (of one group, when given)."""
        return [metric for metric in self if metric.gated and group in (None, metric.group)]

    def margins(self) -> dict[str, float]:
        """Gated metric -> its default margin (percent for speed, the metric's unit for quality)."""
        return {metric.name: metric.margin for metric in self if metric.margin is not None}

    def sort_columns(self, names: Iterable[str]) -> list[str]:
        """The column names in registry order; a family's columns keep their given order among themselves, and names
        the registry lacks (a store written before a metric was removed) come last, also in their given order."""
        def position(name: str) -> int:
            metric = self.find(name)
            return self._position[metric.name] if metric is not None else len(self._ordered)

        return sorted(names, key=position)

    def check_known(self, names: Iterable[str]) -> None:
        """Raise ValueError naming every column the registry does not define."""
        unknown = sorted(name for name in names if name not in self)
        if unknown:
            raise ValueError(f"metrics not in the registry (aebench.metrics): {', '.join(unknown)}")


REGISTRY = Registry(_ALL)
GROUP_PREFIXES = tuple(f"{prefix}." for prefix in _PREFIX_GROUP)


def is_metric_column(column: str) -> bool:
    """A flat table's figure columns are the ones under a metric group (``quality.*``, ``speed.*``, ...)."""
    return column.startswith(GROUP_PREFIXES)


def parse_margin(text: str, margins: Mapping[str, float]) -> dict[str, float]:
    """``--margin`` values: ``speed:5%`` (every gated speed figure), ``speed.train_ips:10%``, ``quality.psnr_db:0.2``
    (in dB). Returns the margins the text sets. Speed margins are percentages; quality margins are amounts in the
    metric's own unit, because quality is compared exactly rather than as a ratio."""
    from aebench.errors import UserError

    name, sep, value = text.partition(":")
    allowed = sorted({metric.split(".")[0] for metric in margins} | set(margins))
    percent = value.strip().endswith("%")
    try:
        amount = float(value.strip().rstrip("%"))
    except ValueError:
        amount = -1.0
    if not sep or name not in allowed or not (math.isfinite(amount) and amount >= 0):
        raise UserError(f"--margin {text!r} is invalid: allowed NAME:VALUE with NAME one of {', '.join(allowed)} "
                        "(speed values in percent, e.g. speed:5%; quality values in the metric's unit, e.g. "
                        "quality.psnr_db:0.1)")
    targets = [metric for metric in margins if metric == name or metric.split(".")[0] == name]
    if name != targets[0] and any(not REGISTRY[metric].judged_by_ratio for metric in targets):
        raise UserError(f"--margin {text!r} is invalid: quality margins are amounts in each metric's own unit (dB, "
                        "accuracy, SSIM), so they are set one metric at a time, e.g. quality.psnr_db:0.2")
    if percent and any(not REGISTRY[metric].judged_by_ratio for metric in targets):
        raise UserError(f"--margin {text!r} is invalid: quality margins are amounts in the metric's unit "
                        "(quality.acc_denoised:0.005 is half a point of accuracy), not percentages")
    return {metric: amount for metric in targets}


def with_margin_options(options: Sequence[str], margins: Mapping[str, float] | None = None) -> dict[str, float]:
    """``margins`` (by default the registry's) with each ``--margin NAME:VALUE`` option applied in order."""
    result = dict(REGISTRY.margins() if margins is None else margins)
    for text in options:
        result.update(parse_margin(text, result))
    return result
