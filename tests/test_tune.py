"""aebench tune: hyperparameters compared on the held-out validation slice, never on the test set."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from aebench import tune
from aebench.config import Matrix
from aebench.data import load_dataset
from aebench.errors import UserError
from support import tiny_matrix_dict


def test_tune_scores_each_value_on_the_validation_slice_without_the_test_set(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset("mnist", tiny_dataset_dir / "mnist.npz")
    # No test image at all: a tuning run that looked at one would fail here.
    blind = replace(dataset, x_test=np.empty((0, 28, 28, 1), np.float32), y_test=np.empty(0, np.int64))
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["contractive"], noise=[0.3, 0.5], threads=[1]))
    key, values = tune.parse_values("contractive", "contractive_lambda=0,1e-3")
    table = tune.tune(matrix, blind, "contractive", key, values)
    assert list(zip(table[key], table["noise"])) == [(0.0, 0.3), (0.0, 0.5), (1e-3, 0.3), (1e-3, 0.5)]
    assert table["val gain (dB)"].notna().all() and table["mean code activation"].between(0, 1).all()
    text = tune.format_table(table, key)
    assert "val gain (dB)" in text and text.splitlines()[-1].startswith("best contractive_lambda by mean validation")


@pytest.mark.parametrize(("text", "message"), [
    ("lambda=1", "--param 'lambda=1' is invalid: allowed KEY=V1,V2,... with KEY one of latent_dim, hidden_units, "
                 "contractive_lambda, center_input"),
    ("contractive_lambda=2", "contractive.contractive_lambda = 2 is out of range"),
    ("latent_dim=1.5", "latent_dim must be an int"),
])
def test_bad_values_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        tune.parse_values("contractive", text)


def test_the_command_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture) -> None:
    from aebench.cli import main

    assert main(["tune", "resnet", "--param", "latent_dim=8"]) == 2
    assert capsys.readouterr().err.strip() == ("aebench: error: variant 'resnet' is unknown: allowed undercomplete, "
                                               "sparse_l1, sparse_kl, denoising, contractive, conv")
    assert main(["tune", "conv", "--param", "latent_dim=8"]) == 2
    assert "--param 'latent_dim=8' is invalid: allowed KEY=V1,V2,... with KEY one of (none)" in capsys.readouterr().err
