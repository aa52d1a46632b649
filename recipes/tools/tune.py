"""``zoo tune``: hyperparameter search with Optuna over a recipe or any ``zoo fit`` configuration.

    zoo tune --recipe mnist_mlp                       # the search of recipes/mnist_mlp.tune.yaml
    zoo tune --recipe digits_cnn --space space.yaml --n_trials 20 --pruner median -- --trainer.max_epochs 10
    zoo tune --space space.yaml -- --model cnn_bn --data Digits
    zoo tune --recipe mnist_mlp --storage postgresql://tuner@db.lan/studies   # the same on every worker machine

The search space is a YAML file, ``recipes/<recipe>.tune.yaml`` beside a recipe by default::

    params:                           # any fit key; a key without a dot is a model argument
      lr: loguniform 1e-4 1e-2
      dropout: uniform 0.1 0.5
      hidden_dims: choice [[128], [256], [512]]
      data.init_args.batch_size: int 32 256 log
    metric: val/acc                   # optional: the model's monitor, and its direction
    n_trials: 10                      # optional: defaults of the flags below
    pruner: asha
    fit_args: [--trainer.max_epochs=10]

Each trial is one ``fit`` in this process, logged in its own run folder (``<out>/trials/trial_<n>/``) and
never tested (the test split is not for choosing). Its value is the best validation value of the metric. After each
validation the value is reported to Optuna, whose pruner (``asha``: successive halving; ``hyperband``; ``median``;
``none``) may stop the trial; a step is one validation round, an epoch by default.

The study lives in ``--storage``: by default a SQLite file in the output folder, so that stopping and rerunning the
same command resumes it; a database URL (``postgresql://``, ``mysql://``) or a shared SQLite/journal file lets several
workers, on one machine or many, run the same command on one study. ``--n_trials`` counts the study's trials over
every worker. Trials of a killed worker are found by their stopped heartbeat and rerun once.

Trials run in one process each: Optuna's pruning is per process, so a DDP request is reduced to one device (and
said); to use more cores or machines, start more workers.

Writes ``<out>/best.yaml`` (the best trial's whole configuration; ``fit -c best.yaml`` trains it), ``trials.csv``,
``summary.json``, and Optuna's ``history.png`` and ``importances.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from callbacks import NonFiniteError
from recipes.tools.command import named_errors, parse, tool_parser
from recipes.tools.fitting import fit, fit_config, logger_folder_args, recipe_yaml, split_tool_args
from zoo.checkpoint import import_class

INSTALL_HINT = 'pip install "lightning-zoo[tune]"'
PRUNERS = ("asha", "hyperband", "median", "none")
KINDS = ("uniform", "loguniform", "int", "choice")
#: One process per trial (see the module docstring); appended after the user's arguments, so they win.
SINGLE_PROCESS = ("--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto")
DEFAULTS = {"n_trials": 10, "pruner": "asha", "grace_period": 1, "reduction_factor": 2, "heartbeat": 60}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError(f"Optuna is needed to tune: {INSTALL_HINT}") from error
    return optuna


@dataclass(frozen=True)
class Param:
    """One searched argument: the fit key it sets and its distribution."""

    name: str  #: as written in the space file (Optuna's parameter name)
    key: str  #: the fit argument it sets, e.g. ``model.init_args.lr``
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw the value of this trial."""
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "choice":
            # Optuna stores primitive choices only: lists and dicts travel as their JSON text
            encoded = [c if _primitive(c) else json.dumps(c) for c in self.choices]
            value = trial.suggest_categorical(self.name, encoded)
            return value if value in self.choices else json.loads(value)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def argument(self, value: Any) -> str:
        """The fit argument that sets ``value``."""
        return f"--{self.key}={json.dumps(value)}"


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def parse_param(name: str, spec: Any) -> Param:
    """A :class:`Param` from a space file entry: ``uniform LOW HIGH``, ``loguniform LOW HIGH``, ``int LOW HIGH
    [log]`` or ``choice [A, B, ...]`` (a YAML list alone is a choice too).

    Raises:
        ValueError: naming the entry and the accepted forms.
    """
    key = name.removeprefix("--")
    key = key if "." in key else f"model.init_args.{key}"
    if isinstance(spec, list):
        spec = "choice " + json.dumps(spec)
    forms = "uniform LOW HIGH, loguniform LOW HIGH, int LOW HIGH [log] or choice [A, B, ...]"
    kind, _, rest = str(spec).strip().partition(" ")
    if kind not in KINDS:
        raise ValueError(f"search space entry {name}: {spec!r} is not one of: {forms}")
    if kind == "choice":
        choices = yaml.safe_load(rest)
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"search space entry {name}: choice needs a non-empty YAML list, got {rest!r}")
        return Param(name, key, kind, choices=tuple(choices))
    words = rest.split()
    log = words[2:] == ["log"]
    try:
        if len(words) != 2 + log:
            raise ValueError
        low, high = (int(w) for w in words[:2]) if kind == "int" else (float(w) for w in words[:2])
    except ValueError:
        raise ValueError(f"search space entry {name}: {spec!r} is not one of: {forms}") from None
    if not low < high or ((kind == "loguniform" or log) and low <= 0):
        raise ValueError(f"search space entry {name}: need LOW < HIGH (and LOW > 0 on a log scale), got {spec!r}")
    return Param(name, key, kind, low, high, log=kind == "loguniform" or log)


def read_space(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The space file: ``params`` as :class:`Param` objects, and the optional settings beside them.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: a malformed file, naming it and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space {path} does not exist; write one (see `zoo tune --help`)")
    text = yaml.safe_load(path.read_text())
    if not isinstance(text, dict) or not isinstance(text.get("params"), dict) or not text["params"]:
        raise ValueError(f"search space {path}: needs a `params:` mapping of fit keys to distributions")
    known = {"params", "metric", "direction", "fit_args", *DEFAULTS}
    unknown = sorted(set(text) - known)
    if unknown:
        raise ValueError(f"search space {path}: unknown keys {unknown}; the keys are {sorted(known)}")
    return {**text, "params": [parse_param(name, spec) for name, spec in text["params"].items()]}


class TrialReporter(L.Callback):
    """Reports ``monitor`` after each validation round to an Optuna trial, keeps its best value, and raises
    ``optuna.TrialPruned`` when the study's pruner says so (the step is the number of rounds so far)."""

    def __init__(self, trial: Any, monitor: str, maximize: bool) -> None:
        self.trial, self.monitor, self.maximize = trial, monitor, maximize
        self.rounds = 0
        self.best: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.log_dir:
            self.trial.set_user_attr("run_dir", os.path.abspath(trainer.log_dir))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ValueError(f"the run logs no {self.monitor!r} to tune on; it logs {logged}")
        value = float(value)
        self.rounds += 1
        if math.isfinite(value) and (self.best is None or (max if self.maximize else min)(value, self.best) == value):
            self.best = value
        self.trial.report(value, self.rounds)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned after {self.rounds} validation rounds at {self.monitor}={value:.4g}")


def make_pruner(name: str, grace_period: int, reduction_factor: int, max_rounds: int | None) -> Any:
    """The Optuna pruner ``name`` (one of :data:`PRUNERS`); ``grace_period`` rounds always run."""
    optuna = _optuna()
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=grace_period, reduction_factor=reduction_factor)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=grace_period, max_resource=max_rounds or "auto", reduction_factor=reduction_factor
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=grace_period)
    return optuna.pruners.NopPruner()


def open_storage(url: str | None, out: Path, heartbeat: int) -> Any:
    """The study's storage: ``url`` (a database URL, or a ``.journal`` file), by default ``<out>/study.db``. A
    database storage keeps a heartbeat per running trial, so that a killed worker's trial is failed and rerun."""
    optuna = _optuna()
    if url and "://" not in url:
        if not url.endswith(".journal"):
            raise ValueError(
                f"--storage {url}: give a database URL (sqlite:///study.db, postgresql://...) or a .journal file"
            )
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    from sqlalchemy.exc import IntegrityError, OperationalError  # an Optuna dependency

    url = url or f"sqlite:///{(out / 'study.db').resolve()}"
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # several workers wait
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
            )
        except (OperationalError, IntegrityError) as error:
            # Workers started at once race to make the tables of a new database and to stamp its schema version.
            raced = "already exists" in str(error) or isinstance(error, IntegrityError)
            if attempt == 4 or not raced:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")  # the loop returns or raises


def _counted(study: Any) -> int:
    """Trials that count towards ``--n_trials``: finished, pruned or running (on any worker)."""
    states = _optuna().trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))


def _asks_for_processes(trainer: Any) -> bool:
    strategy = str(trainer.get("strategy") or "")
    devices = str(trainer.get("devices"))  # "2" from the command line, 2 from a YAML
    return "ddp" in strategy or (trainer.get("num_nodes") or 1) > 1 or (devices.isdigit() and int(devices) > 1)


def tune(
    recipe: str | None,
    space: dict[str, Any],
    fit_args: Sequence[str],
    out: Path,
    study_name: str,
    n_trials: int,
    pruner: str,
    grace_period: int,
    reduction_factor: int,
    storage: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    seed: int | None = None,
    heartbeat: int = 60,
    timeout: float | None = None,
) -> Any:
    """Run trials of ``space`` on the study until it holds ``n_trials`` (or ``timeout`` seconds pass); the study."""
    optuna = _optuna()
    fit_args = [*space.get("fit_args", []), *fit_args]
    config = fit_config(recipe, fit_args)  # the configuration a trial runs, before its searched values
    model_metric, mode = import_class(config.model.class_path, trusted=None).monitor
    trainer_config = config.trainer
    metric = metric or space.get("metric") or model_metric
    direction = direction or space.get("direction") or ("maximize" if mode == "max" else "minimize")
    if _asks_for_processes(trainer_config):
        print("zoo tune: each trial runs in one process (Optuna prunes per process); start more workers instead")
    max_rounds = trainer_config.get("max_epochs") if not trainer_config.get("val_check_interval") else None
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage, out, heartbeat),
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, grace_period, reduction_factor, max_rounds),
        load_if_exists=True,
    )
    study.set_metric_names([metric])
    worker = f"{socket.gethostname()}:{os.getpid()}"
    params: list[Param] = space["params"]

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker)
        values = [(param, param.suggest(trial)) for param in params]
        trial.set_user_attr("args", {param.key: value for param, value in values})
        args = [
            *fit_args,
            *(param.argument(value) for param, value in values),
            *logger_folder_args(config, out / "trials", f"trial_{trial.number}"),
            "--test_after_fit=false",
            "--trainer.enable_model_summary=false",
            *SINGLE_PROCESS,
        ]
        reporter = TrialReporter(trial, metric, direction == "maximize")
        fit(recipe, args, [reporter])  # the reporter records the run folder when fitting starts
        if reporter.best is None:
            raise ValueError(f"trial {trial.number} never reached a finite {metric}")
        return reporter.best

    started = time.monotonic()
    while _counted(study) < n_trials and (timeout is None or time.monotonic() - started < timeout):
        # One trial per call: the count above is read afresh from the storage, shared with the other workers.
        study.optimize(objective, n_trials=1, catch=(NonFiniteError,), gc_after_trial=True)
    return study


def report(study: Any, out: Path, recipe: str | None) -> dict[str, Any]:
    """Print the table of trials and write ``trials.csv``, ``summary.json``, ``best.yaml`` and the plots."""
    from rich.console import Console
    from rich.table import Table

    optuna = _optuna()
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    table = Table(title=f"Study {study.study_name}: {len(trials)} trials")
    for column in ("trial", "state", "value", "rounds", *names, "worker"):
        table.add_column(column)
    rows = []
    for trial in trials:
        row = {
            "trial": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "rounds": len(trial.intermediate_values),
            "seconds": trial.duration.total_seconds() if trial.duration else None,
            **{name: trial.params.get(name) for name in names},
            "worker": trial.user_attrs.get("worker"),
            "run_dir": trial.user_attrs.get("run_dir"),
        }
        rows.append(row)
        shown = [row["trial"], row["state"], row["value"], row["rounds"], *(row[n] for n in names), row["worker"]]
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in shown))
    Console(width=200).print(table)
    with open(out / "trials.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    complete = [trial for trial in trials if trial.state == states.COMPLETE]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": (study.metric_names or [None])[0],
        "direction": study.direction.name.lower(),
        "trials": {state.name.lower(): sum(t.state == state for t in trials) for state in states},
    }
    if complete:
        best = study.best_trial
        summary.update(
            best_trial=best.number,
            best_value=best.value,
            best_args=best.user_attrs.get("args"),
            best_run=best.user_attrs.get("run_dir"),
        )
        best_config = write_best_config(best, out / "best.yaml", recipe, study.study_name, len(trials))
        summary["best_config"] = str(best_config) if best_config else None
        metric = (study.metric_names or ["value"])[0]
        print(f"best: trial {best.number}, {metric} {best.value:.6g}, {best.user_attrs.get('args')}")
        if best_config:
            command = f"python -m recipes.{recipe} fit" if recipe else "zoo fit"
            print(f"train it: {command} -c {best_config}")
        summary["plots"] = write_plots(study, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_best_config(trial: Any, path: Path, recipe: str | None, study_name: str, n_trials: int) -> Path | None:
    """The best trial's saved configuration, made reusable: without the trial's logger folder, its ``test_after_fit:
    false`` and its resume path, so that ``fit -c`` trains it anew in a run folder of its own."""
    run_dir = trial.user_attrs.get("run_dir")
    saved = Path(run_dir) / "config.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return None
    config = yaml.safe_load(saved.read_text())
    config["trainer"].pop("logger", None)
    for key in ("test_after_fit", "ckpt_path"):
        config.pop(key, None)
    command = f"python -m recipes.{recipe} fit" if recipe else "zoo fit"
    header = (
        f"# zoo tune: the best of {n_trials} trials of study {study_name} (trial {trial.number}, value "
        f"{trial.value:.6g})\n# {command} -c {path}\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study: Any, out: Path) -> list[str]:
    """Optuna's optimization history and parameter importances as PNG images (importances need two finished trials
    that differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in (
            ("history.png", plots.plot_optimization_history),
            ("importances.png", plots.plot_param_importances),
        ):
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                print(f"no {name}: {error}")
                continue
            axes.figure.tight_layout()
            axes.figure.savefig(out / name, dpi=100)
            plt.close(axes.figure)
            written.append(name)
    return written


def _parser() -> Any:
    parser = tool_parser("tune", __doc__)
    parser.add_argument("--recipe", type=str | None, default=None, help="a recipe name; none: `zoo fit` arguments")
    parser.add_argument("--space", type=str | None, default=None, help="search space YAML (default <recipe>.tune.yaml)")
    parser.add_argument("--n_trials", type=int | None, default=None, help="trials in the study, over all workers (10)")
    parser.add_argument("--pruner", type=str | None, default=None, help=f"one of {', '.join(PRUNERS)} (asha)")
    parser.add_argument("--grace_period", type=int | None, default=None, help="rounds every trial runs (1)")
    parser.add_argument("--reduction_factor", type=int | None, default=None, help="asha/hyperband's factor (2)")
    parser.add_argument("--metric", type=str | None, default=None, help="validation metric (the model's monitor)")
    parser.add_argument("--direction", type=str | None, default=None, help="maximize or minimize (the metric's)")
    parser.add_argument("--storage", type=str | None, default=None, help="database URL or .journal file")
    parser.add_argument("--study_name", type=str | None, default=None, help="default: the recipe or space file")
    parser.add_argument("--out", type=str | None, default=None, help="output folder (logs/tune/<study_name>)")
    parser.add_argument("--seed", type=int | None, default=None, help="the sampler's seed")
    parser.add_argument("--heartbeat", type=int | None, default=None, help="seconds between trial heartbeats (60)")
    parser.add_argument("--timeout", type=float | None, default=None, help="start no trial after this many seconds")
    return parser


def main(args: Sequence[str] | None = None) -> dict[str, Any]:
    """``zoo tune``: its flags and the fit arguments (any other flag, and all after ``--``); returns the summary
    written."""
    import sys

    parser = _parser()
    tool_args, fit_args = split_tool_args(parser, sys.argv[1:] if args is None else args)
    options = parse(parser, tool_args)
    with named_errors(ImportError):
        if options.space is None and options.recipe is None:
            parser.error("give --recipe, --space or both")
        space_file = options.space or str(recipe_yaml(options.recipe).with_suffix(".tune.yaml"))
        space = read_space(space_file)
        settings = {
            key: options.get(key) if options.get(key) is not None else space.get(key, default)
            for key, default in DEFAULTS.items()
        }
        if settings["pruner"] not in PRUNERS:
            raise ValueError(f"--pruner {settings['pruner']!r}: choose one of {', '.join(PRUNERS)}")
        if options.direction not in (None, "maximize", "minimize"):
            raise ValueError(f"--direction {options.direction!r}: choose maximize or minimize")
        study_name = options.study_name or options.recipe or Path(space_file).name.split(".")[0]
        out = Path(options.out or os.path.join("logs", "tune", study_name))
        study = tune(
            options.recipe,
            space,
            fit_args,
            out,
            study_name,
            storage=options.storage,
            metric=options.metric,
            direction=options.direction,
            seed=options.seed,
            timeout=options.timeout,
            **settings,
        )
        return report(study, out, options.recipe)
