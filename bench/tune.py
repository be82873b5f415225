"""``aebench tune``: pick a variant's hyperparameter on the held-out validation slice, never on the test set.

For each value of one hyperparameter and each noise level of the matrix, the variant trains as a cell of that matrix
would (same training subset, noise, seed, epochs, learning rate and quality clock; ``aebench.worker``) and is scored
on the validation slice of the training set (``aebench.data.training_split``): validation PSNR gain over the noisy
input, time to target, and the code's mean activation (a saturated sigmoid code sits near 1). The test images are
never loaded here. The zoo's defaults were chosen this way (README, "How the defaults were tuned").

Training runs in the calling process (``aebench tune`` gives the backend the matrix's largest thread count first);
quality does not depend on the thread count beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from aebench.config import Matrix, parse_override
from aebench.data import Dataset
from aebench.errors import UserError
from aebench.models import registry
from aebench.timetoquality import to_target_text


def parse_values(variant: str, text: str) -> tuple[str, list[float | int]]:
    """``key=v1,v2,...`` -> (key, values), each checked against the variant's bounds (one-line error otherwise)."""
    key, sep, values_text = text.partition("=")
    allowed = ", ".join(registry.defaults(variant)) or "(none)"
    if not sep or key not in registry.defaults(variant):
        raise UserError(f"--param {text!r} is invalid: allowed KEY=V1,V2,... with KEY one of {allowed}")
    values = []
    for item in values_text.split(","):
        _, value = parse_override(f"{key}={item}")
        try:
            values.append(registry.resolve_hparams(variant, {key: value})[key])
        except ValueError as error:
            raise UserError(f"--param {key}: {error}") from None
    return key, values


def tune(matrix: Matrix, dataset: Dataset, variant: str, key: str, values: Sequence[float | int]) -> pd.DataFrame:
    """One row per (value, noise): the validation figures of a training run with that hyperparameter."""
    import keras

    from aebench import accuracy, models, worker

    threads = max(matrix.threads)
    rows: list[dict[str, Any]] = []
    data_of: dict[str, worker.TrainingData] = {}  # by quality key: the same images whatever the value tried
    for value in values:
        hparams = {**matrix.hparams.get(variant, {}), key: value}
        tuned = replace(matrix, hparams={**matrix.hparams, variant: hparams})
        for cell in (c for c in tuned.cells() if c.variant == variant and c.threads in (threads, None)):
            data = data_of.get(cell.quality_key) or data_of.setdefault(
                cell.quality_key, worker.training_data(tuned, cell, dataset))
            model, _, _ = worker.build_model(tuned, cell)
            training, curve = worker.train_to_quality(tuned, cell, model, data)
            metrics = curve.metrics()
            codes = keras.ops.convert_to_numpy(models.encoder_of(model)(data.noisy_validation, training=False))
            rows.append({key: value, "noise": cell.noise, "val PSNR (dB)": metrics["quality.val_psnr_db"],
                         "val gain (dB)": metrics["quality.val_gain_db"],
                         "time to target (s)": to_target_text("speed.time_to_target_s",
                                                              metrics["speed.time_to_target_s"],
                                                              metrics["quality.target_reached"]),
                         # mean |h|, as the cells' diag.mean_activation: a saturated sigmoid code sits near 1
                         "mean code activation": accuracy.latent_activation_stats(codes)["diag.mean_activation"],
                         "train loss": training.final_loss})
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, key: str) -> str:
    """The rows, then the value with the best mean validation gain over the noise levels."""
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    best = table.groupby(key)["val gain (dB)"].mean().idxmax()
    return f"{text}\nbest {key} by mean validation gain: {best:g}"
