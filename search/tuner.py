"""The driver's Ray Tune setup: Tuner + OptunaSearch (seeded TPE) + ASHA, checkpoints kept by
the metric, trial retries. The only driver module that talks to Tune."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from search.config import ConfigError, SweepConfig
from search.space import tune_search_space

# Ray Tune's default loggers include TBXLoggerCallback: scalars per trial under the experiment
# folder, and at trial end the searched hyperparameters with the last metrics (TensorBoard HParams).


def storage_path(sweep: SweepConfig) -> str:
    return sweep.experiment_path.rsplit("/", 1)[0]


SCHEDULER_STATE = "qlora_sweep_asha_state"


class PersistentASHA(ASHAScheduler):
    """ASHA that keeps its rung records in the experiment folder after every result.

    Tuner.restore brings back trials and the Optuna searcher, but not the scheduler's state (Tune
    never calls its save/restore): without this a resumed sweep would forget every result ASHA
    compared trials against. The scheduler saves itself, rather than a callback holding a
    reference to it, because Tune may run a copy of the object it was given.

    One file per driver session, as Tune does for its own experiment state: Tune uploads its
    staging copy of the experiment folder at every snapshot, and after a resume that copy holds
    the previous session's file, which would overwrite a file of the same name.
    """

    def __init__(self, *args, experiment_path: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_session(experiment_path)

    def start_session(self, experiment_path: str) -> None:
        self.experiment_path = experiment_path
        self.state_name = f"{SCHEDULER_STATE}-{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}.pkl"

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        save_scheduler_state(self)
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        save_scheduler_state(self)


def save_scheduler_state(scheduler: "PersistentASHA") -> None:
    import pyarrow.fs

    with tempfile.TemporaryDirectory() as work:
        local = os.path.join(work, scheduler.state_name)
        scheduler.save(local)  # ASHA's own serialization
        filesystem, path = pyarrow.fs.FileSystem.from_uri(scheduler.experiment_path)
        final = f"{path}/{scheduler.state_name}"
        with open(local, "rb") as source, filesystem.open_output_stream(final + ".partial") as target:
            target.write(source.read())
        filesystem.move(final + ".partial", final)  # never a half-written state file


def latest_scheduler_state(experiment_path: str) -> str | None:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(experiment_path)
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
    names = sorted(f.base_name for f in found
                   if f.base_name.startswith(SCHEDULER_STATE) and f.base_name.endswith(".pkl"))
    return f"{path}/{names[-1]}" if names else None


def restore_scheduler_state(scheduler: "PersistentASHA", experiment_path: str) -> bool:
    import pyarrow.fs

    state = latest_scheduler_state(experiment_path)
    if state is None:
        return False
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(experiment_path)
    with tempfile.TemporaryDirectory() as work:
        local = os.path.join(work, "state.pkl")
        with filesystem.open_input_stream(state) as source, open(local, "wb") as target:
            target.write(source.read())
        scheduler.restore(local)
    # The saved state holds the metric and mode Tune gave the scheduler; Tune sets them again on
    # resume and refuses a scheduler that already has them. It also holds the old location.
    scheduler._metric = scheduler._mode = None
    scheduler.start_session(experiment_path)
    return True


def _trainable(sweep: SweepConfig, gpu_memory_bytes: int | None) -> Any:
    from ray import tune

    from search.packing import trial_resources
    from trainables.trial import run_trial

    return tune.with_resources(tune.with_parameters(run_trial, sweep=sweep), trial_resources(sweep, gpu_memory_bytes))


class RefuseFreshStartOnResume(logging.Filter):
    """Turns Tune's "Failed to restore the run state." into an error.

    When Tune cannot read an experiment's state on resume it logs that, then starts the
    experiment afresh in the same folder, beside the trials it could not restore. Its log record
    is the only hook between the two, so the filter raises there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the run state"):
            cause = record.exc_info[1] if record.exc_info else None
            raise ConfigError(f"Tune could not restore the experiment's state ({type(cause).__name__}: {cause}); "
                              "stopped rather than start the sweep again in the same folder")
        return True


def restore_tuner(sweep: SweepConfig, gpu_memory_bytes: int | None = None) -> Any:
    """The interrupted sweep's Tuner: finished trials stay finished, unfinished ones continue from
    their last checkpoint, errored ones are retried from theirs; Optuna's history and ASHA's rung
    records come back."""
    from ray import tune

    logging.getLogger("ray.tune.execution.tune_controller").addFilter(RefuseFreshStartOnResume())
    tuner = tune.Tuner.restore(sweep.experiment_path, trainable=_trainable(sweep, gpu_memory_bytes),
                               resume_unfinished=True, resume_errored=True)
    # Tune keeps the TuneConfig it restored on its internal tuner; there is no public accessor.
    internal = getattr(tuner, "_local_tuner", None)
    config = getattr(internal, "_tune_config", None)
    if config is None or config.scheduler is None:
        raise RuntimeError("this Ray version hides the restored scheduler; ASHA's state cannot be restored")
    restore_scheduler_state(config.scheduler, sweep.experiment_path)
    return tuner


def build_tuner(sweep: SweepConfig, gpu_memory_bytes: int | None = None) -> Any:
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = sweep.scheduler.metric, sweep.scheduler.resolved_mode
    searcher = ConcurrencyLimiter(
        OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed)),
        max_concurrent=sweep.search.max_concurrent_trials,
    )
    scheduler = PersistentASHA(
        experiment_path=sweep.experiment_path,
        time_attr="training_iteration",  # one iteration = one rung: grace period and max_t in rungs
        max_t=sweep.scheduler.max_rungs,
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )
    return tune.Tuner(
        _trainable(sweep, gpu_memory_bytes),
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
