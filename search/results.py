"""Read an experiment folder (finished, failed, still running, or a copy elsewhere) through
Ray Tune's ExperimentAnalysis, which needs no running Ray: the best trial and its best adapter
checkpoint, and a leaderboard of every trial."""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from search.config import METRICS_MODE, RESOLVED_CONFIG, Choice, ConfigError, Range, is_uri
REPORTED_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "eval_loss", "train_loss", "step", "tokens_seen")


@dataclass
class Experiment:
    path: str
    config: dict[str, Any] | None
    analysis: Any

    @property
    def metric(self) -> str:
        return ((self.config or {}).get("scheduler") or {}).get("metric") or "rougeL"

    @property
    def mode(self) -> str:
        return ((self.config or {}).get("scheduler") or {}).get("mode") or METRICS_MODE[self.metric]

    @property
    def max_rungs(self) -> int | None:
        return ((self.config or {}).get("scheduler") or {}).get("max_rungs")


def load_experiment(path: str) -> Experiment:
    from ray.tune import ExperimentAnalysis

    if is_uri(path):
        raise ConfigError(
            f"{path}: best and report read a local folder; copy the experiment first "
            "(e.g. aws s3 sync / gsutil rsync) or read it on a node that mounts it"
        )
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise ConfigError(f"experiment folder {path} does not exist")
    if not glob.glob(os.path.join(path, "experiment_state-*.json")):
        raise ConfigError(
            f"{path}: no experiment_state-*.json (not a Tune experiment folder, or the sweep has not "
            "recorded its first trial yet)"
        )
    config = None
    config_file = os.path.join(path, RESOLVED_CONFIG)
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    return Experiment(path=path, config=config, analysis=ExperimentAnalysis(path))


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


def _status(experiment: Experiment, trial: Any, rungs: int) -> str:
    if trial.status == "TERMINATED" and experiment.max_rungs and rungs < experiment.max_rungs:
        return "STOPPED_EARLY"
    return trial.status


def trial_rows(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per trial, best first (trials with no score last)."""
    metric, mode = experiment.metric, experiment.mode
    rows = []
    for trial in experiment.analysis.trials:
        history = _history(experiment, trial)
        best = _best_row(history, metric, mode)
        rungs = max((int(r.get("training_iteration") or 0) for r in history), default=0)
        rows.append({
            "trial_id": trial.trial_id,
            "status": _status(experiment, trial, rungs),
            "hyperparameters": dict(trial.config),
            "rungs": rungs,
            f"best_{metric}": best[metric] if best else None,
            "best_row": best,
            "trial": trial,
        })
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r[f"best_{metric}"] is None, sign * (r[f"best_{metric}"] or 0)))
    return rows


def best_trial(experiment: Experiment) -> dict[str, Any]:
    metric, mode = experiment.metric, experiment.mode
    ranked = [r for r in trial_rows(experiment) if r["best_row"] is not None]
    if not ranked:
        raise ConfigError(f"{experiment.path}: no trial has reported {metric} yet")
    top = ranked[0]
    checkpoint = experiment.analysis.get_best_checkpoint(top["trial"], metric=metric, mode=mode)
    best = top["best_row"]
    return {
        "experiment": experiment.path,
        "metric": metric,
        "mode": mode,
        "trial_id": top["trial_id"],
        "status": top["status"],
        "hyperparameters": top["hyperparameters"],
        "rungs": top["rungs"],
        "best_rung": int(best.get("training_iteration") or 0),
        "metrics": {k: best[k] for k in REPORTED_METRICS if _finite(best.get(k))},
        "checkpoint": checkpoint.path if checkpoint else None,
        "warnings": boundary_warnings(experiment, top["hyperparameters"]),
    }


def boundary_warnings(experiment: Experiment, hyperparameters: dict[str, Any]) -> list[str]:
    """The tuning playbook's check: a best value on the edge of the space suggests widening it."""
    from search.config import SearchConfig

    search_section = (experiment.config or {}).get("search")
    if not search_section:
        return []
    try:
        search = SearchConfig.model_validate(search_section)
    except Exception:
        return []
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


def format_leaderboard(experiment: Experiment) -> str:
    rows = trial_rows(experiment)
    metric = experiment.metric
    params = sorted({k for r in rows for k in r["hyperparameters"]})
    header = ["trial", "status", *params, "rungs", f"best {metric}"]
    table = [header]
    for r in rows:
        best = r[f"best_{metric}"]
        table.append([
            r["trial_id"], r["status"], *(_short(r["hyperparameters"].get(p, "")) for p in params),
            str(r["rungs"]), "-" if best is None else f"{best:.4f}",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"experiment: {experiment.path} ({len(rows)} trials, ranked by {metric}, {experiment.mode})"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
