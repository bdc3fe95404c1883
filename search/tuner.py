"""The driver's Ray Tune setup: Tuner + OptunaSearch (seeded TPE) + ASHA, checkpoints kept by
the metric, trial retries. The only driver module that talks to Tune."""

from __future__ import annotations

from typing import Any

from search.config import SweepConfig
from search.space import tune_search_space

# Ray Tune's default loggers include TBXLoggerCallback: scalars per trial under the experiment
# folder, and at trial end the searched hyperparameters with the last metrics (TensorBoard HParams).


def storage_path(sweep: SweepConfig) -> str:
    return sweep.experiment_path.rsplit("/", 1)[0]


def build_tuner(sweep: SweepConfig) -> Any:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainables.trial import run_trial

    metric, mode = sweep.scheduler.metric, sweep.scheduler.resolved_mode
    searcher = ConcurrencyLimiter(
        OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed)),
        max_concurrent=sweep.search.max_concurrent_trials,
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one rung: grace period and max_t in rungs
        max_t=sweep.scheduler.max_rungs,
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )
    resources = {"cpu": sweep.resources.cpus_per_trial, "gpu": sweep.resources.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep), resources)
    return tune.Tuner(
        trainable,
        param_space=tune_search_space(sweep.search),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=sweep.search.num_trials,
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=storage_path(sweep),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=sweep.checkpoints_kept,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=tune.FailureConfig(max_failures=sweep.trial_retries),
        ),
    )
