"""`qlora-sweep report --plots`: the sweep in four pictures, written into the experiment folder.

- best_so_far.png: the best metric any trial had reached, against the sweep's wall time;
- hyperparameters.png: each searched value against the trial's best metric, the best trial marked,
  a value on the edge of its range called out (the same check as `best`);
- rungs.png: every trial's metric by rung; the lines that stop short are the trials ASHA cut;
- importance.png: Optuna's own parameter importances (fANOVA), computed on a study built from the
  trials' results, drawn by optuna.visualization.matplotlib.

Best so far counts only scores on the whole validation set (early rungs may score a subset), as
`best` does (search.results.whole_set_rows).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from search.config import Choice, Range, SearchConfig
from search.results import DIVERGED, Experiment, boundary_warnings, trial_rows, validation_size, whole_set_rows
from search.space import INTEGER_PARAMETERS, modules_to_text
from trainables.errors import ConfigError
from trainables.quiet import logger_quiet_below

logger = logging.getLogger(__name__)

PLOTS_FOLDER = "plots"


def draw_plots(experiment: Experiment) -> list[Path]:
    """Write the PNGs; returns their paths. Needs a qlora-sweep experiment with at least one scored trial."""
    metric = experiment.metric
    rows = [{**row, "scored": [r for r in row["history"] if _finite(r.get(metric))]} for row in trial_rows(experiment)]
    rows = [row for row in rows if row["scored"]]
    if not rows:
        raise ConfigError(f"{experiment.path}: no trial has reported {metric} yet; nothing to plot")
    folder = Path(experiment.path, PLOTS_FOLDER)
    folder.mkdir(exist_ok=True)
    written = [
        _best_so_far(experiment, rows, folder / "best_so_far.png"),
        _hyperparameters(experiment, rows, folder / "hyperparameters.png"),
        _rungs(experiment, rows, folder / "rungs.png"),
    ]
    importance = _importance(experiment, rows, folder / "importance.png")
    if importance is not None:
        written.append(importance)
    return written


def _best_so_far(experiment: Experiment, rows: list[dict[str, Any]], path: Path) -> Path:
    metric = experiment.metric
    whole = validation_size([row["scored"] for row in rows])
    points = sorted((r["timestamp"], r[metric]) for row in rows for r in whole_set_rows(row["scored"], metric, whole))
    start = min(r["timestamp"] for row in rows for r in row["scored"])
    best, xs, ys = None, [], []
    for stamp, value in points:
        if best is None or (value > best if experiment.mode == "max" else value < best):
            best = value
        xs.append((stamp - start) / 60)
        ys.append(best)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(xs, ys, where="post", marker="o")
    ax.set_xlabel("minutes since the first result")
    ax.set_ylabel(f"best {metric} so far" + (f" (on all {whole} validation dialogues)" if whole else ""))
    ax.set_title(f"{Path(experiment.path).name}: best {metric} so far")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _hyperparameters(experiment: Experiment, rows: list[dict[str, Any]], path: Path) -> Path:
    metric = experiment.metric
    search = SearchConfig.model_validate((experiment.config or {}).get("search", {})) if experiment.config else None
    names = list(search.searched) if search else sorted({k for row in rows for k in row["hyperparameters"]})
    scored = [row for row in rows if _row_metric(row, metric) is not None]
    best_id = scored[0]["trial_id"] if scored else None  # trial_rows ranks best first
    edges = " ".join(boundary_warnings(experiment, scored[0]["hyperparameters"])) if scored else ""
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [row["hyperparameters"].get(name) for row in scored]
        ys = [_row_metric(row, metric) for row in scored]
        numeric = all(_finite(v) for v in values)
        xs = values if numeric else [str(v) for v in values]
        ax.scatter(xs, ys, color=["tab:red" if row["trial_id"] == best_id else "tab:blue" for row in scored])
        param = search.searched.get(name) if search else None
        if isinstance(param, Range) and param.log:
            ax.set_xscale("log")
            ax.tick_params(axis="x", which="both", labelrotation=30)
        if isinstance(param, Range):
            ax.axvline(param.low, color="grey", linestyle=":")
            ax.axvline(param.high, color="grey", linestyle=":")
        ax.set_xlabel(name + ("  (at the edge!)" if f"{name}=" in edges else ""),
                      color="tab:red" if f"{name}=" in edges else "black")
        ax.set_ylabel(f"trial's best {metric}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"searched values against {metric} (red: the best trial; dotted: the range's ends)")
    return _save(fig, path)


def _rungs(experiment: Experiment, rows: list[dict[str, Any]], path: Path) -> Path:
    metric = experiment.metric
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        history = row["scored"]
        rungs = [int(r["training_iteration"]) for r in history]
        cut = row["status"] in ("STOPPED_EARLY", DIVERGED)
        why = {"STOPPED_EARLY": " (stopped early)", DIVERGED: " (diverged)"}.get(row["status"], "")
        ax.plot(rungs, [r[metric] for r in history], marker="x" if cut else "o",
                linestyle="--" if cut else "-", label=f"{row['trial_id']}{why}")
    ax.set_xlabel("rung")
    ax.set_ylabel(metric)
    ax.set_title("every trial by rung; dashed: stopped early by ASHA or diverged")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(rows) <= 12:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _importance(experiment: Experiment, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Optuna's importances need at least two trials that differ in a searched value."""
    if not experiment.config:
        return None
    search = SearchConfig.model_validate(experiment.config["search"])
    metric = experiment.metric
    with logger_quiet_below("optuna", logging.WARNING):  # "A new study created in memory"
        study = optuna.create_study(direction="maximize" if experiment.mode == "max" else "minimize")
    distributions = {name: _distribution(name, param) for name, param in search.searched.items()}
    for row in rows:
        value = _row_metric(row, metric)
        params = {name: row["hyperparameters"].get(name) for name in distributions}
        if value is None or any(v is None for v in params.values()):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    varied = [name for name in distributions if len({str(t.params[name]) for t in study.trials}) > 1]
    if len(study.trials) < 2 or not varied:
        logger.info("parameter importances need at least two scored trials that differ in a searched value; "
                    "no importance.png")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the matplotlib backend's label
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
    ax.set_xlabel(f"importance for {metric} (Optuna's fANOVA over {len(study.trials)} trials)")
    ax.figure.set_size_inches(6.5, 4)
    return _save(ax.figure, path)


def _distribution(name: str, param: Any) -> Any:
    if isinstance(param, Choice):
        values = [modules_to_text(v) for v in param.choice] if name == "target_modules" else param.choice
        return optuna.distributions.CategoricalDistribution([_plain(v) for v in values])
    if name in INTEGER_PARAMETERS:
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), log=param.log)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _row_metric(row: dict[str, Any], metric: str) -> float | None:
    best = row["best_row"] or row["best_row_on_subset"]
    return best[metric] if best and _finite(best.get(metric)) else None


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
