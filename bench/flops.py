"""FLOPs per image from layer shapes, and an estimate of this CPU's peak, for a roofline-style "fraction of peak".

Counting rule: 2 FLOPs per multiply-add of the Dense, Conv2D and Conv2DTranspose layers; biases, activations,
pooling, upsampling and penalties are left out (they are a few percent of the work for these models and are
memory-bound, not compute-bound). For the paper's conv AE this gives 1,072,512 FLOPs per image forward
(about 1.07 MFLOP). A training step costs about 3x the forward pass (forward, and a backward pass of about twice
the forward's multiply-adds), the usual approximation.

Peak estimate: threads x clock x FLOPs per cycle per core, with FLOPs per cycle from the widest SIMD the CPU
reports: 64 for AVX-512 with FMA (two 512-bit FMA units), 32 for AVX2 with FMA (two 256-bit FMA units), 16 for AVX,
8 otherwise (float32). Limits: the clock is the one psutil reports (cpufreq's scaling maximum, else the current clock
in /proc/cpuinfo; turbo and thermal throttling move it), some CPUs have one FMA unit rather than two (so their true
peak is half), SMT siblings share FMA units, and a virtual CPU may be a hyperthread. Read the fraction of peak as an
order of magnitude, not a precise ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

TRAIN_TO_FORWARD = 3.0


def layer_flops(layer: Any) -> int:
    """Forward FLOPs per image of one Keras layer (0 for layers outside the counting rule)."""
    kind = type(layer).__name__
    if kind in ("Dense",) or any(base.__name__ == "Dense" for base in type(layer).__mro__[1:]):
        fan_in = int(layer.input.shape[-1])
        return 2 * fan_in * int(layer.units)
    if kind == "Conv2D":
        _, height, width, channels_out = layer.output.shape
        kh, kw = layer.kernel_size
        channels_in = int(layer.input.shape[-1])
        return 2 * int(height) * int(width) * int(channels_out) * kh * kw * channels_in // layer.groups
    if kind == "Conv2DTranspose":
        # Every input pixel is scattered through the kernel into all output channels.
        _, height, width, channels_in = layer.input.shape
        kh, kw = layer.kernel_size
        return 2 * int(height) * int(width) * int(channels_in) * kh * kw * int(layer.filters)
    return 0


def model_flops(model: Any) -> int:
    """Forward FLOPs per image of a functional Keras model."""
    return sum(layer_flops(layer) for layer in model.layers)


def cpu_clock_ghz() -> float | None:
    """The highest clock the OS reports (psutil: cpufreq's maximum, else the current clock), or None."""
    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError):  # no cpufreq and no /proc/cpuinfo clock
        return None
    megahertz = frequency and (frequency.max or frequency.current)
    return megahertz / 1e3 if megahertz else None


def flops_per_cycle(flags: set[str]) -> int:
    if "avx512f" in flags and "fma" in flags:
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    if "avx" in flags:
        return 16
    return 8


def peak_gflops(threads: int, flags: set[str], clock_ghz: float | None) -> float | None:
    if clock_ghz is None:
        return None
    return threads * clock_ghz * flops_per_cycle(flags)


def compute_metrics(forward_flops: int, metrics: Mapping[str, float], threads: int | None,
                    flags: set[str], clock_ghz: float | None) -> dict[str, float]:
    """Achieved GFLOP/s of training and inference, and their fraction of the estimated CPU peak."""
    out: dict[str, float] = {"compute.flops_per_image": float(forward_flops)}
    infer = forward_flops * (metrics.get("speed.infer_ips") or 0.0) / 1e9
    train = TRAIN_TO_FORWARD * forward_flops * (metrics.get("speed.train_ips") or 0.0) / 1e9
    out["compute.infer_gflops"] = infer
    out["compute.train_gflops"] = train
    peak = peak_gflops(threads, flags, clock_ghz) if threads else None
    if peak:
        out["compute.peak_gflops"] = peak
        out["compute.infer_peak_fraction"] = infer / peak
        out["compute.train_peak_fraction"] = train / peak
    return out
