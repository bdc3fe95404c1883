"""A sweep from start to end: guard the experiment folder, start or join Ray, plan the trials,
record the resolved config, fit the Tuner, then put back result rows a killed driver lost.
The same for a resume, from the folder of a sweep whose driver died."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from search.config import SweepConfig
from search.experiment import (
    RESOLVED_CONFIG, experiment_path, load_resolved_config, refuse_existing_experiment, write_resolved_config,
)
from search.history import restore_result_rows
from search.packing import TrialPlanner
from search.results import is_finished, load_experiment
from search.state_files import mend_torn_state_files, torn_state_files
from search.storage import check_storage_for_cluster
from search.tuner import build_tuner, cluster_gpus, restore_tuner, smallest_gpu_memory_bytes, start_ray
from trainables.memory import GIB

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOutcome:
    experiment: str  # the experiment folder (a path or a URI)
    trials: int
    errors: int  # trials that ended in an error
    already_finished: bool = False  # a resume found nothing left to run: no Ray was started


def run_sweep(sweep: SweepConfig, resume: bool = False) -> SweepOutcome:
    if resume and Path(experiment_path(sweep), RESOLVED_CONFIG).is_file():
        return resume_sweep(experiment_path(sweep))
    refuse_existing_experiment(sweep)
    planner = _start(sweep)
    write_resolved_config(sweep)
    return _finish(sweep, build_tuner(sweep, planner).fit())


def resume_sweep(experiment: str) -> SweepOutcome:
    """Continue a sweep whose driver died: same folder, same trials, searcher and ASHA state. A sweep
    that has ended is left as it is: no Ray, nothing written (but result rows a killed driver lost)."""
    sweep = load_resolved_config(experiment)
    folder = Path(experiment_path(sweep))
    if any(folder.glob("experiment_state-*.json")) and not torn_state_files(folder):
        ended = load_experiment(str(folder))
        if is_finished(ended):
            for change in restore_result_rows(str(folder)):
                logger.info("qlora-sweep: %s", change)
            errors = sum(trial.status == "ERROR" for trial in ended.analysis.trials)
            return SweepOutcome(str(folder), len(ended.analysis.trials), errors, already_finished=True)
    for change in mend_torn_state_files(folder):
        logger.info("qlora-sweep: %s", change)
    planner = _start(sweep)
    return _finish(sweep, restore_tuner(sweep, planner).fit())


def _start(sweep: SweepConfig) -> TrialPlanner:
    """Ray started or joined, the storage checked from every node, each trial's plan ready to make."""
    start_ray()
    check_storage_for_cluster(sweep)
    gpus = cluster_gpus()
    if gpus and not sweep.resources.gpus_per_trial:
        # Ray hides every GPU from a trial that asks for none: it would train on the CPU.
        logger.warning("the cluster has %g GPUs but resources.gpus_per_trial is 0, so trials run on CPUs; "
                       "set it to 1 (or a fraction to share a GPU)", gpus)
    gpu_memory = smallest_gpu_memory_bytes() if gpus and sweep.resources.gpus_per_trial else None
    planner = TrialPlanner.for_cluster(sweep, gpu_memory)
    if sweep.resources.gpus_per_trial == "auto":
        if planner.packs_by_memory:
            planner.check_every_trial_fits()
            logger.info("gpus_per_trial: auto: each trial gets the share of a %.0f GiB GPU its predicted peak "
                        "memory needs", gpu_memory / GIB)
        else:
            logger.info("gpus_per_trial: auto, and the cluster has no GPU: trials run on CPUs")
    logger.info("experiment folder: %s", experiment_path(sweep))
    return planner


def _finish(sweep: SweepConfig, results) -> SweepOutcome:
    for change in restore_result_rows(experiment_path(sweep)):
        logger.info("qlora-sweep: %s", change)
    return SweepOutcome(experiment_path(sweep), trials=len(results), errors=results.num_errors)
