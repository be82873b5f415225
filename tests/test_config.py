from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from aebench import config
from aebench.config import Cell, Matrix, apply_overrides, load_matrix
from aebench.errors import UserError
from support import tiny_matrix_dict


def test_shipped_quick_matrix_covers_the_required_sweep() -> None:
    matrix = load_matrix("quick")
    cells = matrix.cells()
    assert set(matrix.variants) == {"undercomplete", "sparse_l1", "sparse_kl", "denoising", "contractive", "conv"}
    assert len(matrix.noise) >= 3 and len(matrix.threads) >= 2
    assert len(cells) == 6 * len(matrix.noise) * len(matrix.threads)
    assert [c.index for c in cells] == list(range(len(cells)))
    assert len({c.key for c in cells}) == len(cells)


def test_every_shipped_matrix_validates() -> None:
    for path in config.MATRICES_DIR.glob("*.toml"):
        assert load_matrix(path).cells(), path


def test_expansion_pins_threads_on_cpu_only() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(device=["cpu", "gpu"], threads=[1, 2], variants=["conv"]))
    cells = matrix.cells()
    assert [(c.device, c.threads) for c in cells] == [("cpu", 1), ("cpu", 2), ("gpu", None)]


def test_repeats_expand_to_consecutive_seeds() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], seed=7, repeats=3))
    assert [c.seed for c in matrix.cells()] == [7, 8, 9]


def test_scalar_axis_is_a_one_element_list() -> None:
    assert Matrix.from_dict(tiny_matrix_dict(noise=0.4)).noise == (0.4,)


def test_overrides_parse_values_as_toml(tmp_path: Path) -> None:
    matrix = load_matrix("quick", ['variants=["conv"]', "epochs=2", "latency.min_count=5", "dataset=fashion_mnist",
                                   "hparams.sparse_kl.rho=0.1"])
    assert matrix.variants == ("conv",)
    assert matrix.epochs == 2 and matrix.latency.min_count == 5
    assert matrix.dataset == "fashion_mnist"
    assert matrix.hparams == {"sparse_kl": {"rho": 0.1}}


def test_cell_round_trips_through_dict() -> None:
    cell = Matrix.from_dict(tiny_matrix_dict(hparams={"undercomplete": {"latent_dim": 16}})).cells()[0]
    assert Cell.from_dict(cell.to_dict()) == cell
    assert dict(cell.hparams) == {"latent_dim": 16}


@pytest.mark.parametrize(("change", "message"), [
    ({"variant": "conv/extra"}, r"Cell.variant 'conv/extra' is invalid: allowed a non-empty name without '/'"),
    ({"backend": ""}, "Cell.backend '' is invalid"),
    ({"device": "fpga"}, "Cell.device 'fpga' is invalid: allowed cpu, gpu, tpu"),
    ({"noise": -0.1}, "Cell.noise -0.1 is invalid: allowed a finite level >= 0"),
    ({"noise": float("nan")}, "Cell.noise nan is invalid"),
    ({"threads": 0}, "Cell.threads 0 is invalid: allowed an integer >= 1"),
    ({"threads": True}, "Cell.threads True is invalid"),
    ({"device": "gpu", "threads": 2}, "Cell.threads 2 is invalid: allowed none on a gpu cell"),
    ({"seed": -1}, "Cell.seed -1 is invalid"),
    ({"index": 1.5}, "Cell.index 1.5 is invalid"),
])
def test_a_cell_no_matrix_could_give_is_refused(change: dict, message: str) -> None:
    """Cells come back from stores and worker tasks too: one whose key would be ambiguous or meaningless is refused."""
    data = {**Matrix.from_dict(tiny_matrix_dict()).cells()[0].to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        Cell.from_dict(data)


def test_matrix_round_trips_through_dict() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    assert Matrix.from_dict(matrix.to_dict()) == matrix


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": ["resnet"]}, "variants = 'resnet' is invalid: allowed one of undercomplete"),
        ({"noise": [-0.1]}, "noise = -0.1 is invalid: allowed finite numbers >= 0"),
        ({"noise": [float("nan")]}, "noise = nan is invalid"),
        ({"threads": [0]}, "threads = 0 is invalid"),
        ({"epochs": 1}, "epochs = 1 is invalid: allowed integers >= 2"),
        ({"batch_size": 1.5}, "batch_size = 1.5 is invalid"),
        ({"dataset": "cifar10"}, "dataset = 'cifar10' is invalid: allowed one of mnist, fashion_mnist"),
        ({"device": ["fpga"]}, "device = 'fpga' is invalid"),
        ({"noise": [0.2, 0.2]}, "without duplicates"),
        ({"colour": "red"}, "unknown matrix key 'colour'"),
        ({"latency": {"min_cnt": 3}}, "unknown key 'latency.min_cnt'"),
        ({"hparams": {"sparse_kl": {"rho": 1.5}}}, "hparams.sparse_kl"),
        ({"hparams": {"nope": {}}}, "hparams.nope"),
        ({"noise_type": "masking", "noise": [1.5]}, "fractions from 0 to 1"),
        ({"variants": ["conv", "denoising"], "noise_type": "masking"},
         "noise_type = 'masking' is invalid: allowed 'gaussian' with denoising, which corrupts its own input"),
        ({"throughput": {"batch_size": 4096}}, "throughput.batch_size = 4096 is invalid"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        Matrix.from_dict(tiny_matrix_dict(**overrides))
    assert "\n" not in str(info.value)


def test_noise_levels_that_share_a_cell_key_are_refused() -> None:
    with pytest.raises(UserError, match="noise = .* is invalid: allowed levels that differ in a cell key"):
        Matrix.from_dict(tiny_matrix_dict(noise=[0.2, 0.2000001]))


def test_set_into_a_key_that_is_not_a_table_is_one_line() -> None:
    with pytest.raises(UserError, match="latency = 5 is invalid: allowed a table, for --set latency.warmup"):
        apply_overrides(tiny_matrix_dict(latency=5), ["latency.warmup=1"])


def test_missing_required_key() -> None:
    raw = tiny_matrix_dict()
    del raw["noise"]
    with pytest.raises(UserError, match="'noise' is missing"):
        Matrix.from_dict(raw)


def test_unknown_set_key_lists_allowed_keys() -> None:
    with pytest.raises(UserError, match="unknown key 'epoch'.*allowed.*epochs"):
        load_matrix("quick", ["epoch=2"])


def test_set_without_equals_sign() -> None:
    with pytest.raises(UserError, match="allowed key=value"):
        load_matrix("quick", ["epochs"])


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = 'x'\nvariants = [conv\n")
    with pytest.raises(UserError, match="bad.toml: malformed TOML"):
        load_matrix(path)


def test_missing_matrix_file_lists_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found.*quick"):
        load_matrix(tmp_path / "nope.toml")


@pytest.mark.parametrize(("spec", "expected"), [(None, [0, 1, 2, 3, 4]), ("1/2", [0, 2, 4]), ("2/2", [1, 3])])
def test_shard(spec: str | None, expected: list[int]) -> None:
    cells = Matrix.from_dict(tiny_matrix_dict(noise=[0.0, 0.1, 0.2, 0.3, 0.4], variants=["conv"])).cells()
    assert [c.index for c in config.shard(cells, spec)] == expected


def test_a_shard_keeps_every_thread_count_of_a_model_together() -> None:
    """One of a model's cells trains the weights the others time: a shard that split them could not run."""
    cells = Matrix.from_dict(tiny_matrix_dict(noise=[0.1, 0.2, 0.3], variants=["conv"], threads=[1, 2])).cells()
    first, second = config.shard(cells, "1/2"), config.shard(cells, "2/2")
    assert [(c.noise, c.threads) for c in first] == [(0.1, 1), (0.1, 2), (0.3, 1), (0.3, 2)]
    assert [(c.noise, c.threads) for c in second] == [(0.2, 1), (0.2, 2)]


def test_a_task_carries_only_the_settings_that_differ_from_the_defaults() -> None:
    """A worker of another revision (aebench ab) meets a key added since only when the matrix sets it."""
    matrix = Matrix.from_dict(tiny_matrix_dict())
    task = matrix.to_task()
    assert Matrix.from_dict(task) == matrix
    assert "time_to_quality" in task  # the tiny matrix sets every_steps
    assert "validation_size" in task and "memory_limit_mb" not in task and "checkpoint" not in task
    assert "precision" not in Matrix.from_dict(tiny_matrix_dict(precision=["float32"])).to_task()


def test_the_validation_slice_must_fit_beside_the_training_subset() -> None:
    with pytest.raises(UserError, match=r"train_size = 59500 is invalid: allowed <= 59000: the 1000 images"):
        Matrix.from_dict(tiny_matrix_dict(train_size=59500, validation_size=1000))
    assert Matrix.from_dict(tiny_matrix_dict(train_size=59900, validation_size=100)).train_size == 59900


@pytest.mark.parametrize("spec", ["0/2", "3/2", "a/b", "1"])
def test_bad_shard(spec: str) -> None:
    with pytest.raises(UserError, match="--shard"):
        config.shard([], spec)


def test_the_ab_profile_is_the_quick_profile_on_fewer_cells() -> None:
    quick, ab = (config.load_matrix(name).to_dict() for name in ("quick", "ab"))
    axes = ("name", "description", "variants", "noise", "threads")
    assert {key: value for key, value in ab.items() if key not in axes} == \
        {key: value for key, value in quick.items() if key not in axes}
    assert set(ab["variants"]) < set(quick["variants"]) and set(ab["noise"]) <= {0.3}


def test_a_cosine_schedule_decays_over_the_training_runs_steps() -> None:
    cosine = Matrix.from_dict(tiny_matrix_dict(lr_schedule="cosine", epochs=3, train_size=250, batch_size=64))
    assert cosine.decay_steps == 3 * 4  # ceil(250 / 64) = 4 steps per epoch
    assert Matrix.from_dict(tiny_matrix_dict()).decay_steps is None
    with pytest.raises(UserError, match="lr_schedule = 'linear' is invalid: allowed one of constant, cosine"):
        Matrix.from_dict(tiny_matrix_dict(lr_schedule="linear"))


def test_every_matrix_field_but_the_listed_ones_is_a_setting() -> None:
    """A field added to Matrix counts as a setting (runs that differ in it are not compared) unless it is listed as
    leaving the figures' meaning alone: the safe default."""
    from aebench.config import NOT_SETTINGS, matrix_settings

    fields = {spec.name for spec in dataclasses.fields(Matrix)}
    assert NOT_SETTINGS <= fields
    assert set(matrix_settings({})) == fields - NOT_SETTINGS
    assert {"lr_schedule", "train_timing", "time_to_quality", "validation_size"} <= set(matrix_settings({}))


def test_a_setting_a_stored_run_predates_counts_as_its_default() -> None:
    from aebench.config import settings_differences

    stored = Matrix.from_dict(tiny_matrix_dict()).to_dict()
    older = json.loads(json.dumps(stored))  # through JSON, as a store keeps it: lists, not tuples
    del older["lr_schedule"]
    del older["time_to_quality"]["target_gain_db"]  # at its default
    assert settings_differences([{"matrix": older}], [{"matrix": stored}]) == []
    schedule = {**stored, "lr_schedule": "cosine", "train_timing": {"steps": 5, "repeats": 3}}
    assert settings_differences([{"matrix": stored}], [{"matrix": schedule}]) == [
        "lr_schedule: 'constant' -> 'cosine'",
        "train_timing: {'repeats': 2, 'steps': 2} -> {'repeats': 3, 'steps': 5}"]
