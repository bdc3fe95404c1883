"""A sweep from start to end: guard the experiment folder, start or join Ray, plan the trials,
record the resolved config, fit the Tuner, then put back result rows a killed driver lost.
The same for a resume, from the folder of a sweep whose driver died."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from search.config import SweepConfig
from search.experiment import (
    DRIVER_LOG, RESOLVED_CONFIG, experiment_path, is_uri, load_resolved_config, refuse_existing_experiment,
    write_resolved_config,
)
from search.history import restore_result_rows
from search.live import SweepView, ViewLogHandler, show
from search.models import cache_dir
from search.output import libraries_output_to, our_logs_to
from search.packing import Concurrency, TrialPlanner, most_trials_at_once, plan_concurrency
from search.results import is_finished, load_experiment
from search.state_files import mend_state_files, state_problem
from search.storage import check_storage_for_cluster
from search.tuner import (
    build_tuner, cluster_cpus, cluster_gpus, follow_moved_experiment, forget_deleted_checkpoints, local_cpus,
    local_gpus, restore_tuner, restored_concurrency, smallest_gpu_memory_bytes, start_ray, starts_local_ray,
)
from trainables.errors import ConfigError
from trainables.memory import GIB
from trainables.warm import CUDA_SAFE_IMPORTS

if TYPE_CHECKING:
    from search.checks import DataSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watch:
    """How the sweep is shown while it runs."""

    verbose: bool = False  # Ray's, Tune's and Optuna's own output on screen too, and the view as plain lines
    validation_examples: int | None = None  # what a whole-set score covers (the checks counted them)


@dataclass(frozen=True)
class SweepOutcome:
    experiment: str  # the experiment folder (a path or a URI)
    trials: int
    errors: int  # trials that ended in an error
    already_finished: bool = False  # a resume found nothing left to run: no Ray was started


Checked = Callable[[], "DataSummary"]  # waits for the sweep's data and tokenizer checks (search.checks)


def run_sweep(sweep: SweepConfig, resume: bool = False, watch: Watch = Watch(),
              checked: Checked | None = None) -> SweepOutcome:
    """`checked`: the checks' result, waited for once Ray has started (they run meanwhile), or
    before anything else on a resume."""
    if resume and Path(experiment_path(sweep), RESOLVED_CONFIG).is_file():
        if checked is not None:
            watch = dataclasses.replace(watch, validation_examples=_data_checked(checked))
        return resume_sweep(experiment_path(sweep), watch)
    refuse_existing_experiment(sweep)
    with _watched(sweep, watch) as view:
        planner, concurrency = _start(sweep, view, watch, checked)
        _announce(sweep, concurrency.trials, concurrency.why)
        if concurrency.hint:
            logger.warning("%s", concurrency.hint)
        write_resolved_config(sweep)
        results = build_tuner(sweep, planner, concurrency.trials).fit()
    return _finish(sweep, results)


def resume_sweep(experiment: str, watch: Watch = Watch()) -> SweepOutcome:
    """Continue a sweep whose driver died: same folder, same trials, searcher and ASHA state. A sweep
    that has ended is left as it is: no Ray, nothing written (but result rows a killed driver lost)."""
    sweep = load_resolved_config(experiment)
    folder = Path(experiment_path(sweep))
    if any(folder.glob("experiment_state-*.json")) and state_problem(folder) is None:
        ended = load_experiment(str(folder))
        if is_finished(ended):
            for change in restore_result_rows(str(folder)):
                logger.info("qlora-sweep: %s", change)
            errors = sum(trial.status == "ERROR" for trial in ended.analysis.trials)
            return SweepOutcome(str(folder), len(ended.analysis.trials), errors, already_finished=True)
    for change in mend_state_files(folder) + forget_deleted_checkpoints(folder) + follow_moved_experiment(folder):
        logger.info("qlora-sweep: %s", change)
    with _watched(sweep, watch) as view:
        planner, _ = _start(sweep, view, watch)
        tuner = restore_tuner(sweep, planner)
        _announce(sweep, restored_concurrency(tuner), "as the interrupted sweep ran them")
        results = tuner.fit()
    return _finish(sweep, results)


def driver_log_path(sweep: SweepConfig) -> Path:
    """Where the driver's library output goes: the experiment folder, or, for a bucket, the cache."""
    if is_uri(sweep.storage):
        return cache_dir() / "driver-logs" / f"{sweep.name}.log"
    return Path(experiment_path(sweep), DRIVER_LOG)


@contextlib.contextmanager
def _watched(sweep: SweepConfig, watch: Watch) -> Iterator[SweepView]:
    """The live view on screen, the libraries' output in driver.log (or both on screen, verbose)."""
    log = None if watch.verbose else driver_log_path(sweep)
    created = [folder for folder in (log.parent, *log.parent.parents) if not folder.exists()] if log else []
    try:
        with _shown(sweep, watch, log) as view:
            yield view
    except BaseException:
        _forget_a_start_that_failed(log, created)
        raise


def _forget_a_start_that_failed(log: Path | None, created: list[Path]) -> None:
    """A sweep refused or broken before Tune wrote anything (a storage some node cannot see, say)
    leaves nothing behind: its driver.log goes, with the folders made for it."""
    if log is None or not log.parent.is_dir() or any(p.name != DRIVER_LOG for p in log.parent.iterdir()):
        return
    log.unlink(missing_ok=True)
    for folder in created:  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextlib.contextmanager
def _shown(sweep: SweepConfig, watch: Watch, log: Path | None) -> Iterator[SweepView]:
    with libraries_output_to(log) as screen:
        view = SweepView(metric=sweep.scheduler.metric, mode=sweep.scheduler.resolved_mode,
                         max_rungs=sweep.scheduler.max_rungs, num_trials=sweep.search.num_trials,
                         searched=list(sweep.search.searched), stream=screen,
                         interactive=not watch.verbose and screen.isatty(),
                         validation_examples=watch.validation_examples)
        with our_logs_to(ViewLogHandler(view) if view.interactive else None):
            show(view)
            view.start()
            try:
                yield view
            finally:
                view.stop()
                show(None)


def _data_checked(checked: Checked) -> int:
    """The checks' result (their ConfigError raised here): the validation dialogues a whole-set
    score covers, with a line for bad rows dropped or truncated."""
    summary = checked()
    if summary.bad_rows:
        logger.info("data: bad rows dropped or truncated: %s", summary.bad_rows)
    return summary.validation_examples


def _start(sweep: SweepConfig, view: SweepView, watch: Watch,
           checked: Checked | None = None) -> tuple[TrialPlanner, Concurrency]:
    """Ray started or joined, the data checked (`checked` ran while Ray started), the storage checked
    from every node, each trial's plan ready to make, and how many trials run at once."""
    log = None if watch.verbose else driver_log_path(sweep)
    local = starts_local_ray()
    machine_gpus = functools.cache(local_gpus)  # asked once, and only where the setting needs it
    preload = preloaded_modules(sweep, machine_gpus) if local else ()
    if not local and sweep.resources.preload_libraries not in (False, "auto"):
        logger.info("resources.preload_libraries: no effect in a cluster this sweep joins; its head's "
                    "`ray start --system-config` sets what its workers preload (preload_python_modules)")
    if preload:
        logger.info("Ray's idle workers import %s before a trial is theirs (resources.preload_libraries: %s)",
                    ", ".join(preload), sweep.resources.preload_libraries)
    start_ray(log, dashboard=sweep.resources.ray_dashboard, preload=preload,
              preload_workers=most_trials_at_once(sweep, local_cpus(), machine_gpus()) if preload else None)
    if checked is not None:
        view.validation_examples = _data_checked(checked)
    logger.info("experiment folder: %s", experiment_path(sweep))
    if log:
        logger.info("Ray's own output: %s (--verbose shows it here)", log)
    check_storage_for_cluster(sweep)
    gpus, cpus = cluster_gpus(), cluster_cpus()
    view.cluster_gpus, view.cluster_cpus = gpus, cpus
    if gpus and not sweep.resources.gpus_per_trial:
        # Ray hides every GPU from a trial that asks for none: it would train on the CPU.
        logger.warning("the cluster has %g GPUs but resources.gpus_per_trial is 0, so trials run on CPUs; "
                       "set it to 1 (or a fraction to share a GPU)", gpus)
    gpu_memory = smallest_gpu_memory_bytes() if gpus and sweep.resources.gpus_per_trial else None
    planner = TrialPlanner.for_cluster(sweep, gpu_memory, cpus, gpus)
    planner.check_every_trial_fits()
    if sweep.resources.gpus_per_trial == "auto":
        if planner.packs_by_memory:
            alike = (f"every trial the largest one's, {planner.shared_share:g} (reuse_workers)"
                     if sweep.resources.reuse_workers else "each trial the share its predicted peak memory needs")
            logger.info("gpus_per_trial: auto: shares of a %.0f GiB GPU by predicted peak memory, %s",
                        gpu_memory / GIB, alike)
        else:
            logger.info("gpus_per_trial: auto, and the cluster has no GPU: trials run on CPUs")
    for decision in (planner.recompute_decision(), planner.compile_decision()):
        if decision:
            logger.info("%s", decision)
    return planner, plan_concurrency(planner, cpus, gpus)


def preloaded_modules(sweep: SweepConfig, machine_gpus: Callable[[], int]) -> tuple[str, ...]:
    """What resources.preload_libraries has a local Ray import in its idle workers, on a machine of
    `machine_gpus()` GPUs (asked only for `trial` and `auto`); a ConfigError where a worker would keep GPUs
    Ray does not give its trial."""
    mode = sweep.resources.preload_libraries
    if mode is False:
        return ()
    if mode is True:
        return CUDA_SAFE_IMPORTS
    if mode == "auto":
        # the whole trial where it was measured to pay (a fresh worker's first rung 1.19-1.28x a later one
        # against 1.7-2.3x, one H100, both seeds) and is safe, idle workers holding no GPU memory; nothing
        # elsewhere: on a 2-core CPU the workers' imports share the cores with the driver's start, and the
        # quickstart took 9 % longer with either kind of preload, in every round (2026-12-06-quickstart-preload)
        return ("trainables.trial",) if machine_gpus() == 1 and sweep.resources.gpus_per_trial else ()
    # bitsandbytes asks CUDA about every GPU when the trial's libraries are imported; the process keeps them
    gpus = machine_gpus()
    if gpus > 1:
        raise ConfigError(f"resources.preload_libraries: trial needs a machine with at most one GPU, this one has "
                          f"{gpus}: each idle worker would keep them all and every trial would train on "
                          "the first; set it to true (the libraries that ask nothing of CUDA)")
    if gpus == 1 and not sweep.resources.gpus_per_trial:
        raise ConfigError("resources.preload_libraries: trial with resources.gpus_per_trial 0 on a machine with a "
                          "GPU: each idle worker would keep the GPU that Ray hides from CPU trials; set it to true "
                          "(the libraries that ask nothing of CUDA), or give trials a share of the GPU")
    return ("trainables.trial",)


def _announce(sweep: SweepConfig, at_once: int, why: str) -> None:
    logger.info("sweep %s: %d trials, %d at a time (%s); ASHA on %s over %d rungs of %d steps",
                sweep.name, sweep.search.num_trials, at_once, why, sweep.scheduler.metric,
                sweep.scheduler.max_rungs, sweep.training.steps_per_rung)


def _finish(sweep: SweepConfig, results) -> SweepOutcome:
    for change in restore_result_rows(experiment_path(sweep)):
        logger.info("qlora-sweep: %s", change)
    return SweepOutcome(experiment_path(sweep), trials=len(results), errors=results.num_errors)
