"""``aebench ab``: paired A/B rounds of two revisions, with verdicts a CI can gate on.

One run against one run cannot tell a speed change from this machine's noise, which lives between processes and
between minutes. ``ab`` runs the two revisions in **rounds** instead (asv's ``continuous``, Chromium Pinpoint's
pairwise mode): every round runs each cell once on each side, in balanced random order (AB in half the rounds, BA in
the other half), each in a fresh worker process, and the verdict comes from the rounds' paired log ratios
(``aebench.stats``). Rounds are added until every verdict settles or a round or time budget runs out.

- **Quality** needs no rounds: with the same seed, identical code gives bit-identical figures. A quality pass runs
  every cell once per side with the matrix as given; its figures are compared exactly, with the trained weights'
  hash beside them, so "bit-identical" is visible.
- **Speed rounds** time the weights the quality pass trained (each model once per side, in its most-threads cell,
  as ``aebench run`` does), loaded in a fresh worker without training and without the accuracy extras, so that many
  rounds fit in minutes. Without a quality pass (``--no-quality``), or on a revision older than train-once, each
  run trains its own 2-epoch run on ``speed_train_size`` images first. The training steps over those images are
  timed after a warm-up repeat, as always; the number of timed repeats is sized per cell from the quality pass's
  training speed so that they last about ``speed_train_s`` seconds (a dense AE's 2,048 images take a tenth of a
  second: too short to time well). Both sides run the same settings, so their ratio is what a round measures.
- **Duet** (``--duet``): both sides run at the same time, each on its own core with one thread, swapping cores from
  round to round, so both see the same machine state (Bulej et al., "Duet benchmarking", 2020).
- **Calibration** (``--calibrate``): extra candidate sides run the same revision with a known amount of busy work
  added to the compiled call and the training step; with an A/A side beside them this measures the false-alarm and
  detection rates this machine gives (aebench.ab.calibration_summary). Every side times the weights the base
  trained once (one revision, one seed: the same weights).

A shipped matrix (``quick``) is part of each revision and is read from that revision's own files, so a commit that
changes a profile is compared as such, and the difference is printed; a matrix file given by path is the same for
both sides. Execution is behind a small interface (``Executor``) so the round logic is tested with fake figures.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set as AbstractSet
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from aebench import load, machinelock, stats
from aebench.config import Cell, Matrix, settings_differences
from aebench.errors import CannotWrite, UserError
from aebench.metrics import REGISTRY, flag_is_set
from aebench.results import CellResult
from aebench.revisions import Revision

Clock = Callable[[], float]
SPEED_TRAIN_SIZE = 2048  # images per epoch in speed rounds: 16 batches of 128
SPEED_TRAIN_S = 1.0  # steady training time a speed round aims for, per cell
MAX_SPEED_EPOCHS = 50  # a speed round's timed steps: warm-up plus at most 49 timed repeats
DEFAULT_MAX_ROUNDS = 20
# Sized so that `aebench ab` on 4 quick-profile cells (the A/A example) ends within 10 minutes on 2 cores,
# the quality pass and the worker start-up included.
DEFAULT_BUDGET_S = 540.0


def speed_metrics() -> list[str]:
    """The speed figures ab gives verdicts on: the registry's gated speed metrics."""
    return [metric.name for metric in REGISTRY.gated("speed")]


# -- what runs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a revision with the matrix it runs, and for calibration a known amount of added
    work."""

    label: str
    revision: Revision
    matrix: Matrix
    spike: float = 0.0  # extra busy work as a fraction of each timed call and training step (calibration only)

    @property
    def slug(self) -> str:
        """The label as a file name ("A/A" and "spike 10%" are labels)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label)

    @cached_property
    def times_training_steps(self) -> bool:
        """Whether this revision's worker times training in steps from the trained weights (``[train_timing]``) or,
        older, over the steady epochs of its training run. A speed round asks each in its own terms: an older worker
        refuses a matrix key it does not know."""
        config = self.revision.site / "aebench" / "config.py"
        if not config.is_file():  # no installed revision (the tests' fake sides): today's layout
            return True
        return '"train_timing"' in config.read_text(encoding="utf-8")

    @property
    def shares_weights(self) -> bool:
        """Whether this revision's worker can time weights trained by another run instead of training (``trains`` and
        ``weights_path`` came with the steps above, in one commit): then speed rounds time the quality pass's
        weights, the model as it is used, and skip training altogether."""
        return self.times_training_steps

    @cached_property
    def _cells(self) -> dict[str, Cell]:
        return {cell.key: cell for cell in self.matrix.cells()}

    def cell(self, key: str) -> Cell:
        """This side's cell of that key (its hyperparameters come from its own matrix)."""
        try:
            return self._cells[key]
        except KeyError:
            raise KeyError(f"{self.label}'s matrix has no cell {key}") from None


@dataclass(frozen=True)
class Settings:
    min_rounds: int = stats.MIN_ROUNDS
    max_rounds: int = DEFAULT_MAX_ROUNDS
    budget_s: float = DEFAULT_BUDGET_S
    speed_train_size: int = SPEED_TRAIN_SIZE
    speed_train_s: float = SPEED_TRAIN_S
    duet: bool = False
    seed: int = 0
    margins: Mapping[str, float] = field(default_factory=REGISTRY.margins)

    def __post_init__(self) -> None:
        if self.min_rounds < 1:
            raise UserError(f"--min-rounds {self.min_rounds} is invalid: allowed integers >= 1")
        if self.max_rounds < self.min_rounds:
            raise UserError(f"--max-rounds {self.max_rounds} is invalid: allowed integers >= --min-rounds "
                            f"({self.min_rounds})")
        if not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UserError(f"--budget-s {self.budget_s!r} is invalid: allowed seconds > 0")
        if self.speed_train_size < 1:
            raise UserError(f"--speed-train-size {self.speed_train_size} is invalid: allowed integers >= 1")
        if not (math.isfinite(self.speed_train_s) and self.speed_train_s > 0):
            raise UserError(f"--speed-train-s {self.speed_train_s!r} is invalid: allowed seconds > 0")


def speed_matrix(matrix: Matrix, train_size: int, train_ips: float | None = None,
                 train_s: float = SPEED_TRAIN_S, noise: float | None = None, in_steps: bool = True) -> Matrix:
    """The matrix a speed round runs for one cell: where it trains at all (no weights kept for it), a 2-epoch training
    run on at most ``train_size`` images (the weights it times; their quality is not judged here); then training
    steps over those images, timed in enough repeats to take about ``train_s`` seconds at ``train_ips`` (one timed
    repeat when the speed is unknown). Nothing a round does not time: no reference classifier, latent probe or
    framework path, a robustness sweep of the cell's own ``noise`` level only, and no more test images than the
    Offline batch needs.

    ``in_steps=False`` asks an older worker, which times the steady epochs of its training run, for the same timed
    work as epochs: one warm-up epoch and as many steady ones as there would be repeats."""
    images = min(matrix.train_size, train_size)
    repeats = 1 if not train_ips else min(MAX_SPEED_EPOCHS - 1, max(1, math.ceil(train_s * train_ips / images)))
    common = {"train_size": images, "accuracy": False, "predict_path": False, "checkpoint": False,
              "eval_noise": (noise,) if noise is not None else matrix.eval_noise,
              "test_size": max(matrix.throughput.batch_size, 1)}
    if not in_steps:
        return replace(matrix, epochs=1 + repeats, **common)
    timing = replace(matrix.train_timing, steps=math.ceil(images / matrix.batch_size), repeats=repeats)
    return replace(matrix, epochs=2, train_timing=timing, **common)


def timed_repeats(matrix: Matrix, in_steps: bool) -> int:
    """How many timed repeats of its training a speed round's matrix asks for (steady epochs of an older worker)."""
    return matrix.train_timing.repeats if in_steps else matrix.epochs - 1


def speed_matrices(sides: Sequence[Side], keys: Sequence[str], settings: Settings,
                   sized_by: Mapping[str, CellResult] | None = None) -> dict[tuple[str, str], Matrix]:
    """(side label, cell key) -> the matrix of its speed rounds, each side's own, sized alike for both sides by the
    training speed the base measured (in the quality pass), so a round gives both sides the same amount of work."""
    def ips(key: str) -> float | None:
        result = (sized_by or {}).get(key)
        value = result.metrics.get("speed.train_ips") if result is not None and result.status == "ok" else None
        return float(value) if value else None

    return {(side.label, key): speed_matrix(side.matrix, settings.speed_train_size, ips(key), settings.speed_train_s,
                                            side.cell(key).noise, side.times_training_steps)
            for side in sides for key in keys}


class Executor(Protocol):
    """Runs one cell on one side and returns its result (a fresh worker process per call)."""

    def run(self, side: Side, matrix: Matrix, cell: Cell, cpus: Sequence[int] | None = None,
            trains: bool = True) -> CellResult:
        """Run one cell. A cell that ``trains`` keeps its weights for its revision's other runs of that model (when
        ``side.shares_weights``); one that does not times the weights kept."""
        ...

    def new_round(self, sides: Sequence[Side], backends: Sequence[str]) -> None:
        """Called before each round: a chance to start every side afresh."""


# -- rounds -----------------------------------------------------------------------------------------------------------


@dataclass
class Rounds:
    """Every speed figure of every round: side label -> cell key -> metric -> one value per round (NaN if missing)."""

    figures: dict[str, dict[str, dict[str, list[float]]]]
    count: int = 0
    durations_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failed: dict[str, set[str]] = field(default_factory=dict)  # side label -> keys of the cells that failed there
    # side label -> cell key -> rounds whose figures a load check found contaminated (left out, as NaN)
    contaminated: dict[str, dict[str, int]] = field(default_factory=dict)
    # cell key -> the side labels in the order they ran, one list per round
    orders: dict[str, list[list[str]]] = field(default_factory=dict)

    def add(self, side: str, result: CellResult, metrics: Sequence[str]) -> None:
        per_metric = self.figures.setdefault(side, {}).setdefault(result.cell.key, {})
        dirty = result.status == "ok" and flag_is_set(result.metrics.get(load.CONTAMINATED))
        if dirty:  # something else used the machine meanwhile: this round says nothing about the code
            per_side = self.contaminated.setdefault(side, {})
            per_side[result.cell.key] = per_side.get(result.cell.key, 0) + 1
        for metric in metrics:
            value = result.metrics.get(metric) if result.status == "ok" and not dirty else None
            per_metric.setdefault(metric, []).append(math.nan if value is None else float(value))
        if result.status != "ok":
            self.failures.append(f"{side} {result.cell.key}: {result.status}: {result.error}")
            self.failed.setdefault(side, set()).add(result.cell.key)

    def left_out(self, base: str, candidate: str, metrics: Sequence[str]) -> list[tuple[str, str]]:
        """(cell, metric) pairs that no round could compare because load checks left their figures out: no verdict
        exists for them, so they count as unknown and keep the rounds going."""
        missing = []
        for key, ours in self.figures.get(base, {}).items():
            if not (self.contaminated.get(base, {}).get(key) or self.contaminated.get(candidate, {}).get(key)):
                continue
            theirs = self.figures.get(candidate, {}).get(key, {})
            missing += [(key, metric) for metric in metrics if ours.get(metric) and theirs.get(metric)
                        and len(stats.log_ratios(ours[metric], theirs[metric])) == 0]
        return missing


def balanced_orders(count: int, sides: int, rng: random.Random) -> list[list[int]]:
    """Side orders for ``count`` rounds, in blocks of as many rounds as there are orders (two sides: AB and BA), each
    block a random permutation of them. Rounds often stop early (settled, budget), so every prefix must stay balanced:
    a whole-list shuffle could run 8 AB and 3 BA in the first 11 of 20; blocks keep any prefix within one round of
    even. With more sides, each block rotates the side order so every side takes every position once."""
    if sides == 2:
        blocks = [rng.sample([[0, 1], [1, 0]], 2) for _ in range((count + 1) // 2)]
        return [order for block in blocks for order in block][:count]
    orders: list[list[int]] = []
    while len(orders) < count:
        first = rng.sample(range(sides), sides)
        rotations = [first[shift:] + first[:shift] for shift in range(sides)]
        orders.extend(rng.sample(rotations, sides))
    return orders[:count]


def compare_sides(rounds: Rounds, base: str, candidate: str, margins: Mapping[str, float],
                  metrics: Sequence[str]) -> list[stats.SpeedComparison]:
    """Verdicts of candidate against base over every (cell, metric) both sides measured, their p-values adjusted
    together (Benjamini-Hochberg, ``stats.adjust``)."""
    comparisons = []
    for key, per_metric in rounds.figures.get(base, {}).items():
        other = rounds.figures.get(candidate, {}).get(key, {})
        for metric in metrics:
            a, b = per_metric.get(metric), other.get(metric)
            if not a or not b or len(stats.log_ratios(a, b)) == 0:
                continue
            comparisons.append(judge_rounds(key, metric, a, b, margins))
    return stats.decide(comparisons)


def judge_rounds(key: str, metric: str, base: Sequence[float], candidate: Sequence[float],
                 margins: Mapping[str, float]) -> stats.SpeedComparison:
    """One figure's paired rounds against its margin, in its registry direction (the verdict comes from
    ``stats.decide`` over the whole family)."""
    return stats.compare_rounds(key, metric, base, candidate, higher_is_better=REGISTRY[metric].better == "higher",
                                margin_pct=margins[metric])


Trained = AbstractSet[tuple[str, str]]  # (commit, quality key) of every model whose weights a pass kept


def _trains(side: Side, cell: Cell, trained: Trained) -> bool:
    """Whether a speed round's run of ``cell`` trains its own short run's weights: only when its revision trained
    none for this model in the passes before the rounds (or cannot time another run's)."""
    return not (side.shares_weights and (side.revision.commit, cell.quality_key) in trained)


def play_rounds(executor: Executor, sides: Sequence[Side], matrices: Mapping[tuple[str, str], Matrix],
                keys: Sequence[str], settings: Settings, *, trained: Trained = frozenset(),
                clock: Clock = time.monotonic,
                note: Callable[[str], None] = lambda text: None) -> tuple[Rounds, str]:
    """Run rounds until every candidate's verdicts settle (from ``min_rounds`` on), ``max_rounds`` are done, or the
    next round would not fit in the time left of ``budget_s``. Returns the figures and why it stopped. A model in
    ``trained`` is timed from the weights kept for it, without training."""
    rng = random.Random(settings.seed)
    metrics = speed_metrics()
    rounds = Rounds(figures={side.label: {} for side in sides})
    orders = {key: balanced_orders(settings.max_rounds, len(sides), rng) for key in keys}
    backends = sorted({side.cell(key).backend for side in sides for key in keys})
    started = clock()
    while True:
        if rounds.count >= settings.max_rounds:
            return rounds, f"max rounds ({settings.max_rounds})"
        elapsed = clock() - started
        typical = sorted(rounds.durations_s)[len(rounds.durations_s) // 2] if rounds.durations_s else 0.0
        if rounds.count and elapsed + typical > settings.budget_s:
            return rounds, f"time budget ({settings.budget_s:.0f} s for the rounds)"
        round_start = clock()
        executor.new_round(sides, backends)
        for key in keys:
            order = [sides[i] for i in orders[key][rounds.count]]
            rounds.orders.setdefault(key, []).append([side.label for side in order])
            for side, result in zip(order, _run_pair(executor, order, matrices, key, settings, trained)):
                rounds.add(side.label, result, metrics)
        rounds.count += 1
        rounds.durations_s.append(clock() - round_start)
        if rounds.count >= settings.min_rounds:
            verdicts = [c for side in sides[1:]
                        for c in compare_sides(rounds, sides[0].label, side.label, settings.margins, metrics)]
            left_out = sum(len(rounds.left_out(sides[0].label, side.label, metrics)) for side in sides[1:])
            if stats.settled(verdicts) and not left_out:
                return rounds, "every verdict settled"
            unknown = sum(c.verdict == "unknown" for c in verdicts) + left_out
            note(f"round {rounds.count}: {unknown} verdicts still unknown ({clock() - started:.0f} s)")
        else:
            note(f"round {rounds.count} ({clock() - started:.0f} s)")


def _run_pair(executor: Executor, order: Sequence[Side], matrices: Mapping[tuple[str, str], Matrix], key: str,
              settings: Settings, trained: Trained) -> list[CellResult]:
    if not settings.duet:
        return [executor.run(side, matrices[side.label, key], side.cell(key), trains=_trains(side, side.cell(key),
                                                                                             trained))
                for side in order]
    # Duet: both at once, each on its own core; the order decides which side gets the first core this round.
    from aebench import machine

    cores = machine.usable_cpus()[:2]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(executor.run, side, matrices[side.label, key], side.cell(key), [core],
                               _trains(side, side.cell(key), trained))
                   for side, core in zip(order, cores)]
        return [future.result() for future in futures]


def quality_pass(executor: Executor, sides: Sequence[Side], keys: Sequence[str],
                 seed: int) -> dict[str, dict[str, CellResult]]:
    """Each cell once per side with its matrix as given, in random side order: side label -> cell key -> result.

    As in ``aebench run``, each model trains once per side, in the cell asking for the most threads, and its other
    thread counts time those weights and share its quality figures (``info.trained_by``), where the side's revision
    can (``Side.shares_weights``); an older one trains every cell."""
    from aebench.runner import SharedTraining, plan_training

    rng = random.Random(seed + 1)
    results: dict[str, dict[str, CellResult]] = {side.label: {} for side in sides}
    training = {side.label: SharedTraining(plan_training([side.cell(key) for key in keys]), {}) for side in sides}
    order = [cell.key for cell in training[sides[0].label].plan.order(sides[0].cell(key) for key in keys)]
    for key in order:
        for side in rng.sample(list(sides), len(sides)):
            cell, shared = side.cell(key), training[side.label]
            if not side.shares_weights:
                results[side.label][key] = executor.run(side, side.matrix, cell)
                continue
            blocked = shared.blocked(cell)
            results[side.label][key] = blocked or shared.settle(
                executor.run(side, side.matrix, cell, trains=shared.plan.trains(cell)))
    return results


def kept_weights(sides: Sequence[Side], results: Mapping[str, Mapping[str, CellResult]]) -> set[tuple[str, str]]:
    """(commit, quality key) of every model a pass trained ok, whose weights the speed rounds then time."""
    return {(side.revision.commit, result.cell.quality_key) for side in sides
            for result in results.get(side.label, {}).values() if side.shares_weights and result.trained_its_model}


def compare_quality(results: Mapping[str, Mapping[str, CellResult]], base: str, candidate: str,
                    margins: Mapping[str, float]) -> list[stats.QualityComparison]:
    """Every quality figure of every cell both sides ran: the gated ones judged against their margins, any other
    figure that differs reported as ``changed`` evidence (verdict ``same``: no margin applies to it). Each model is
    judged once, under the cell that trained it, where both sides' other thread counts timed those weights (their
    figures are the trainer's: one change would count once per thread count)."""
    rows = []
    for key, a in results[base].items():
        b = results[candidate].get(key)
        if b is None or a.status != "ok" or b.status != "ok":
            continue
        trainer = a.info.get("trained_by")
        if (trainer not in (None, key) and trainer == b.info.get("trained_by")
                and trainer in results[base] and trainer in results[candidate]):
            continue
        for metric in REGISTRY.sort_columns(sorted(set(a.metrics) & set(b.metrics))):
            entry = REGISTRY.find(metric)
            if entry is None or entry.group != "quality" or entry.better is None:
                continue
            x, y = a.metrics[metric], b.metrics[metric]
            if x is None and y is None:
                continue
            if y is None or x is None:
                # A figure one side lost (a NaN, stored as None): lost on the candidate is a regression; one the
                # candidate gained where the base had none is reported as changed.
                lost = y is None
                rows.append(stats.QualityComparison(key, metric, math.nan if x is None else float(x),
                                                    math.nan if y is None else float(y), math.nan,
                                                    margins.get(metric, math.inf), "regression" if lost else "same"))
                continue
            rows.append(stats.quality_verdict(key, metric, float(x), float(y), higher_is_better=entry.better == "higher",
                                              margin=margins.get(metric, math.inf)))
    return rows


# -- the outcome ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    base: Side
    candidates: list[Side]
    settings: Settings
    rounds: Rounds
    stop_reason: str
    speed: dict[str, list[stats.SpeedComparison]]  # candidate label -> verdicts
    quality: dict[str, list[stats.QualityComparison]]
    quality_results: dict[str, dict[str, CellResult]]
    elapsed_s: float
    contamination: str | None = None  # why the speed figures are not clean (--allow-concurrent beside another run)

    @property
    def candidate(self) -> Side:
        return self.candidates[0]

    @property
    def matrix(self) -> Matrix:
        return self.base.matrix

    def matrix_differences(self) -> list[str]:
        """The settings in which the candidate's matrix differs from the base's (a shipped matrix is part of each
        revision), as 'epochs: 3 -> 2'."""
        return settings_differences([{"matrix": self.base.matrix.to_dict()}],
                                    [{"matrix": self.candidate.matrix.to_dict()}])

    def broken(self, label: str | None = None) -> list[str]:
        """Cells that failed on the candidate (in the quality pass or any round) but never on the base: a candidate
        that crashes or times out is a regression even where no figure can be compared."""
        label = label or self.candidate.label

        def failed(side: str) -> set[str]:
            in_quality = {key for key, result in self.quality_results.get(side, {}).items() if result.status != "ok"}
            return in_quality | self.rounds.failed.get(side, set())

        return sorted(failed(label) - failed(self.base.label))

    def lost_speed(self, label: str | None = None) -> list[tuple[str, str]]:
        """(cell, metric) speed figures the base measured in some round and the candidate in none (a cell that
        stopped reporting its training speed, say): no ratio exists, and the loss is a regression."""
        label = label or self.candidate.label
        lost = []
        for key, per_metric in self.rounds.figures.get(self.base.label, {}).items():
            theirs = self.rounds.figures.get(label, {}).get(key, {})
            if self.rounds.contaminated.get(label, {}).get(key):
                continue  # left out by a load check, not lost by the code
            for metric, values in per_metric.items():
                if np.isfinite(values).any() and not np.isfinite(theirs.get(metric, [math.nan])).any():
                    lost.append((key, metric))
        return lost

    def regressions(self, label: str | None = None) -> int:
        label = label or self.candidate.label
        return (sum(c.verdict == "regression" for c in self.speed.get(label, []))
                + sum(c.verdict == "regression" for c in self.quality.get(label, []))
                + len(self.broken(label)) + len(self.lost_speed(label)))

    def gated_quality(self, label: str | None = None) -> list[stats.QualityComparison]:
        """The quality figures with a margin: the judged ones."""
        return [q for q in self.quality.get(label or self.candidate.label, []) if math.isfinite(q.margin)]

    def changed_quality(self, label: str | None = None) -> list[stats.QualityComparison]:
        """The other quality figures that differ: evidence of what changed, reported without a verdict."""
        return [q for q in self.quality.get(label or self.candidate.label, [])
                if not math.isfinite(q.margin) and q.difference != 0]

    def family_size(self, label: str | None = None) -> int:
        """How many speed comparisons the p-value adjustment spans."""
        return len(self.speed.get(label or self.candidate.label, []))

    def too_few_rounds(self, label: str | None = None) -> int | None:
        """The rounds a lone change would need, when fewer ran (else None): before that only changes in several
        figures at once can be called (``stats.fewest_callable``)."""
        needed = stats.rounds_needed(self.family_size(label))
        return needed if self.family_size(label) and self.rounds.count < needed else None

    def unknowns(self, label: str | None = None) -> int:
        """Unknown verdicts, and the figures that load checks left without any comparable round."""
        label = label or self.candidate.label
        return (sum(c.verdict == "unknown" for c in self.speed.get(label, []))
                + len(self.rounds.left_out(self.base.label, label, speed_metrics())))

    def exit_status(self, strict: bool) -> int:
        return 1 if self.regressions() or (strict and self.unknowns()) else 0

    def weights(self, key: str) -> tuple[str | None, str | None]:
        """The trained weights' hashes of a cell on the base and the candidate (from the quality pass)."""
        def digest(side: Side) -> str | None:
            result = self.quality_results.get(side.label, {}).get(key)
            value = result.info.get("weights_sha256") if result is not None else None
            return str(value) if value else None

        return digest(self.base), digest(self.candidate)

    def spread_pct(self, label: str, key: str, metric: str) -> float:
        """Standard deviation of the per-round log ratios, as a percentage: the round-to-round noise of the pair."""
        ratios = stats.log_ratios(self.rounds.figures[self.base.label][key][metric],
                                  self.rounds.figures[label][key][metric])
        return float(math.expm1(ratios.std(ddof=1)) * 100) if len(ratios) > 1 else math.nan


def verdict_fields(comparison: stats.SpeedComparison, family_size: int) -> dict[str, Any]:
    """A decided comparison's verdict, change, interval and test as the JSON rows carry them (``speed_rows``,
    ``rejudge``)."""
    c = comparison
    return {"verdict": c.verdict, "change_pct": c.change_pct, "ci_low_pct": c.ci_low_pct, "ci_high_pct": c.ci_high_pct,
            "margin_pct": c.margin_pct, "rounds": c.rounds, "p_regression_adjusted": c.p_regression_adjusted,
            "detectable_pct": c.detectable_pct(family_size)}


def speed_rows(outcome: Outcome, label: str | None = None) -> list[dict[str, Any]]:
    label = label or outcome.candidate.label
    rows = []
    for c in outcome.speed.get(label, []):
        rows.append({"key": c.key, "metric": c.metric, "kind": "speed", **verdict_fields(c, outcome.family_size(label)),
                     "spread_pct": outcome.spread_pct(label, c.key, c.metric),
                     # The raw per-round figures the verdict came from (null: failed or left out), so that anyone can
                     # recompute it or look for an order effect with ``round_orders``.
                     "base_rounds": outcome.rounds.figures[outcome.base.label][c.key][c.metric],
                     "candidate_rounds": outcome.rounds.figures[label][c.key][c.metric]})
    return rows


def quality_rows(outcome: Outcome, label: str | None = None) -> list[dict[str, Any]]:
    """The gated quality figures as JSON rows, with the trained weights' identity."""
    rows = []
    for q in outcome.gated_quality(label):
        weights = outcome.weights(q.key)
        rows.append({"key": q.key, "metric": q.metric, "kind": "quality", "verdict": q.verdict,
                     "base": q.base, "candidate": q.candidate, "difference": q.difference,
                     "change_pct": (q.difference / abs(q.base) * 100) if q.base else math.nan,
                     "ci_low_pct": None, "ci_high_pct": None, "margin": q.margin, "rounds": 1,
                     "weights_identical": None if None in weights else weights[0] == weights[1],
                     "weights_sha256_base": weights[0], "weights_sha256_candidate": weights[1]})
    return rows


def json_document(outcome: Outcome) -> dict[str, Any]:
    """``{"rows": [...]}`` plus what was compared: the ``--json`` file a CI step reads."""
    def side(s: Side) -> dict[str, Any]:
        return {"label": s.label, "ref": s.revision.ref, "commit": s.revision.commit, "subject": s.revision.subject,
                "spike": s.spike}

    return {
        "base": side(outcome.base),
        "candidate": side(outcome.candidate),
        "matrix": outcome.matrix.name,
        "matrix_differences": outcome.matrix_differences(),
        "rounds": outcome.rounds.count,
        "stop_reason": outcome.stop_reason,
        "duet": outcome.settings.duet,
        "elapsed_s": round(outcome.elapsed_s, 1),
        "contaminated": outcome.contamination,  # null unless --allow-concurrent ran beside another benchmark
        # cell runs whose load checks found the machine busy, left out of the verdicts: side -> cell -> rounds
        "contaminated_rounds": outcome.rounds.contaminated,
        "regressions": outcome.regressions(),
        "unknown": outcome.unknowns(),
        "broken": outcome.broken(),  # cells that failed on the candidate only (each counts as a regression)
        "rows": [_jsonable(row) for row in speed_rows(outcome) + quality_rows(outcome)],
        # Quality figures without a margin that differ: evidence of what changed, without a verdict.
        "quality_changes": [_jsonable({"key": q.key, "metric": q.metric, "base": q.base, "candidate": q.candidate,
                                       "difference": q.difference}) for q in outcome.changed_quality()],
        "lost_speed_figures": [{"key": key, "metric": metric} for key, metric in outcome.lost_speed()],
        "round_orders": outcome.rounds.orders,  # cell key -> which side ran first in each round
    }


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with every non-finite number, in it or in its lists, as null (JSON has no NaN)."""
    def clean(value: Any) -> Any:
        if isinstance(value, list):
            return [clean(item) for item in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {key: clean(value) for key, value in row.items()}


def detectable_by_metric(outcome: Outcome, label: str | None = None) -> dict[str, float]:
    """Per speed metric, the median over cells of the smallest slowdown these rounds could have called."""
    frame = pd.DataFrame(speed_rows(outcome, label))
    if frame.empty:
        return {}
    frame = frame[np.isfinite(frame["detectable_pct"])]  # too few rounds for an interval: nothing is detectable
    return frame.groupby("metric", sort=False)["detectable_pct"].median().to_dict()


def _pct(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:+.1f}%"


def speed_table(outcome: Outcome, label: str | None = None) -> pd.DataFrame:
    """The speed verdicts with each pair's spread (the standard deviation of its per-round changes)."""
    from aebench.compare import speed_frame

    label = label or outcome.candidate.label
    comparisons = outcome.speed.get(label, [])
    table = speed_frame(comparisons, "rounds")
    spreads = [outcome.spread_pct(label, c.key, c.metric) for c in comparisons]
    table.insert(table.columns.get_loc("rounds"), "spread", [f"{v:.1f}%" if math.isfinite(v) else "" for v in spreads])
    return table


def quality_table(outcome: Outcome, label: str | None = None) -> pd.DataFrame:
    """The gated quality figures, then any other quality figure that differs, with the trained weights' identity."""
    from aebench.compare import quality_frame

    shown = outcome.gated_quality(label) + outcome.changed_quality(label)
    table = quality_frame(shown).rename(columns={"baseline": "base"})
    table.insert(table.columns.get_loc("verdict"), "weights (sha256)",
                 [_weights_cell(*outcome.weights(q.key)) for q in shown])
    return table


def _weights_cell(base: str | None, candidate: str | None) -> str:
    """Whether the trained weights are bit-identical, with the hashes' first 10 digits so it can be checked."""
    if base is None or candidate is None:
        return ""
    return f"identical {base[:10]}" if base == candidate else f"differ {base[:10]} -> {candidate[:10]}"


def _together(family_size: int, rounds: int) -> str:
    fewest = stats.fewest_callable(family_size, rounds)
    return f"; changes in {fewest} or more figures at once can be called" if fewest else ""


def format_text(outcome: Outcome, strict: bool = False) -> str:
    base, cand = outcome.base.revision, outcome.candidate.revision
    lines = [
        f"base:      {base.short}  {base.subject}",
        f"candidate: {cand.short}  {cand.subject}",
        f"matrix {outcome.matrix.name!r}: {outcome.rounds.count} rounds ({outcome.stop_reason}), "
        f"{'duet (both sides at once, one core each)' if outcome.settings.duet else 'sequential'}, "
        f"{outcome.elapsed_s:.0f} s",
    ]
    if outcome.contamination:
        lines.append(f"warning: speed figures contaminated ({outcome.contamination}): do not trust these verdicts")
    dirty = sum(count for per_side in outcome.rounds.contaminated.values() for count in per_side.values())
    if dirty:
        lines.append(f"note: {dirty} cell runs found the machine busy (load checks, aebench.load) and were left out")
    differences = outcome.matrix_differences()
    if differences:
        lines.append("the candidate's matrix differs from the base's (part of the change): " + "; ".join(differences))
    lines += [
        "",
        "speed (change of the candidate against the base; verdict from the 95% interval of the median per-round "
        "change, tests adjusted over the table):",
    ]
    table = speed_table(outcome)
    lines.append(table.to_string(index=False) if not table.empty else "  no speed figure was measured on both sides")
    detectable = detectable_by_metric(outcome)
    if detectable:
        lines.append("")
        lines.append("smallest slowdown these rounds could call a regression (median over cells): " + ", ".join(
            f"{REGISTRY.label(metric)} {value:.1f}%" for metric, value in detectable.items()))
    lines.append("")
    quality = quality_table(outcome)
    identical = all(q.difference == 0 for q in outcome.quality.get(outcome.candidate.label, []))
    lines.append("quality (quality pass, exact figures; the same seed gives bit-identical figures for identical code):")
    lines.append(quality.to_string(index=False) if not quality.empty else "  no cell ran on both sides")
    if identical and not quality.empty:
        lines.append("every quality figure is bit-identical")
    failures = [f"{side} {key}: {result.status}: {result.error}" for side, results in outcome.quality_results.items()
                for key, result in results.items() if result.status != "ok"] + outcome.rounds.failures
    if failures:
        lines.append("")
        lines.append(f"{len(failures)} cell runs failed: " + "; ".join(failures[:5]))
    for key in outcome.broken():
        lines.append(f"regression: {key} failed on the candidate and never on the base")
    for key, metric in outcome.lost_speed():
        lines.append(f"regression: {key} measured {REGISTRY.label(metric)} on the base but never on the candidate")
    needed = outcome.too_few_rounds()
    if needed:
        lines.append(f"warning: {outcome.rounds.count} rounds cannot call a change in one of these "
                     f"{outcome.family_size()} speed comparisons alone: that needs {needed} rounds"
                     f"{_together(outcome.family_size(), outcome.rounds.count)} (narrow the matrix, or raise "
                     "--budget-s or --max-rounds)")
    regressions, unknown = outcome.regressions(), outcome.unknowns()
    lines.append("")
    lines.append(f"{regressions} regressions, {unknown} unknown (exit {outcome.exit_status(strict)}"
                 f"{'' if strict else '; unknown fails only with --strict'})")
    return "\n".join(lines)


def format_markdown(outcome: Outcome) -> str:
    """The same tables for a CI job summary (GitHub's $GITHUB_STEP_SUMMARY, GitLab's report artifacts)."""
    base, cand = outcome.base.revision, outcome.candidate.revision
    parts = [
        f"### aebench ab: `{cand.short}` against `{base.short}`",
        "",
        f"{outcome.regressions()} regressions, {outcome.unknowns()} unknown; {outcome.rounds.count} rounds "
        f"({outcome.stop_reason}), matrix `{outcome.matrix.name}`."
        + "".join(f" `{key}` failed on the candidate only." for key in outcome.broken())
        + "".join(f" `{key}` measured {REGISTRY.label(metric)} on the base only."
                  for key, metric in outcome.lost_speed())
        + (f" **Speed figures contaminated** ({outcome.contamination})." if outcome.contamination else ""),
        "",
        "#### Speed",
        "",
        speed_table(outcome).to_markdown(index=False),
        "",
        "#### Quality",
        "",
        quality_table(outcome).to_markdown(index=False),
    ]
    return "\n".join(parts) + "\n"


def write_json(outcome: Outcome, path: Path) -> None:
    from aebench import atomic

    atomic.write_text(path, json.dumps(json_document(outcome), indent=1) + "\n")


_VERDICT_CLASS = {"regression": "status-failed", "improvement": "status-ok", "same": "", "unknown": "status-skipped"}


def render_html(outcome: Outcome) -> str:
    """The comparison as a self-contained page in the report's style."""
    from markupsafe import Markup

    from aebench.report.page import Section, render_document
    from aebench.report.table import key_value_table, styled_table

    def table(frame: pd.DataFrame, table_id: str) -> Markup:
        if frame.empty:
            return Markup("<p class=\"note\">Nothing was measured on both sides.</p>")
        classes = pd.DataFrame("", index=frame.index, columns=frame.columns)
        classes["verdict"] = [_VERDICT_CLASS[v] for v in frame["verdict"]]
        return styled_table(frame, {}, table_id, classes, css_class="data failures")

    base, cand = outcome.base.revision, outcome.candidate.revision
    header = key_value_table({
        "base": f"{base.short} {base.subject}", "candidate": f"{cand.short} {cand.subject}",
        "matrix": outcome.matrix.name, "mode": "duet" if outcome.settings.duet else "sequential",
        "rounds": f"{outcome.rounds.count} ({outcome.stop_reason})", "elapsed": f"{outcome.elapsed_s:.0f} s",
        "regressions": outcome.regressions(), "unknown": outcome.unknowns(),
        "failed on the candidate only": ", ".join(outcome.broken()) or "none",
    }, "ab")
    detectable = detectable_by_metric(outcome)
    method = Markup("<p>{}</p>").format(
        "Each round runs every cell once on each side, in a fresh worker process, in balanced random order. A speed "
        "figure's change is the Hodges-Lehmann estimate of the rounds' log ratios with its exact 95% signed-rank "
        "interval; it is a regression or an improvement only when the whole interval lies beyond the margin and the "
        "one-sided Wilcoxon test, its p-value adjusted over the table (Benjamini-Hochberg), agrees; same when the "
        "interval lies inside the margin; unknown otherwise. Spread is the standard deviation of the per-round "
        "changes. Quality comes from one pass with the matrix as given and is compared exactly.")
    if detectable:
        method += Markup("<p>{}</p>").format("Smallest slowdown these rounds could call a regression (median over "
                                             "cells): " + ", ".join(f"{REGISTRY.label(m)} {v:.1f}%"
                                                                    for m, v in detectable.items()) + ".")
    parts = [(Section("speed", "Speed"), table(speed_table(outcome), "abspeed")),
             (Section("quality", "Quality"), table(quality_table(outcome), "abquality")),
             (Section("method", "How the verdicts are reached"), method)]
    return render_document(f"aebench ab: {cand.short} against {base.short}", header, parts)


# -- calibration ------------------------------------------------------------------------------------------------------


def calibration_comparisons(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """Every comparison of every experiment: its JSON speed row (verdict, change, interval, adjusted p-value and the
    raw per-round figures, so that a verdict can be recomputed from the JSON alone) with the experiment, side, spike
    and device and threads it belongs to."""
    rows = []
    for index, outcome in enumerate(outcomes, 1):
        for side in outcome.candidates:
            for row in speed_rows(outcome, side.label):
                cell = side.cell(row["key"])
                threads = f"{cell.device}{cell.threads}" if cell.threads is not None else cell.device
                rows.append({"experiment": index, "side": side.label, "spike_pct": round(side.spike * 100),
                             "where": threads, **row, "regression": row["verdict"] == "regression",
                             "unknown": row["verdict"] == "unknown"})
    return pd.DataFrame(rows)


UNITS = ("comparison", "cell", "run")  # what one count of a calibration rate is: see calibration_summary


def calibration_summary(outcomes: Sequence[Outcome] | pd.DataFrame, by: Sequence[str] = ("spike_pct", "where"),
                        unit: str = "comparison") -> pd.DataFrame:
    """False alarms of the A/A side and detections of each spike side, over every experiment, by thread count (and
    by metric, with ``by`` naming it: a p99 that cannot be called hides behind a rate over all metrics).

    ``unit`` says what is counted. A ``comparison`` is one cell's metric. A ``cell`` counts once when any of its
    speed figures is a regression (and as unknown when none is but one is unknown): what a reader of the table sees.
    A ``run`` is one side of one experiment, a regression when anything in it is: the exit status a CI gate gets, so
    its A/A rate is the share of unchanged commits a gate would fail. Also takes the comparisons frame itself (the
    JSON's ``comparisons``), so calibrations made apart pool the same way once their experiments are numbered apart."""
    frame = outcomes if isinstance(outcomes, pd.DataFrame) else calibration_comparisons(outcomes)
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: allowed {', '.join(UNITS)}")
    if frame.empty:
        return frame
    if unit != "comparison":
        group = ["experiment", "side", "spike_pct"] + (["where", "key"] if unit == "cell" else [])
        frame = frame.groupby(group).agg(regression=("regression", "any"), unknown=("unknown", "any")).reset_index()
        frame["unknown"] &= ~frame["regression"]
        by = [column for column in by if column in frame.columns]
    counts = {"comparisons": ("regression", "size"), "regressions": ("regression", "sum"),
              "unknown": ("unknown", "sum")}
    if unit == "comparison":  # what a spike-in actually did to the figures, beside how often it was called
        counts["median_change_pct"] = ("change_pct", "median")
    table = frame.groupby(list(by)).agg(**counts).reset_index()
    table["rate"] = table["regressions"] / table["comparisons"]
    return table


def format_calibration(table: pd.DataFrame, unit: str = "comparison") -> str:
    if table.empty:
        return "no comparison was made"
    counted = {"comparison": "comparisons", "cell": "cells", "run": "runs"}[unit]
    lines = []
    for spike, group in table.groupby("spike_pct"):
        for _, row in group.iterrows():
            what = "false alarms (A/A)" if spike == 0 else f"detections of a {spike}% spike-in"
            where = f" on {row['where']}" if "where" in row else ""
            lines.append(f"{what}{where}: {int(row['regressions'])} of {int(row['comparisons'])} {counted} "
                         f"({row['rate']:.1%}), {int(row['unknown'])} unknown")
    return "\n".join(lines)


# -- executing on worker hosts ----------------------------------------------------------------------------------------


class HostExecutor:
    """Each side's worker hosts (one per backend), started from the side's installed revision; every cell runs in a
    fresh child forked from its side's host. ``cpus`` moves the side's host to those cores before the cell (duet).

    Every round starts new hosts. A forked child inherits its host's memory layout, and layout alone moves speed by
    a few percent (Mytkowicz et al., "Producing wrong data without doing anything obviously wrong!", 2009): in an
    A/A comparison on one pair of long-lived hosts, one side's undercomplete cell trained 5% faster round after
    round (interval +2% to +9% over 14 rounds). Fresh hosts each round turn that bias into round-to-round noise,
    which the rounds average out, as pyperf's many worker processes do."""

    def __init__(self, data_path: Path, cache_dir: Path, scratch: Path,
                 command: Sequence[str] = (sys.executable, "-m", "aebench.worker", "serve"),
                 mark: Callable[[CellResult], CellResult] = lambda result: result) -> None:
        self._mark = mark  # --allow-concurrent: every result contaminated, so no round's speed figures count
        self._data_path = data_path
        self._cache_dir = cache_dir
        self._scratch = scratch
        self._command = list(command)  # what starts a host (tests start a stand-in speaking the same protocol)
        self._hosts: dict[str, dict[str, Any]] = {}
        self._runs = 0
        self._starts = 0

    def _factory(self, side: Side) -> Callable[[str, Path], Any]:
        from aebench.runner import WorkerHost, worker_environment

        def start(backend: str, log: Path) -> WorkerHost:
            env = worker_environment(backend)
            env["PYTHONPATH"] = str(side.revision.site)  # that revision's aebench, not the driver's
            if side.spike:
                env["AEBENCH_SPIKE"] = f"{side.spike:g}"
            return WorkerHost(backend, log, command=self._command, env=env)

        return start

    def run(self, side: Side, matrix: Matrix, cell: Cell, cpus: Sequence[int] | None = None,
            trains: bool = True) -> CellResult:
        from aebench.runner import host_for, run_one, weights_file

        hosts = self._hosts.setdefault(side.label, {})
        self._runs += 1
        scratch = self._scratch / f"{self._runs:05d}-{side.slug}"
        scratch.mkdir(parents=True)
        if cpus is not None:
            log = self._scratch / f"host-{side.slug}.log"
            host_for(hosts, cell.backend, self._factory(side), log).set_affinity(cpus)
        # The revision's own worker may write metrics this aebench does not know: keep them (only gated ones are read).
        # One revision's weights of a model serve every side of that revision: the same code and seed train the same.
        weights = weights_file(self._scratch / "weights" / side.revision.commit, cell) if side.shares_weights else None
        if weights is not None:
            weights.parent.mkdir(parents=True, exist_ok=True)
        return self._mark(run_one(matrix, cell, self._data_path, scratch, hosts, self._factory(side), time.monotonic,
                                   None, self._cache_dir, check_metrics=False, trains=trains, weights_path=weights))

    def new_round(self, sides: Sequence[Side], backends: Sequence[str]) -> None:
        """Close every host and start each side's afresh, all at once (their start-up is not measured)."""
        self.close()
        self._hosts = {}
        self._starts += 1
        jobs = [(side, backend) for side in sides for backend in backends]
        with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
            started = list(pool.map(lambda job: self._factory(job[0])(
                job[1], self._scratch / f"host-{self._starts:03d}-{job[0].slug}-{job[1]}.log"), jobs))
        for (side, backend), host in zip(jobs, started):
            self._hosts.setdefault(side.label, {})[backend] = host

    def prepare_classifiers(self, sides: Sequence[Side], keys: Sequence[str], progress: Any) -> None:
        """Each side's reference classifiers trained or found in the cache before any cell, as ``aebench run`` does,
        so no cell's time includes them (both sides share the cache: the same recipe gives the same file)."""
        from aebench.runner import prepare_classifiers

        for side in sides:
            hosts = self._hosts.setdefault(side.label, {})
            scratch = self._scratch / f"classifiers-{side.slug}"
            scratch.mkdir(parents=True, exist_ok=True)
            prepare_classifiers(side.matrix, [side.cell(key) for key in keys], self._data_path, scratch, hosts,
                                self._factory(side), self._cache_dir, progress.note, lambda info: None)

    def close(self) -> None:
        for hosts in self._hosts.values():
            for host in hosts.values():
                host.close()


def run_ab(sides: Sequence[Side], keys: Sequence[str], settings: Settings, executor: Executor, *,
           quality: bool = True, train_on_base: bool = False, clock: Clock = time.monotonic,
           note: Callable[[str], None] = lambda text: None) -> Outcome:
    """The whole comparison of ``sides`` (the base first) on the cells ``keys``: the quality pass (unless ``quality``
    is False), then speed rounds, which time the weights the pass trained.

    Without a quality pass, ``train_on_base`` still trains each model once, on the base with its matrix as given, and
    every side of the base's revision times those weights (calibration, whose sides are all one revision); otherwise
    each round's runs train a short run of their own."""
    started = clock()
    quality_results: dict[str, dict[str, CellResult]] = {side.label: {} for side in sides}
    base = sides[0]
    if quality:
        note(f"quality pass: {len(keys)} cells x {len(sides)} sides with their matrices as given")
        quality_results = quality_pass(executor, sides, keys, settings.seed)
        passed = quality_results
    elif train_on_base:
        note(f"training pass: {len(keys)} cells on the base with its matrix as given; every side times these weights")
        passed = quality_pass(executor, [base], keys, settings.seed)
    else:
        passed = {}
    trained = kept_weights(sides, passed)
    note(f"speed rounds: {len(keys)} cells x {len(sides)} sides per round, at least {settings.min_rounds}, "
         f"at most {settings.max_rounds}" + (", timing the trained weights" if trained else ""))
    sizing = passed.get(base.label) or {}
    if not sizing:  # no pass to learn each cell's training speed from: one short run per cell on the base
        unsized = speed_matrices([base], keys, settings)
        sizing = {key: executor.run(base, unsized[base.label, key], base.cell(key)) for key in keys}
    matrices = speed_matrices(sides, keys, settings, sizing)
    note("speed rounds time training over " + ", ".join(
        f"{base.cell(key).variant} {timed_repeats(matrices[base.label, key], base.times_training_steps)} x "
        f"{matrices[base.label, key].train_size}" for key in keys) + " images")
    family = len(keys) * len(speed_metrics())
    note(f"{family} speed comparisons per candidate: a change in one figure alone cannot be called before round "
         f"{stats.rounds_needed(family)}, one in all {family} together from round "
         f"{stats.rounds_needed(family, family)}")
    remaining = replace(settings, budget_s=max(1.0, settings.budget_s - (clock() - started)))
    rounds, why = play_rounds(executor, sides, matrices, keys, remaining, trained=trained, clock=clock, note=note)
    speed = {side.label: compare_sides(rounds, base.label, side.label, settings.margins, speed_metrics())
             for side in sides[1:]}
    quality_verdicts = {side.label: compare_quality(quality_results, base.label, side.label, settings.margins)
                        for side in sides[1:]} if quality else {}
    return Outcome(base=base, candidates=list(sides[1:]), settings=settings, rounds=rounds, stop_reason=why,
                   speed=speed, quality=quality_verdicts, quality_results=quality_results, elapsed_s=clock() - started)


# -- the command -----------------------------------------------------------------------------------------------------


DEFAULT_OPERANDS = ("HEAD~1", "HEAD")
DEFAULT_MATRIX = "ab"


def operands(values: Sequence[str], calibrate: bool) -> tuple[str, str, str]:
    """(base, candidate, matrix) from ``[BASE CANDIDATE [MATRIX]]``; calibration defaults to HEAD against itself."""
    values = list(values)
    if len(values) == 0:
        base, candidate = ("HEAD", "HEAD") if calibrate else DEFAULT_OPERANDS
        return base, candidate, DEFAULT_MATRIX
    if len(values) in (2, 3):
        return values[0], values[1], values[2] if len(values) == 3 else DEFAULT_MATRIX
    raise UserError(f"aebench ab takes BASE CANDIDATE [MATRIX], or nothing (HEAD~1 HEAD ab); got {len(values)} "
                    f"operands: {' '.join(values)}")


def parse_spikes(text: str) -> tuple[float, ...]:
    """``5,10,20`` (percent of each call's time) as fractions."""
    try:
        values = tuple(float(part) / 100 for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < value <= 1 for value in values):
        raise UserError(f"--spikes {text!r} is invalid: allowed percentages above 0 and up to 100, comma-separated, "
                        "for example 5,10,20")
    return values


def check_duet(cells: Sequence[Cell], usable_cpus: int) -> None:
    """Duet runs both sides at once, each alone on a core: every cell must be a 1-thread CPU cell."""
    bad = [cell.key for cell in cells if cell.device != "cpu" or cell.threads != 1]
    if bad:
        raise UserError(f"--duet runs each side on one core with one thread: allowed threads=[1] on device cpu, "
                        f"but {bad[0]} is not (use --set 'threads=[1]')")
    if usable_cpus < 2:
        raise UserError(f"--duet needs 2 usable CPUs, one per side: this machine lets aebench use {usable_cpus}")


def main(args: Any) -> int:
    """``aebench ab`` from parsed command-line options (see aebench.cli)."""
    from aebench import atomic, config, data, revisions
    from aebench.metrics import with_margin_options

    if args.pool:
        if args.operands or args.calibrate:
            raise UserError("--pool reads earlier calibrations and runs nothing: allowed without operands and "
                            "without --calibrate")
        return pool_calibrations(args.pool, with_margin_options(args.margins) if args.margins else None)
    base_ref, candidate_ref, matrix_name = operands(args.operands, args.calibrate)
    matrix = config.load_matrix(matrix_name, args.overrides)  # validated here first: bad input stops before any build
    margins = with_margin_options(args.margins)
    given = {"min_rounds": args.min_rounds, "max_rounds": args.max_rounds, "budget_s": args.budget_s,
             "speed_train_size": args.speed_train_size, "speed_train_s": args.speed_train_s, "seed": args.seed}
    settings = Settings(duet=args.duet, margins=margins, **{k: v for k, v in given.items() if v is not None})
    if args.experiments < 1:
        raise UserError(f"--experiments {args.experiments} is invalid: allowed integers >= 1")
    spikes = parse_spikes(args.spikes) if args.calibrate else ()
    if args.calibrate and args.duet:
        raise UserError("--duet runs two sides at once, one per core; --calibrate runs four or more: use one of them")
    repo = revisions.repository_root(args.repo)
    base_commit = revisions.resolve(repo, base_ref)[0]  # both known before either is built
    candidate_commit = revisions.resolve(repo, candidate_ref)[0]
    if args.calibrate and base_commit != candidate_commit:
        raise UserError(f"--calibrate runs one revision against itself: {base_ref} and {candidate_ref} are different "
                        "commits (give one revision twice, or none for HEAD)")
    if not args.allow_dirty:
        revisions.check_clean(repo)
    with machinelock.hold("ab", allow_concurrent=args.allow_concurrent) as lock:
        data_path = data.find_dataset(matrix.dataset, args.data_dir)
        # A bad file stops here, before anything is built or written.
        data.check_dataset(data_path, matrix)
        # Where the results go must take them: known now, not after minutes of rounds.
        atomic.check_writable_folder("--reports-dir", args.reports_dir)
        for option, path in (("--json", args.json), ("--markdown", args.markdown)):
            if path is not None:
                atomic.check_writable_file(option, Path(path))
        return _measure(args, matrix_name, settings, spikes, repo, (base_ref, candidate_ref), data_path, lock)


def _measure(args: Any, matrix_name: str, settings: Settings, spikes: Sequence[float], repo: Path,
             refs: tuple[str, str], data_path: Path, lock: machinelock.MachineLock) -> int:
    """Build both revisions and run the rounds (or the calibration) while this process holds the machine."""
    from aebench import machine, revisions
    from aebench.runner import Progress

    base_ref, candidate_ref = refs
    base = revisions.install(repo, base_ref)
    candidate = revisions.install(repo, candidate_ref)
    base_matrix, candidate_matrix = (revision_matrix(revision, matrix_name, args.overrides) for revision in
                                     (base, candidate))
    keys = runnable_keys(base_matrix, candidate_matrix)
    if settings.duet:
        for side_matrix in (base_matrix, candidate_matrix):
            check_duet([cell for cell in side_matrix.cells() if cell.key in keys], len(machine.usable_cpus()))

    def note(text: str) -> None:
        print(f"aebench: ab: {text}", file=sys.stderr, flush=True)

    cache_dir = (Path(args.reports_dir) / "cache").resolve()
    with tempfile.TemporaryDirectory(prefix="aebench-ab-") as scratch:
        executor = HostExecutor(data_path, cache_dir, Path(scratch), mark=lock.mark)
        try:
            if args.calibrate:
                sides = [Side("base", base, base_matrix), Side("A/A", candidate, candidate_matrix)] + [
                    Side(f"spike {spike * 100:g}%", candidate, candidate_matrix, spike) for spike in spikes]
                outcomes = []
                for experiment in range(args.experiments):
                    note(f"calibration experiment {experiment + 1} of {args.experiments}")
                    outcome = run_ab(sides, keys, replace(settings, seed=settings.seed + experiment), executor,
                                     quality=False, train_on_base=True, note=note)
                    outcomes.append(replace(outcome, contamination=lock.contamination))
                return _report_calibration(outcomes, args)
            sides = [Side("base", base, base_matrix), Side("candidate", candidate, candidate_matrix)]
            if not args.no_quality and any(side.matrix.accuracy for side in sides):  # speed rounds need none
                executor.prepare_classifiers(sides, keys, Progress(0))
            note(f"{base.short} ({base_ref}) against {candidate.short} ({candidate_ref}), matrix {matrix_name!r}, "
                 f"{len(keys)} cells")
            outcome = run_ab(sides, keys, settings, executor, quality=not args.no_quality, note=note)
            outcome = replace(outcome, contamination=lock.contamination)
        finally:
            executor.close()
    return _report(outcome, args)


def revision_matrix(revision: Revision, name_or_path: str, overrides: Sequence[str]) -> Matrix:
    """The matrix a revision runs: a shipped matrix name resolves in that revision's own ``matrices/`` (a shipped
    profile is part of the revision under test); a file path is the same file for both sides."""
    from aebench import config

    shipped = revision.site / "aebench" / "matrices" / f"{name_or_path}.toml"
    if config.resolve_matrix_path(name_or_path).parent == config.MATRICES_DIR:
        if not shipped.is_file():
            raise UserError(f"revision {revision.short} ships no matrix {name_or_path!r}: give a matrix file instead")
        return config.load_matrix(shipped, overrides)
    return config.load_matrix(name_or_path, overrides)


def runnable_keys(base: Matrix, candidate: Matrix) -> list[str]:
    """The cells both sides' matrices have and this machine can run, in the base's order; the others are named."""
    from aebench import devices

    cells = base.cells()
    other = {cell.key for cell in candidate.cells()}
    skip = devices.skip_check(sorted(set(base.backend) | set(candidate.backend)), cells)
    keys = []
    for cell in cells:
        why = skip.reason(cell) or (None if cell.key in other else "the candidate's matrix has no such cell")
        if why is None:
            keys.append(cell.key)
        else:
            print(f"aebench: ab skips {cell.key}: {why}", file=sys.stderr)
    if not keys:
        raise UserError(f"no cell of matrix {base.name!r} can run on both sides on this machine: nothing to compare")
    return keys


def _report(outcome: Outcome, args: Any) -> int:
    from aebench import atomic

    print(format_text(outcome, args.strict))  # the verdicts first, whatever happens to the files
    folder = Path(args.reports_dir) / "ab"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    page = folder / f"{stamp}-{outcome.base.revision.short}-{outcome.candidate.revision.short}.html"
    with _outputs_written():
        html = render_html(outcome)
        atomic.write_text(page, html)
        atomic.write_text(folder / "latest.html", html)
        print(f"aebench: ab: page {page}", file=sys.stderr)
        if args.json:
            write_json(outcome, Path(args.json))
        if args.markdown:
            atomic.write_text(Path(args.markdown), format_markdown(outcome))
    return outcome.exit_status(args.strict)


@contextmanager
def _outputs_written() -> Iterator[None]:
    """A page or file that cannot be written (a full disk) ends ab with one line and exit 3, after the verdicts."""
    try:
        yield
    except OSError as error:
        raise CannotWrite(f"ab's output cannot be written ({error.strerror or error}: {error.filename}): the "
                          "verdicts above stand") from error


def calibration_tables(comparisons: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rates of one calibration's comparisons (``calibration_comparisons``), or of several pooled with their
    experiments numbered apart: per comparison (``rows``), per cell, per run and per metric."""
    return {"rows": calibration_summary(comparisons),
            "by_cell": calibration_summary(comparisons, unit="cell"),
            "by_run": calibration_summary(comparisons, unit="run"),
            "by_metric": calibration_summary(comparisons, by=("spike_pct", "where", "metric"))}


def format_calibration_tables(tables: Mapping[str, pd.DataFrame]) -> str:
    lines = [format_calibration(tables["rows"]),
             "per cell (one count per cell: a regression when any of its speed figures is one):",
             format_calibration(tables["by_cell"], "cell"),
             "per run (what a CI gate gets: exit status 1 when anything in the run is a regression):",
             format_calibration(tables["by_run"], "run")]
    by_metric = tables["by_metric"]
    if not by_metric.empty:
        lines += ["by metric:",
                  by_metric.assign(metric=[REGISTRY.label(m) for m in by_metric["metric"]],
                                   rate=[f"{r:.0%}" for r in by_metric["rate"]],
                                   median_change_pct=[f"{c:+.1f}%" for c in by_metric["median_change_pct"]])
                  .to_string(index=False)]
    return "\n".join(lines)


def rejudge(comparisons: pd.DataFrame, margins: Mapping[str, float]) -> pd.DataFrame:
    """The comparisons judged again from their raw per-round figures at ``margins``, each experiment's side one family
    as when it ran: what the same rounds say at other margins (a margin is a choice; the rounds are the measurement).
    Raises UserError when a comparison kept no per-round figures."""
    missing = {"base_rounds", "candidate_rounds"} - set(comparisons.columns)
    if missing:
        raise UserError(f"--margin with --pool needs each comparison's per-round figures, and these files lack "
                        f"{', '.join(sorted(missing))}: allowed the files 'aebench ab --calibrate --json' writes")

    def figures(values: Any) -> list[float]:  # JSON null: a round that failed or was left out
        return [math.nan if value is None else float(value) for value in values]

    fields: dict[int, dict[str, Any]] = {}
    for _, family in comparisons.groupby(["experiment", "side"], sort=False):
        decided = stats.decide([judge_rounds(row.key, row.metric, figures(row.base_rounds),
                                             figures(row.candidate_rounds), margins)
                                for row in family.itertuples()])
        for index, comparison in zip(family.index, decided):
            fields[index] = verdict_fields(comparison, len(family)) | {
                "regression": comparison.verdict == "regression", "unknown": comparison.verdict == "unknown"}
    judged = comparisons.copy()
    new = pd.DataFrame.from_dict(fields, orient="index")
    judged[list(new.columns)] = new
    return judged


def pool_calibrations(paths: Sequence[Path], margins: Mapping[str, float] | None = None) -> int:
    """``aebench ab --pool A.json B.json ...``: the rates of calibrations made apart (each ``--calibrate --json``,
    for example one seed per run to keep each within a time budget), their experiments numbered apart, as if one
    calibration had run them all. With ``margins`` (``--margin``), every comparison is judged again from its rounds
    at those margins instead of read as recorded. Runs nothing; exit 0, or 2 on a file that is not such a
    document."""
    frames = []
    offset = 0  # the experiments of the files before: each file's are numbered on from them
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
            frame = pd.DataFrame(document["comparisons"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"--pool {path} is invalid ({type(error).__name__}: {error}): allowed the files "
                            "'aebench ab --calibrate --json' writes") from None
        if frame.empty or "experiment" not in frame.columns:
            raise UserError(f"--pool {path} holds no calibration comparison: allowed the files "
                            "'aebench ab --calibrate --json' writes")
        if document.get("contaminated"):
            print(f"warning: {path}: speed figures contaminated ({document['contaminated']})")
        frames.append(frame.assign(experiment=frame["experiment"] + offset))
        offset += int(frame["experiment"].max())
        experiments = frame["experiment"].nunique()
        print(f"{path}: {experiments} experiment{'s' if experiments != 1 else ''}, {len(frame)} comparisons")
    pooled = pd.concat(frames, ignore_index=True)
    if margins is not None:
        pooled = rejudge(pooled, margins)
        print("judged again from the rounds at the margins " + ", ".join(
            f"{REGISTRY.label(metric)} {margins[metric]:g}%" for metric in speed_metrics()))
    print(format_calibration_tables(calibration_tables(pooled)))
    return 0


def _report_calibration(outcomes: Sequence[Outcome], args: Any) -> int:
    from aebench import atomic

    comparisons = calibration_comparisons(outcomes)
    tables = calibration_tables(comparisons)
    if outcomes[0].contamination:
        print(f"warning: speed figures contaminated ({outcomes[0].contamination}): these rates are not this machine's")
    for index, outcome in enumerate(outcomes, 1):
        print(f"experiment {index}: {outcome.rounds.count} rounds ({outcome.stop_reason}), {outcome.elapsed_s:.0f} s")
    print(format_calibration_tables(tables))
    detectable = detectable_by_metric(outcomes[-1], "A/A")
    if detectable:
        print("smallest slowdown the last experiment's rounds could call (A/A): " + ", ".join(
            f"{REGISTRY.label(metric)} {value:.1f}%" for metric, value in detectable.items()))
    with _outputs_written():
        if args.json:
            def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
                return json.loads(frame.to_json(orient="records"))  # NaN as null, NumPy scalars as JSON numbers

            document = {"experiments": len(outcomes), "contaminated": outcomes[0].contamination,
                        **{name: records(table) for name, table in tables.items()},
                        "comparisons": records(comparisons)}
            atomic.write_text(Path(args.json), json.dumps(document, indent=1) + "\n")
    return 0
