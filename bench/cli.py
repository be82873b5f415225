"""aebench's command line. Bad input ends here as one line on stderr and exit status 2, with nothing written."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench.errors import UserError
from aebench.store import DEFAULT_STORE, REPORTS_DIR, is_server_url

if TYPE_CHECKING:
    from aebench.config import Cell, Matrix
    from aebench.machinelock import MachineLock

EXIT_CELLS_FAILED = 1


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=store_location, default=None, metavar="PATH|URL",
                        help=f"result store: a SQLite file, or postgresql://USER@HOST[:PORT]/DB for a shared one "
                             f"(default: $AEBENCH_STORE or {DEFAULT_STORE})")


def store_location(text: str) -> str | Path:
    """A store as the user names it: a PostgreSQL URL stays text, anything else is a SQLite file's path."""
    return text if is_server_url(text) else Path(text)


def _store_path(args: argparse.Namespace) -> str | Path:
    """The store's location: a PostgreSQL URL as given, or a file path made absolute (the checkpoint and
    classifier-cache folders beside the store are handed to worker hosts, which start in another folder)."""
    location = args.store or store_location(os.environ.get("AEBENCH_STORE") or str(DEFAULT_STORE))
    return location if isinstance(location, str) else location.absolute()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aebench", description="Quality-of-service benchmarks for autoencoders.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let TensorFlow's C++ and absl logs through (off by default; aebench's own warnings stay)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a benchmark matrix: one worker process per cell")
    run.add_argument("matrix", nargs="?", default="quick", help="a matrix .toml file or a shipped name (default: quick)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a matrix key, value parsed as TOML (repeatable): --set epochs=2")
    run.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist.npz / fashion_mnist.npz")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only every N-th model (all thread counts of a quality key) starting at I")
    run.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where reports are written")
    run.add_argument("--no-report", action="store_true", help="store results without writing the HTML report")
    run.add_argument("--dry-run", action="store_true", help="validate and list the cells, run nothing")
    run.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                     help="continue an interrupted run (default: the latest) with the same matrix: cells already "
                          "stored are kept, the rest run, and training restarts from its last saved epoch")
    run.add_argument("--retry-failed", action="store_true",
                     help="with --resume: run the failed and timed-out cells again too (a complete run included); "
                          "each new result replaces the failure and names it in info.earlier_attempt")
    run.add_argument("--wait-idle", type=float, default=None, metavar="SECONDS",
                     help="before each cell, wait up to SECONDS for its CPUs to be quiet (other load within the "
                          "limit of aebench.load)")
    run.add_argument("--cluster", default=None, metavar="ADDRESS",
                     help="run the cells on a Dask cluster, one task per cell: local:N (N workers on 127.0.0.1) or "
                          "the scheduler's tcp://HOST:PORT; each node runs one cell at a time")
    run.add_argument("--pack", action="store_true",
                     help="with --cluster: let a node run several CPU cells at once, on disjoint cores")
    _add_allow_concurrent(run)
    _add_store(run)

    listing = commands.add_parser("list", help="list the runs in the store")
    _add_store(listing)

    push = commands.add_parser("push", help="copy finished runs into another store, a fleet's shared one "
                                            "(idempotent: a second push copies only what is missing)")
    push.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique prefixes, 'latest', or 'all'")
    push.add_argument("--to", required=True, type=store_location, metavar="URL|PATH",
                      help="the store that receives them: postgresql://USER@HOST[:PORT]/DB, or a .sqlite file")
    _add_store(push)

    export = commands.add_parser("export", help="print a run's flat table (one row per cell)")
    export.add_argument("run", nargs="?", default=None, help="run id or unique prefix (default: the latest)")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--aggregate", action="store_true",
                        help="one row per cell group over seeds: mean, 95%% CI half-width (<col>.ci95), n_seeds")
    _add_store(export)

    report = commands.add_parser("report", help="rebuild a run's HTML report from the store")
    report.add_argument("run", nargs="?", default=None, help="run id or unique prefix (default: the latest)")
    report.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    _add_store(report)

    compare = commands.add_parser("compare", help="compare stored runs cell by cell; exit 1 on a regression")
    compare.add_argument("baseline", help="baseline: a run id or prefix, 'latest', several joined by commas, or "
                                          "commit:REV for every complete run of that commit")
    compare.add_argument("candidate", nargs="?", default="latest", help="candidate, the same forms (default: latest)")
    compare.add_argument("--baseline-store", type=store_location, default=None, help="the baseline's store, if it is another file")
    compare.add_argument("--margin", dest="margins", action="append", default=[], metavar="NAME:VALUE",
                         help="practical margin of a gated metric or group: speed:5%% (percent), "
                              "quality.psnr_db:0.1 (the metric's unit); defaults in `aebench metrics`")
    compare.add_argument("--force", action="store_true",
                         help="compare runs whose settings differ (dataset, epochs, training set, hyperparameters...)")
    _add_store(compare)

    hardware = commands.add_parser("hardware", help="compare machines that ran the same matrix: speed ratios with "
                                                    "intervals, environment differences, quality divergence")
    hardware.add_argument("operands", nargs="+", metavar="RUN",
                          help="one machine's runs per operand, the reference first: RUN in --store (the forms "
                               "compare accepts) or PATH.sqlite:RUN for another store file; RUN@DEVICE (@cpu2, "
                               "@gpu) on every operand compares one workload across devices")
    hardware.add_argument("--out", type=Path, default=None,
                          help="the HTML page (default: reports/hardware/<first run>-vs-<...>.html)")
    hardware.add_argument("--force", action="store_true", help="compare runs whose settings differ")
    _add_store(hardware)

    ab = commands.add_parser("ab", help="paired A/B rounds of two git revisions, with verdicts; exit 1 on a regression")
    ab.add_argument("operands", nargs="*", metavar="BASE CANDIDATE [MATRIX]",
                    help="two git revisions and a matrix (default: HEAD~1 HEAD ab); each revision runs its own code")
    ab.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a matrix key for both sides, value parsed as TOML (repeatable)")
    ab.add_argument("--margin", dest="margins", action="append", default=[], metavar="NAME:VALUE",
                    help="practical margin: speed:5%% (percent), quality.psnr_db:0.1 (the metric's unit)")
    ab.add_argument("--json", type=Path, default=None, metavar="PATH", help='write {"rows": [...]} for a CI step')
    ab.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                    help="write the tables as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    ab.add_argument("--min-rounds", type=int, default=None, help="rounds before any verdict is read (default 6)")
    ab.add_argument("--max-rounds", type=int, default=None, help="stop after this many speed rounds (default 20)")
    ab.add_argument("--budget-s", type=float, default=None,
                    help="stop before a round that would end past this many seconds, quality pass included (default 540)")
    ab.add_argument("--speed-train-size", type=int, default=None,
                    help="training images per epoch in speed rounds (default 2048)")
    ab.add_argument("--speed-train-s", type=float, default=None,
                    help="steady training time a speed round aims for per cell, in seconds (default 1)")
    ab.add_argument("--seed", type=int, default=None, help="seed of the rounds' random order (default 0)")
    ab.add_argument("--strict", action="store_true", help="an unknown verdict fails too (exit 1)")
    ab.add_argument("--duet", action="store_true",
                    help="run both sides at once, each on its own core with one thread (1-thread cells only)")
    ab.add_argument("--calibrate", action="store_true",
                    help="measure this machine's false-alarm and detection rates: one revision against itself, "
                         "as is and with known spike-ins")
    ab.add_argument("--spikes", default="5,10,20", metavar="PCT,...",
                    help="with --calibrate: the spike-ins, in percent of each call's time")
    ab.add_argument("--experiments", type=int, default=1, help="with --calibrate: independent repetitions")
    ab.add_argument("--pool", nargs="+", type=Path, default=None, metavar="JSON",
                    help="print the rates of earlier --calibrate --json files pooled, their experiments numbered "
                         "apart; with --margin, every comparison judged again from its rounds at those margins; "
                         "runs nothing")
    ab.add_argument("--no-quality", action="store_true", help="skip the quality pass (speed rounds only)")
    ab.add_argument("--allow-dirty", action="store_true",
                    help="compare the commits although the working tree has uncommitted changes")
    _add_allow_concurrent(ab)
    ab.add_argument("--repo", type=Path, default=None, help="the aebench git checkout (default: the working directory's)")
    ab.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist.npz / fashion_mnist.npz")
    ab.add_argument("--reports-dir", type=Path, default=REPORTS_DIR,
                    help="where the page (ab/<stamp>-<base>-<candidate>.html) and the classifier cache go")

    history = commands.add_parser("history", help="change points over one machine's runs in commit order; exit 1 "
                                                   "when the newest segment of a series is a regression")
    history.add_argument("--machine", default=None, metavar="ID",
                         help="machine fingerprint (default: the newest complete run's)")
    history.add_argument("--matrix", default=None, metavar="NAME",
                         help="matrix name (default: the newest complete run's)")
    history.add_argument("--metric", dest="metrics", action="extend", nargs="+", default=None, metavar="NAME",
                         help="metrics to judge (default: the gated ones, `aebench metrics`)")
    history.add_argument("--margin", dest="margins", action="append", default=[], metavar="NAME:VALUE",
                         help="practical margin of a metric or group: speed:5%% (percent), quality.psnr_db:0.1 (the "
                              "metric's unit)")
    history.add_argument("--min-segment", type=int, default=None, metavar="N",
                         help="fewest runs on each side of a change point (default: 3)")
    history.add_argument("--out", type=Path, default=None, help="the HTML page (default: reports/history.html)")
    history.add_argument("--format", choices=("text", "otava-csv"), default="text",
                         help="otava-csv: print the series in Apache Otava's CSV format instead (writes no page)")
    _add_store(history)

    figure = commands.add_parser("figure", help="write one of a run's figures as a PNG (the README's pictures)")
    figure.add_argument("kind", choices=("grid", "curve"),
                        help="grid: clean, noisy and denoised test digits; curve: validation PSNR vs images seen")
    figure.add_argument("run", nargs="?", default=None, help="run id or unique prefix (default: the latest)")
    figure.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    figure.add_argument("--variant", default=None, help="the trained model's variant (default: the first)")
    figure.add_argument("--noise", type=float, default=None, help="its noise level (default: the first)")
    _add_store(figure)

    tune = commands.add_parser("tune", help="compare values of a variant's hyperparameter on the held-out validation "
                                           "slice of the training set (never the test set)")
    tune.add_argument("variant", help="the variant to tune")
    tune.add_argument("--param", required=True, metavar="KEY=V1,V2,...", help="the hyperparameter and its values")
    tune.add_argument("--matrix", default="quick", help="the matrix whose training settings and noise levels to use")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a matrix key (repeatable), e.g. --set 'noise=[0.3]'")
    tune.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist.npz / fashion_mnist.npz")
    _add_allow_concurrent(tune)

    commands.add_parser("crosscheck", add_help=False,
                        help="time the harness against hand-written loops on the conv AE (options: crosscheck --help)")

    metrics = commands.add_parser("metrics", help="list the metric registry: name, unit, better direction, group")
    metrics.add_argument("--format", choices=("text", "markdown"), default="text",
                         help="markdown: the README's table")

    commands.add_parser("models", help="list the model zoo with parameter counts")
    commands.add_parser("devices", help="the CPU, GPUs and TPUs this machine offers each installed backend")
    commands.add_parser("shapes", help="the paper's conv output-size table, checked against Keras")
    return parser


def _add_allow_concurrent(command: argparse.ArgumentParser) -> None:
    command.add_argument("--allow-concurrent", action="store_true",
                         help="run although another aebench run holds this machine, marking every cell's speed "
                              "figures contaminated")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread is, so that it unwinds as Ctrl-C does: the run is recorded as
    interrupted, its running cell is killed and the machine lock released (Python's default for both signals is to
    die on the spot, leaving the run 'running' and the cell timing on its own)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_like_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (CI timeouts, ``kill``, systemd) and SIGHUP (a closed terminal) unwind like SIGINT.
    The previous handlers come back afterwards (tests call ``main`` in-process). Signal handlers can only be set in
    the main thread: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, raise_stopped) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    from aebench.quiet import quiet_by_default

    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    quiet_by_default(args.verbose)  # before any command imports TensorFlow here
    if passed_on and args.command != "crosscheck":
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    args.passed_on = passed_on
    args.argv = ["aebench", *(sys.argv[1:] if argv is None else argv)]
    for name, value in vars(args).items():  # before anything is written or a worker (started elsewhere) is told them
        if isinstance(value, Path):
            setattr(args, name, value.absolute())
    try:
        from aebench.models.registry import load_registered_plugins

        load_registered_plugins()  # a broken AEBENCH_PLUGINS or aebench.variants entry point stops every command here
        with stop_like_ctrl_c():
            return COMMANDS[args.command](args)
    except UserError as error:
        print(f"aebench: error: {error}", file=sys.stderr)
        return error.exit_status
    except Stopped as stopped:
        print(f"aebench: stopped by {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print("aebench: interrupted", file=sys.stderr)
        return 130


# -- run -----------------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from aebench import config, devices, machinelock

    if args.wait_idle is not None and not (0 < args.wait_idle <= 3600):
        raise UserError(f"--wait-idle {args.wait_idle:g} is invalid: allowed seconds above 0 and up to 3600")
    if args.retry_failed and not args.resume:
        raise UserError("--retry-failed reruns the failed cells of a stored run: allowed only with --resume [RUN]")
    if args.cluster is not None:
        from aebench import cluster

        cluster.parse_address(args.cluster)
        if args.wait_idle is not None:
            raise UserError("--wait-idle waits for this machine's CPUs: allowed without --cluster (a cluster's cells "
                            "wait for their node's machine lock instead)")
        if args.allow_concurrent:
            raise UserError("--allow-concurrent runs beside another run of this machine: allowed without --cluster "
                            "(a cluster's cells take their node's machine lock; --pack shares a node on disjoint "
                            "cores)")
    elif args.pack:
        raise UserError("--pack lets a cluster's node run several cells at once: allowed only with --cluster")
    matrix = config.load_matrix(args.matrix, args.overrides)
    cells = config.shard(matrix.cells(), args.shard)
    if args.dry_run:
        for cell in cells:
            print(f"{cell.index:4d}  {cell.key}")
        print(f"{len(cells)} cells")
        return 0
    if args.cluster is not None:
        return _sweep_cluster(args, matrix, cells)
    # The lock first: what follows reads the data and may start worker hosts (GPU probes), which would load the
    # CPUs another run is timing. Bad input after it still writes nothing of the user's.
    with machinelock.hold("run", allow_concurrent=args.allow_concurrent) as lock:
        data_path = _checked_inputs(args, matrix)
        skip_check = devices.skip_check(matrix.backend, cells)
        return _sweep(args, matrix, cells, data_path, lock, skip_check=skip_check)


def _checked_inputs(args: argparse.Namespace, matrix: Matrix) -> Path:
    """The dataset file, read and checked, and the reports folder checked: a bad one stops the run here, before
    anything is written."""
    from aebench import atomic, data

    data_path = data.find_dataset(matrix.dataset, args.data_dir)
    data.check_dataset(data_path, matrix)
    if not args.no_report:
        atomic.check_writable_folder("--reports-dir", args.reports_dir, instead="--no-report")
    return data_path


def _sweep(args: argparse.Namespace, matrix: Matrix, cells: Sequence[Cell], data_path: Path, lock: MachineLock,
           **where: Any) -> int:
    from aebench.sweep import SweepOptions, run_sweep

    options = SweepOptions(store=_store_path(args), argv=args.argv, resume=args.resume, retry_failed=args.retry_failed,
                           reports_dir=None if args.no_report else args.reports_dir, wait_idle_s=args.wait_idle,
                           pack=args.pack)
    return EXIT_CELLS_FAILED if run_sweep(options, matrix, cells, data_path, lock, **where) else 0


def _sweep_cluster(args: argparse.Namespace, matrix: Matrix, cells: Sequence[Cell]) -> int:
    """``run --cluster``: the driver holds no machine lock (each node's cells hold theirs, aebench.cluster) and probes
    no device here: the cluster's workers say what they have."""
    from aebench import cluster, machinelock

    data_path = _checked_inputs(args, matrix)
    with cluster.connect(args.cluster) as client:
        return _sweep(args, matrix, cells, data_path, machinelock.MachineLock.held_by_nodes(), client=client)


# -- store queries -------------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from aebench.store import open_store

    with open_store(_store_path(args), create=False) as store:
        frame = store.runs_frame()
    if frame.empty:
        print("no runs")
        return 0
    frame["git_commit"] = frame["git_commit"].str[:10] + frame["git_dirty"].map({1: "+", 0: ""})
    frame["wall_s"] = frame["wall_s"].round(1)
    columns = ["run_id", "started_at", "matrix_name", "status", "git_commit", "machine_id", "ok", "failed", "skipped", "wall_s"]
    print(frame[columns].to_string(index=False))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from aebench.store import open_store, store_key

    source_location, target_location = _store_path(args), args.to
    if store_key(source_location) == store_key(target_location):
        raise UserError(f"--to {target_location} is the store the runs are in: allowed another store, such as a "
                        "fleet's postgresql://USER@HOST/DB")
    with open_store(source_location, create=False) as source:
        runs = source.runs_frame()
        statuses = dict(zip(runs["run_id"], runs["status"]))
        if args.runs == ["all"]:  # every finished run; one still running is pushed by a later push, when it ends
            wanted = [run_id for run_id in runs["run_id"] if statuses[run_id] != "running"]
            for run_id in (run_id for run_id in runs["run_id"] if statuses[run_id] == "running"):
                print(f"{run_id}: still running, not pushed (push it when it has finished)")
        else:
            wanted = [source.resolve_run(ref) for ref in args.runs]
        for run_id in wanted:
            if statuses[run_id] == "running":
                raise UserError(f"run {run_id} is still running: allowed a finished run (complete, interrupted or "
                                "abandoned); push it when it has finished")
        with open_store(target_location) as target:  # opened only once every run is known to be pushable
            for run_id in wanted:
                copy = source.copy_of_run(run_id)
                # Each run whole or not at all, in one transaction: pushing again completes the rest.
                with target.writing(kept=f"run {run_id} was not copied; push it again"):
                    copied = target.receive_run(copy)
                what = f"{copied} of {len(copy.cells)} cells copied" if copied else "already there, nothing copied"
                print(f"{run_id}: {what} -> {target.location}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aebench.results import column_order
    from aebench.store import open_store

    with open_store(_store_path(args), create=False) as store:
        frame = store.frame([store.resolve_run(args.run)])
    frame = frame.drop(columns=[c for c in ("stderr_tail",) if c in frame.columns])
    frame = frame[column_order(frame.columns)]
    if args.aggregate:
        from aebench.aggregate import aggregate_over_seeds, metric_columns

        frame = aggregate_over_seeds(frame, metric_columns(frame))
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        frame.to_json(sys.stdout, orient="records", indent=1)
        print()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aebench.report import write_report
    from aebench.store import open_store

    with open_store(_store_path(args), create=False) as store:
        path = write_report(store, store.resolve_run(args.run), args.reports_dir)
    print(path)
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from aebench.figures import write_figure
    from aebench.store import open_store

    with open_store(_store_path(args), create=False) as store:
        path, points = write_figure(store, args.run, args.kind, args.out, args.variant, args.noise)
    print(path)
    if points:
        print(points)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from aebench import backends, config, data, machinelock, tune
    from aebench.quiet import quiet_tensorflow

    matrix = config.load_matrix(args.matrix, args.overrides)
    if args.variant not in config.registry.VARIANTS:
        raise UserError(f"variant {args.variant!r} is unknown: allowed {', '.join(config.registry.VARIANTS)}")
    key, values = tune.parse_values(args.variant, args.param)
    path = data.find_dataset(matrix.dataset, args.data_dir)
    dataset = data.load_dataset(matrix.dataset, path)
    # Training on every core: it would slow a benchmark timing beside it, so it waits its turn as one.
    with machinelock.hold("tune", allow_concurrent=args.allow_concurrent), quiet_tensorflow():
        backends.current().configure_threads(max(matrix.threads))  # before the backend's first op, as a cell does
        table = tune.tune(replace(matrix, variants=(args.variant,)), dataset, args.variant, key, values)
    print(tune.format_table(table, key))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from aebench.docs import metric_table

    print(metric_table(markdown=args.format == "markdown"))
    return 0


# -- zoo -----------------------------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from aebench.quiet import quiet_tensorflow

    rows = []
    with quiet_tensorflow():
        from aebench import models

        for name in models.registry.VARIANTS:
            spec = models.REGISTRY[name]
            defaults = ", ".join(f"{k}={v:g}" for k, v in spec.defaults.items()) or "-"
            origin = " (plugin)" if name in models.registry.PLUGIN_VARIANTS else ""
            try:
                parameters: int | str = models.parameter_count(name)
            except Exception as error:  # a plugin's builder that fails is listed with why, not a traceback
                parameters = f"cannot build: {type(error).__name__}: {error}"
            rows.append((name + origin, parameters, defaults, spec.description))
    print(tabulate(rows, ("variant", "parameters", "hyperparameters (defaults)", "description"), tablefmt="plain",
                   intfmt=","))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from aebench import devices

    print(devices.format_devices(devices.discover()), end="")
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    from aebench.quiet import quiet_tensorflow

    with quiet_tensorflow():
        from aebench.models import shapes

        rows = shapes.shape_table()
    print(shapes.format_shape_table(rows))
    return 0 if all(row.ok for row in rows) else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from aebench import compare
    from aebench.metrics import with_margin_options
    from aebench.store import open_store

    margins = with_margin_options(args.margins)
    with open_store(_store_path(args), create=False) as candidate_store, \
            open_store(args.baseline_store or _store_path(args), create=False) as baseline_store:
        result = compare.compare_sides(compare.load_side(baseline_store, args.baseline),
                                       compare.load_side(candidate_store, args.candidate), margins, force=args.force)
        print(compare.format_comparison(result))
    return EXIT_CELLS_FAILED if result.regressions() else 0


def cmd_hardware(args: argparse.Namespace) -> int:
    from aebench import atomic, hardware

    if args.out is not None:
        atomic.check_writable_file("--out", args.out)
    machines = hardware.load_machines(args.operands, _store_path(args))
    page = args.out if args.out is not None else atomic.check_writable_file(
        "--out", hardware.default_page_path(machines))
    comparison = hardware.compare_machines(machines, force=args.force)
    print(hardware.format_text(comparison))
    path = hardware.write_page(comparison, page)
    print(f"aebench: hardware page {path}", file=sys.stderr)
    return 0  # information, not a gate

def cmd_ab(args: argparse.Namespace) -> int:
    from aebench import ab

    return ab.main(args)

def cmd_history(args: argparse.Namespace) -> int:
    from aebench import atomic, history
    from aebench.store import open_store

    margins = history.resolve_margins(args.metrics, args.margins)
    page = atomic.check_writable_file("--out", args.out or history.DEFAULT_OUT) if args.format != "otava-csv" else None
    with open_store(_store_path(args), create=False) as store:
        found = history.load_history(store, machine=args.machine, matrix=args.matrix, margins=margins)
    if args.format == "otava-csv":
        text, left_out = history.otava_csv(found)
        if left_out:
            print("aebench: left out, a run lacks them (Otava's CSV import needs every value): "
                  + ", ".join(left_out), file=sys.stderr)
        print(text, end="")
        return 0
    min_segment = history.MIN_SEGMENT if args.min_segment is None else args.min_segment
    analysis = history.analyse(found, min_segment)
    print(history.format_text(analysis))
    print(f"report: {history.write_page(analysis, page)}")
    return EXIT_CELLS_FAILED if analysis.newest_regressions() else 0


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from aebench import crosscheck
    from aebench.quiet import quiet_tensorflow

    # This process has not imported TensorFlow yet, so the module can still pin CPUs and set threads first. It
    # prints its result on stdout; stderr (TensorFlow's start-up chatter filtered out) follows at the end.
    with quiet_tensorflow():
        return crosscheck.main(args.passed_on)


COMMANDS = {
    "ab": cmd_ab,
    "compare": cmd_compare,
    "history": cmd_history,
    "crosscheck": cmd_crosscheck,
    "hardware": cmd_hardware,
    "run": cmd_run,
    "list": cmd_list,
    "push": cmd_push,
    "export": cmd_export,
    "report": cmd_report,
    "figure": cmd_figure,
    "tune": cmd_tune,
    "metrics": cmd_metrics,
    "models": cmd_models,
    "devices": cmd_devices,
    "shapes": cmd_shapes,
}


if __name__ == "__main__":
    sys.exit(main())
