"""Read an experiment folder (finished, failed, still running, or a copy elsewhere) through
Ray Tune's ExperimentAnalysis, which needs no running Ray: the best trial and its best adapter
checkpoint, and a leaderboard of every trial."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import cached_property
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ray.tune import ExperimentAnalysis

from search.config import ALPHA_RATIO, Choice, Range, SchedulerConfig, SearchConfig
from search.experiment import driver_is_gone, read_resolved_config, tune_experiment_folder
from trainables.errors import ConfigError
from trainables.metrics import ROUGE_METRICS, RUNG_METRICS
from trainables.quiet import logger_quiet_below


@dataclass
class Experiment:
    path: str
    config: dict[str, Any] | None  # the resolved config (qlora_sweep.yaml) as data; None in a plain Tune folder
    analysis: Any
    driver_gone: bool | None = None  # the driver died without ending the sweep; None: not known

    @cached_property
    def scheduler(self) -> SchedulerConfig:
        return SchedulerConfig.model_validate((self.config or {}).get("scheduler", {}))

    @property
    def metric(self) -> str:
        return self.scheduler.metric

    @property
    def mode(self) -> str:
        return self.scheduler.resolved_mode

    @property
    def max_rungs(self) -> int | None:
        return self.scheduler.max_rungs if self.config else None


def load_experiment(path: str) -> Experiment:
    path = tune_experiment_folder(path)
    sweep = read_resolved_config(Path(path))
    config = sweep.model_dump(mode="json") if sweep else None
    with _no_warning_for_trials_without_results():
        analysis = ExperimentAnalysis(path)
    return Experiment(path=path, config=config, analysis=analysis, driver_gone=driver_is_gone(Path(path)))


def _no_warning_for_trials_without_results() -> AbstractContextManager[None]:
    """Tune warns of every trial that has reported nothing yet (a trial just started, or cut off by
    a killed driver); the leaderboard shows such a trial with no score, so the warning says nothing."""
    return logger_quiet_below("ray.tune.analysis.experiment_analysis", logging.ERROR)


def _history(experiment: Experiment, trial: Any) -> list[dict[str, Any]]:
    frame = experiment.analysis.trial_dataframes.get(trial.trial_id)
    if frame is None or frame.empty:
        return []
    return frame.to_dict("records")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    scored = [r for r in rows if _finite(r.get(metric))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r[metric])


def whole_set_rows(rows: list[dict[str, Any]], metric: str, whole: int) -> list[dict[str, Any]]:
    """Rows whose ROUGE covers the whole validation set (early rungs may score a subset)."""
    if not metric.startswith("rouge"):
        return rows  # validation loss is always on the whole set
    return [r for r in rows if not _finite(r.get("rouge_examples")) or r["rouge_examples"] >= whole]


def validation_size(histories: list[list[dict[str, Any]]]) -> int:
    return max((int(r["rouge_examples"]) for rows in histories for r in rows if _finite(r.get("rouge_examples"))),
               default=0)


UNFINISHED = ("RUNNING", "PENDING", "PAUSED")  # Tune's statuses of a trial it would still run
INTERRUPTED = "INTERRUPTED"  # an unfinished trial of a sweep whose driver died: `resume` continues it
DIVERGED = "DIVERGED"  # ended by its own training loss (training.divergence_loss_ratio): its score is not measured


def _diverged(row: dict[str, Any]) -> bool:
    # `in`, not `is`: pandas may give numpy's True, and a row from before the field a NaN
    return row.get("diverged") in (True,)


def _rungs_reported(history: list[dict[str, Any]]) -> int:
    return max((int(r.get("training_iteration") or 0) for r in history), default=0)


def _status(experiment: Experiment, trial: Any, history: list[dict[str, Any]]) -> str:
    if history and _diverged(history[-1]):
        return DIVERGED
    rungs = _rungs_reported(history)
    if trial.status == "TERMINATED" and experiment.max_rungs and rungs < experiment.max_rungs:
        return "STOPPED_EARLY"
    if trial.status in UNFINISHED and experiment.driver_gone:
        return INTERRUPTED
    return trial.status


def is_finished(experiment: Experiment) -> bool:
    """Every trial the sweep was to run has ended (finished, stopped early or failed)."""
    trials = experiment.analysis.trials
    wanted = ((experiment.config or {}).get("search") or {}).get("num_trials", len(trials))
    return len(trials) >= wanted and all(trial.status not in UNFINISHED for trial in trials)


def trial_counts(rows: list[dict[str, Any]]) -> str:
    """'6 trials: 4 finished, 2 stopped early' (from trial_rows)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    words = {"TERMINATED": "finished", "STOPPED_EARLY": "stopped early", "ERROR": "failed",
             INTERRUPTED: "interrupted", DIVERGED: "diverged"}
    parts = [f"{n} {words.get(status, status.lower())}" for status, n in counts.items()]
    return f"{len(rows)} trials: {', '.join(parts)}"


def trial_rows(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per trial, best first (trials with no score last)."""
    metric, mode = experiment.metric, experiment.mode
    histories = {trial.trial_id: _history(experiment, trial) for trial in experiment.analysis.trials}
    whole = validation_size(list(histories.values()))
    rows = []
    for trial in experiment.analysis.trials:
        history = histories[trial.trial_id]
        measured = [r for r in history if not _diverged(r)]  # a diverged rung's ROUGE was not measured
        best = _best_row(whole_set_rows(measured, metric, whole), metric, mode)
        # A trial ASHA stopped before the last rung has only subset scores: shown, ranked after the rest.
        best_on_subset = None if best else _best_row(measured, metric, mode)
        rungs = _rungs_reported(history)
        rows.append({
            "trial_id": trial.trial_id,
            "status": _status(experiment, trial, history),
            "hyperparameters": with_alpha_shown(dict(trial.config)),
            "rungs": rungs,
            f"best_{metric}": best[metric] if best else None,
            "best_row": best,
            "best_row_on_subset": best_on_subset,
            "history": history,  # its reported rows, rung by rung
            "trial": trial,
        })
    sign = -1 if mode == "max" else 1

    def rank(row: dict[str, Any]) -> tuple:
        subset = row["best_row_on_subset"]
        return (row["best_row"] is None, subset is None,
                sign * (row[f"best_{metric}"] if row["best_row"] else subset[metric] if subset else 0))

    rows.sort(key=rank)
    return rows


def best_trial(experiment: Experiment) -> dict[str, Any]:
    metric = experiment.metric
    rows = trial_rows(experiment)
    ranked = [r for r in rows if r["best_row"] is not None]
    notes = divergence_notes(experiment, rows)
    if not ranked:
        ranked = [{**r, "best_row": r["best_row_on_subset"]} for r in rows if r["best_row_on_subset"] is not None]
        if not ranked and rows and all(r["status"] == DIVERGED for r in rows):
            raise ConfigError(f"{experiment.path}: every trial diverged (training.divergence_loss_ratio); lower "
                              "search.learning_rate")
        if not ranked:
            raise ConfigError(f"{experiment.path}: no trial has reported {metric} yet")
        notes.append(f"no trial has {metric} on the whole validation set yet; this is the best on the early "
                     "rungs' subsets")
    return _trial_summary(experiment, ranked[0], notes)


def trial_summary(experiment: Experiment, trial_id: str) -> dict[str, Any]:
    """One trial by its id (as `report` shows it), summarized as `best_trial` summarizes the best."""
    rows = trial_rows(experiment)
    found = [r for r in rows if r["trial_id"] == trial_id or r["trial_id"].startswith(trial_id)]
    if len(found) != 1:
        known = ", ".join(r["trial_id"] for r in rows)
        raise ConfigError(f"{experiment.path}: {'no' if not found else 'more than one'} trial {trial_id!r} "
                          f"(its trials: {known})")
    row = found[0]
    best = row["best_row"] or row["best_row_on_subset"]
    if best is None:
        raise ConfigError(f"{experiment.path}: trial {row['trial_id']} has not reported {experiment.metric} yet")
    return _trial_summary(experiment, {**row, "best_row": best}, [])


def divergence_notes(experiment: Experiment, rows: list[dict[str, Any]]) -> list[str]:
    """What the diverged trials say about the space: how many, at which learning rates, and whether
    those were the sweep's highest (then a lower top of search.learning_rate would spend no trials there)."""
    diverged = [r for r in rows if r["status"] == DIVERGED]
    if not diverged:
        return []
    rates = sorted({r["hyperparameters"]["learning_rate"] for r in diverged
                    if _finite(r["hyperparameters"].get("learning_rate"))})
    trained = [r["hyperparameters"]["learning_rate"] for r in rows
               if r["status"] != DIVERGED and _finite(r["hyperparameters"].get("learning_rate"))]
    text = (f"{len(diverged)} of {len(rows)} trials diverged, stopped by their training loss "
            "(training.divergence_loss_ratio)")
    if rates:
        text += ": learning_rate " + ", ".join(f"{rate:.2g}" for rate in rates)
        if trained and rates[0] > max(trained):
            text += f", above every trial that trained ({max(trained):.2g} the highest)"
    return [text]


def _trial_summary(experiment: Experiment, top: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    metric, mode = experiment.metric, experiment.mode
    best = top["best_row"]
    checkpoint = _checkpoint_of(experiment, top["trial"], best)
    return {
        "experiment": experiment.path,
        "metric": metric,
        "mode": mode,
        "trial_id": top["trial_id"],
        "status": top["status"],
        "hyperparameters": top["hyperparameters"],
        "rungs": top["rungs"],
        "best_rung": int(best.get("training_iteration") or 0),
        "metrics": {k: best[k] for k in RUNG_METRICS if _finite(best.get(k))},
        "checkpoint": checkpoint,
        "warnings": notes + boundary_warnings(experiment, top["hyperparameters"]),
    }


def _checkpoint_of(experiment: Experiment, trial: Any, row: dict[str, Any]) -> str | None:
    """The checkpoint saved with that very row, else the trial's best one that Tune kept."""
    name = row.get("checkpoint_dir_name")
    if isinstance(name, str) and name:
        path = os.path.join(trial.path, name)
        if os.path.isdir(path):
            return path
    checkpoint = experiment.analysis.get_best_checkpoint(trial, metric=experiment.metric, mode=experiment.mode)
    return checkpoint.path if checkpoint else None


def with_alpha_shown(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched values, with the lora_alpha a searched lora_alpha_ratio gave it, after the ratio."""
    ratio, rank = values.get(ALPHA_RATIO), values.get("lora_r")
    if not (_finite(ratio) and _finite(rank)) or "lora_alpha" in values:
        return values
    shown = {}
    for name, value in values.items():
        shown[name] = value
        if name == ALPHA_RATIO:
            shown["lora_alpha"] = ratio * rank
    return shown


def boundary_warnings(experiment: Experiment, hyperparameters: dict[str, Any]) -> list[str]:
    """The tuning playbook's check: a best value on the edge of the space suggests widening it."""
    if not experiment.config:
        return []
    search = SearchConfig.model_validate(experiment.config["search"])
    warnings = []
    for name, param in search.searched.items():
        value = hyperparameters.get(name)
        if isinstance(param, Range) and _finite(value):
            span = (math.log(param.high) - math.log(param.low)) if param.log else (param.high - param.low)
            position = ((math.log(value) - math.log(param.low)) if param.log else (value - param.low)) / span
            if position <= 0.05 or position >= 0.95:
                warnings.append(f"{name}={value:g} lies at the edge of its range [{param.low:g}, {param.high:g}]")
        elif isinstance(param, Choice) and all(_finite(v) for v in param.choice) and len(param.choice) > 2:
            if value in (min(param.choice), max(param.choice)):
                warnings.append(f"{name}={value} is the smallest or largest of its choices {param.choice}")
    return warnings


def format_best(summary: dict[str, Any]) -> str:
    lines = [
        f"best trial: {summary['trial_id']} ({summary['status']}, {summary['rungs']} rungs) "
        f"by {summary['metric']} ({summary['mode']})",
        "  hyperparameters: " + ", ".join(f"{k}={_short(v)}" for k, v in summary["hyperparameters"].items()),
        f"  at rung {summary['best_rung']}: " + ", ".join(f"{k}={_short(v)}" for k, v in summary["metrics"].items()),
        f"  adapter checkpoint: {summary['checkpoint']}",
    ]
    lines += [f"  warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def format_file_scores(scores: dict[str, Any]) -> str:
    lines = [f"on {scores['file']}: {scores['examples']} dialogues ({scores['skipped_rows']} rows skipped), "
             f"references: {', '.join(scores['reference_fields'])}"]
    for rule, meaning in scores["rules"].items():
        figures = ", ".join(f"{name}={value:.4f}" for name, value in scores[rule].items())
        lines.append(f"  {rule} ({meaning}): {figures}")
    return "\n".join(lines)


def format_test_scores(scores: dict[str, Any]) -> str:
    rouge = ", ".join(f"{name}={scores[name]:.4f}" for name in ROUGE_METRICS)
    return (f"  held-out test ({scores['test_examples']} dialogues held out of train by data.seed={scores['seed']}): "
            f"{rouge}")


def format_leaderboard(experiment: Experiment) -> str:
    rows = trial_rows(experiment)
    metric = experiment.metric
    params = sorted({k for r in rows for k in r["hyperparameters"]})
    header = ["trial", "status", *params, "rungs", f"best {metric}"]
    table = [header]
    for r in rows:
        best, subset = r[f"best_{metric}"], r["best_row_on_subset"]
        if best is not None:
            shown = f"{best:.4f}"
        elif subset is not None:
            shown = f"({subset[metric]:.4f} on {int(subset['rouge_examples'])} dialogues)"
        else:
            shown = "-"
        table.append([
            r["trial_id"], r["status"], *(_short(r["hyperparameters"].get(p, "")) for p in params),
            str(r["rungs"]), shown,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"experiment: {experiment.path} ({len(rows)} trials, ranked by {metric}, {experiment.mode})"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    if any(r["status"] == INTERRUPTED for r in rows):
        lines.append(f"the sweep's driver died before the sweep ended; continue it with: qlora-sweep resume {experiment.path}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
