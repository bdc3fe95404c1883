"""The search space as data: config choices and ranges -> Ray Tune domains, which OptunaSearch
turns into Optuna distributions. Fixed values stay out of the space (they are merged in the trial
by `TrialHyperparameters.resolve`), so Optuna and TensorBoard see only what is searched."""

from __future__ import annotations

from typing import Any

from search.config import Choice, Param, Range, SearchConfig, modules_to_text

INTEGER_PARAMETERS = {"lora_r", "max_length"}


def tune_search_space(search: SearchConfig) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for name, param in search.searched.items():
        space[name] = _domain(tune, name, param)
    return space


def _domain(tune: Any, name: str, param: Param) -> Any:
    if isinstance(param, Choice):
        values = [modules_to_text(v) for v in param.choice] if name == "target_modules" else list(param.choice)
        return tune.choice(values)
    assert isinstance(param, Range)
    if name in INTEGER_PARAMETERS:
        low, high = int(param.low), int(param.high) + 1  # tune's integer upper bounds are exclusive
        return tune.lograndint(low, high) if param.log else tune.randint(low, high)
    return tune.loguniform(param.low, param.high) if param.log else tune.uniform(param.low, param.high)
