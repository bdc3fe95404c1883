"""The search space as data: which hyperparameters a sweep searches, and how one trial's values
are put together. Tune and Optuna see only what is searched; fixed values are merged in here, in
one place, before the trial is planned (search.packing)."""

from __future__ import annotations

from typing import Any

from search.config import ALPHA_RATIO, SEARCHABLE, Choice, Range, SearchConfig
from trainables.config import TrialHyperparameters

INTEGER_PARAMETERS = {"lora_r", "max_length"}


def modules_to_text(option: str | list[str]) -> str:
    """Optuna's categorical values must be scalars: module lists travel as 'q_proj,v_proj'."""
    return option if isinstance(option, str) else ",".join(option)


def resolve_hyperparameters(search: SearchConfig, searched: dict[str, Any]) -> TrialHyperparameters:
    """Fixed values from the sweep config, overlaid with what the searcher chose for one trial."""
    values = {**search.fixed, **{k: v for k, v in searched.items() if k in SEARCHABLE}}
    for name in INTEGER_PARAMETERS:
        values[name] = int(values[name])
    ratio = values.pop(ALPHA_RATIO, None)
    if ratio is not None:
        values["lora_alpha"] = float(ratio) * values["lora_r"]
    modules = modules_to_text(values["target_modules"])
    values["target_modules"] = modules if modules == "all-linear" else modules.split(",")
    return TrialHyperparameters.model_validate(values)


def largest_corner(search: SearchConfig) -> TrialHyperparameters:
    """The trial of the space that needs the most memory: every searched value at its largest."""
    corner: dict[str, Any] = {}
    for name, param in search.searched.items():
        if name == "target_modules":
            corner[name] = "all-linear"  # the most LoRA weights
        elif isinstance(param, Choice):
            corner[name] = max(param.choice)
        else:
            assert isinstance(param, Range)
            corner[name] = param.high
    return resolve_hyperparameters(search, corner)
