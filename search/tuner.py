"""The driver's one door to Ray: start or join Ray, read the cluster, set up and restore the Tuner
(OptunaSearch with seeded TPE, an ASHA that keeps its state, checkpoints kept by the metric, trial
retries), and the function each trial's worker runs. The Ray internals a resume and a trial's
retries rely on are gathered at the end of this module, behind a check of Ray's version.

Ray Tune's default loggers include TBXLoggerCallback: scalars per trial under the experiment folder,
and at trial end the searched hyperparameters with the last metrics (TensorBoard's HParams tab).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
from ray import cloudpickle, tune
from ray._private.accelerators import get_accelerator_manager_for_resource
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from search.config import Choice, Param, Range, SearchConfig, SweepConfig
from search.live import current_view
from search.experiment import HEARTBEAT_S, STATE_COPY, experiment_path, write_atomically, write_driver_heartbeat
from search.output import TRIAL_LINE_PREFIX, configure_trial_output
from search.packing import TrialPlanner
from search.space import INTEGER_PARAMETERS, modules_to_text
from trainables.errors import ConfigError
from trainables.memory import (
    SHARE_STEP, local_gpu_memory_bytes, nvidia_smi_gpu_memory_bytes, nvidia_smi_smallest_gpu_memory_bytes,
)
from trainables.warm import in_trial_thread

logger = logging.getLogger(__name__)

CLUSTER_QUERY_TIMEOUT_S = 180
SCHEDULER_STATE = "qlora_sweep_asha_state"
TUNE_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


# --- the cluster -----------------------------------------------------------------------------

def start_ray(worker_output: Path | None = None, dashboard: bool = True, preload: Sequence[str] = (),
              preload_workers: int | None = None) -> None:
    """Inside `ray job submit` (RAY_ADDRESS set) or next to `ray start`, join that cluster;
    otherwise start a local Ray for this process, with its dashboard or without (ray.init ignores
    the switch when it joins a cluster). `worker_output`: a file that receives the lines Ray
    forwards from trial workers, instead of the screen. `preload`: modules a local Ray's worker
    processes import as they start, before any task or trial is theirs (a cluster's head sets its
    own: `ray start --system-config`); Ray starts idle workers with the driver, so their imports
    overlap its preparation. `preload_workers`: how many idle workers it starts then (Ray's own
    count is one per CPU, all importing at once: on an H200 machine's 16 cores the first trials
    waited 13-15 s for them after the Tuner began, 2026-12-05); Ray starts no more than that many
    workers at once for the whole sweep, enough where it is the trials that run at once."""
    # Tune warns when it snapshots often; with a checkpoint every rung that is by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    system_config = None
    if preload and starts_local_ray():  # ray.init refuses a system config for a cluster it joins
        system_config = {"preload_python_modules": list(preload)}
        if preload_workers:
            system_config["worker_maximum_startup_concurrency"] = preload_workers
    # None, not True: Ray's dashboard where its packages are (ray[default]); True makes their absence an error
    ray.init(ignore_reinit_error=True, include_dashboard=None if dashboard else False, _system_config=system_config)
    forward_worker_output(worker_output)


def starts_local_ray() -> bool:
    """Whether start_ray would start a Ray of its own on this machine rather than join a running one."""
    return ray._private.services.canonicalize_bootstrap_address(None) is None


def local_cpus() -> int:
    """The CPUs a Ray started here would offer (its own count: the cgroup's limit where there is one)."""
    return ray._private.utils.get_num_cpus()


def local_gpus() -> int:
    """The GPUs a Ray started here would offer: the machine's, as many as CUDA_VISIBLE_DEVICES lists."""
    manager = get_accelerator_manager_for_resource("GPU")
    visible = manager.get_current_process_visible_accelerator_ids()
    found = manager.get_current_node_num_accelerators()
    return found if visible is None else min(found, len(visible))


def cluster_gpus() -> float:
    return ray.cluster_resources().get("GPU", 0)


def cluster_cpus() -> float:
    return ray.cluster_resources().get("CPU", 0)


def _alive_nodes(with_gpus: bool = False) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node["Alive"] and (not with_gpus or node["Resources"].get("GPU", 0) > 0)]


def alive_node_count() -> int:
    return len(_alive_nodes())


def _on_node(remote_function: Any, node_id: str) -> Any:
    return remote_function.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()


def smallest_gpu_memory_bytes() -> int | None:
    """Memory of the smallest GPU in the running cluster, read on every GPU node; None without GPUs.

    Shares are fractions of "a GPU" to Ray, whatever its size: sizing them by the smallest GPU
    keeps every placement within memory in a mixed cluster.
    """
    @ray.remote(num_cpus=0, num_gpus=SHARE_STEP, max_retries=0)
    def gpu_memory() -> int | None:
        # torch (12-19 s to import in a fresh worker on an H200) only where nvidia-smi cannot say; never in the driver
        return nvidia_smi_gpu_memory_bytes() or local_gpu_memory_bytes()

    found = {}
    driver_node = ray.get_runtime_context().get_node_id()
    for node in _alive_nodes(with_gpus=True):
        if node["NodeID"] == driver_node and (here := nvidia_smi_smallest_gpu_memory_bytes()):
            found[node["NodeID"]] = here  # its own node: no worker to wait for
            continue
        try:
            found[node["NodeID"]] = ray.get(_on_node(gpu_memory, node["NodeID"]), timeout=CLUSTER_QUERY_TIMEOUT_S)
        except Exception as exc:  # a busy or broken node: say which, and what to do
            raise ConfigError(f"gpus_per_trial: auto could not read the GPU memory of node {node['NodeID'][:12]} "
                              f"({type(exc).__name__}); give resources.gpus_per_trial a number") from None
    unreadable = [node_id for node_id, memory in found.items() if not memory]
    if unreadable:
        raise ConfigError(f"gpus_per_trial: auto: node {unreadable[0][:12]} advertises GPUs that torch cannot see; "
                          "give resources.gpus_per_trial a number")
    return min(found.values()) if found else None


def nodes_that_cannot_see(path: str) -> tuple[int, int]:
    """(nodes on which `path` does not exist, alive nodes), asked on every node."""
    @ray.remote(num_cpus=0, max_retries=0)
    def sees() -> bool:
        return os.path.exists(path)

    nodes = _alive_nodes()
    checks = [_on_node(sees, node["NodeID"]) for node in nodes]
    return sum(not seen for seen in ray.get(checks, timeout=CLUSTER_QUERY_TIMEOUT_S)), len(nodes)


# --- the search space --------------------------------------------------------------------------

def tune_search_space(search: SearchConfig) -> dict[str, Any]:
    """Config choices and ranges as Tune domains, which OptunaSearch turns into Optuna distributions.
    Fixed values stay out (search.space merges them in), so Optuna and TensorBoard see only what is searched."""
    return {name: _domain(name, param) for name, param in search.searched.items()}


def _domain(name: str, param: Param) -> Any:
    if isinstance(param, Choice):
        values = [modules_to_text(v) for v in param.choice] if name == "target_modules" else list(param.choice)
        return tune.choice(values)
    assert isinstance(param, Range)
    if name in INTEGER_PARAMETERS:
        low, high = int(param.low), int(param.high) + 1  # tune's integer upper bounds are exclusive
        return tune.lograndint(low, high) if param.log else tune.randint(low, high)
    return tune.loguniform(param.low, param.high) if param.log else tune.uniform(param.low, param.high)


# --- the trials --------------------------------------------------------------------------------

def run_trial(searched: dict[str, Any], planner: TrialPlanner) -> None:
    """What Tune runs in each trial's worker: the driver's plan for these values, then the recipe.
    (Tune names trial folders after it: run_trial_<id>_<n>_<values>.)"""
    started = time.perf_counter()
    configure_trial_output()
    import trainables.trial  # heavy (torch): in the trial's own process only

    needs_gpu_size = planner.shape is not None and planner.gpu_memory_bytes is None
    trial = planner.trial_config(searched, local_gpu_memory_bytes() if needs_gpu_size else None)
    # Every trial of this worker in one thread: Tune gives each a new one, and CUDA's per-thread
    # state (cuDNN's attention graphs) would be built again for each (trainables.warm)
    in_trial_thread(trainables.trial.run_trial, trial, started)


def _trainable(planner: TrialPlanner) -> Any:
    resources = planner.resources if planner.packs_by_memory else planner.resources({})
    return tune.with_resources(tune.with_parameters(run_trial, planner=planner), resources)


# --- ASHA that survives a dead driver --------------------------------------------------------

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


def save_scheduler_state(scheduler: PersistentASHA) -> None:
    with tempfile.TemporaryDirectory() as work:
        local = Path(work, scheduler.state_name)
        scheduler.save(str(local))  # ASHA's own serialization
        write_atomically(scheduler.experiment_path, scheduler.state_name, local.read_bytes())


def latest_scheduler_state(experiment: str) -> str | None:
    filesystem, path = pyarrow.fs.FileSystem.from_uri(experiment)
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
    names = sorted(f.base_name for f in found
                   if f.base_name.startswith(SCHEDULER_STATE) and f.base_name.endswith(".pkl"))
    return f"{path}/{names[-1]}" if names else None


def restore_scheduler_state(scheduler: PersistentASHA, experiment: str) -> bool:
    state = latest_scheduler_state(experiment)
    if state is None:
        return False
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(experiment)
    with tempfile.TemporaryDirectory() as work:
        local = os.path.join(work, "state.pkl")
        with filesystem.open_input_stream(state) as source, open(local, "wb") as target:
            target.write(source.read())
        scheduler.restore(local)
    _forget_metric_and_mode(scheduler)
    scheduler.start_session(experiment)
    return True


# --- what the driver keeps for a resume ----------------------------------------------------------

def newest_state_file(folder: Path, kind: str) -> Path | None:
    """The file of one kind ("experiment_state", "search_gen_state", "searcher") Tune resumes from."""
    return next((p for p in newest_state_files(folder) if p.name.startswith(kind + "-")), None)


def newest_state_files(folder: Path) -> list[Path]:
    """Per kind, the file Tune resumes from: the greatest name (names end in the session's start time)."""
    newest = []
    for pattern in TUNE_STATE_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            newest.append(found[-1])
    return newest


class SweepKeeper(tune.Callback):
    """Keeps two things in the experiment folder while the sweep runs: a heartbeat that tells a
    live driver from a dead one (`report`), and, after each of Tune's saves, a complete copy of
    Tune's state files. Tune copies its files into the folder one by one, not atomically, so a
    killed driver can leave one torn, and the intact set it saved last then lives only in its
    staging folder on its own machine; the copy kept here survives the machine (search.state_files)."""

    def __init__(self, experiment: str):
        self.experiment = experiment
        self._last_beat = 0.0
        self._copied: dict[str, tuple[int, int]] = {}
        self._generation = 0
        self._staging: Path | None = None  # found at the first step with a trial; it stays put for the session
        self._session_started: float | None = None  # set by setup, when Tune begins a driver session

    def follow(self, experiment: str) -> None:
        """Keep the folder where the experiment is now: one restored from tuner.pkl names the folder
        the sweep started in, which a copied or moved experiment has left."""
        self.experiment = experiment

    def setup(self, **info):
        self._staging = None  # a resumed session stages elsewhere
        self._session_started = time.time()
        write_driver_heartbeat(self.experiment, session_started=self._session_started)
        self._last_beat = time.monotonic()

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last_beat >= HEARTBEAT_S:
            write_driver_heartbeat(self.experiment, session_started=self._session_started)
            self._last_beat = time.monotonic()
        if trials:
            # Tune saves its state to the staging folder in this same thread, between steps:
            # what is there now is one whole save.
            self._staging = self._staging or _driver_staging_path(trials[0])
            self._copy_state(self._staging)

    def on_experiment_end(self, trials, **info):
        if self._staging is not None:
            self._copy_state(self._staging)  # Tune's final save, made after the last step
        write_driver_heartbeat(self.experiment, ended=True, session_started=self._session_started)

    def _copy_state(self, staging: Path) -> None:
        files = newest_state_files(staging)
        seen = {f.name: (f.stat().st_mtime_ns, f.stat().st_size) for f in files}
        if not files or seen == self._copied:
            return
        self._generation += 1
        generation = f"{STATE_COPY}/{os.getpid()}-{self._generation:06d}"
        hashes = {}
        for file in files:
            data = file.read_bytes()
            write_atomically(self.experiment, f"{generation}/{file.name}", data)
            hashes[file.name] = hashlib.sha256(data).hexdigest()
        # The pointer moves last: a copy interrupted midway leaves the previous whole one in use.
        current = {"folder": generation.split("/", 1)[1], "files": hashes, "copied_at": time.time()}
        write_atomically(self.experiment, f"{STATE_COPY}/current.json", json.dumps(current).encode("utf-8"))
        self._forget_older_copies(generation)
        self._copied = seen

    def _forget_older_copies(self, keep: str) -> None:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(self.experiment)
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(f"{root}/{STATE_COPY}")):
            if info.type == pyarrow.fs.FileType.Directory and info.base_name != keep.split("/", 1)[1]:
                filesystem.delete_dir(info.path)


class TrialEvents(tune.Callback):
    """Tune's callback hooks as the live view's events (search.live). It holds no view: Tune
    pickles its callbacks into the experiment folder (tuner.pkl), and the driver that shows the
    sweep, the first or a resuming one, registers its own view with search.live.show."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_step_end(self, iteration, trials, **info):
        view = current_view()
        if view is None:
            return
        for trial in trials:
            view.trial_seen(trial.trial_id, trial.config)
        running = [trial for trial in trials if trial.status == "RUNNING"]
        view.resources_in_use(sum(_trial_resources(trial).get("GPU", 0) for trial in running),
                              sum(_trial_resources(trial).get("CPU", 0) for trial in running))
        view.tick()

    def on_trial_start(self, iteration, trials, trial, **info):
        if (view := current_view()) is not None:
            # A restarted or resumed trial has results already: it continues from its checkpoint.
            view.trial_started(trial.trial_id, trial.config, int((trial.last_result or {}).get("training_iteration") or 0))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if (view := current_view()) is not None:
            examples = result.get("rouge_examples")
            view.rung_reported(trial.trial_id, int(result.get("training_iteration") or 0), result.get(self.metric),
                               int(examples) if examples else None,
                               diverged=result.get("diverged_why") if result.get("diverged") else None,
                               step=result.get("step"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (view := current_view()) is not None:
            view.trial_ended(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        if (view := current_view()) is not None:
            view.trial_ended(trial.trial_id, error=_error_line(trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        if (view := current_view()) is not None:
            view.trial_retrying(trial.trial_id, _error_line(trial))


def _trial_resources(trial: Any) -> dict[str, float]:
    return trial.placement_group_factory.required_resources


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (its exception), and where the whole of it will be.
    Tune writes the error into the driver's staging copy of the trial first (error_file), then
    copies it into the experiment folder (trial.path)."""
    where = f"{trial.path}/error.txt" if getattr(trial, "path", None) else "the trial's error.txt"
    try:
        text = Path(trial.error_file).read_text(encoding="utf-8") if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{lines[-1][:200]} (the whole error: {where})" if lines else f"see {where}"


# --- Tuner --------------------------------------------------------------------------------------

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


def restore_tuner(sweep: SweepConfig, planner: TrialPlanner) -> Any:
    """The interrupted sweep's Tuner: finished trials stay finished, unfinished ones continue from
    their last checkpoint, errored ones are retried from theirs; Optuna's history and ASHA's rung
    records come back."""
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(RefuseFreshStartOnResume())
    retry_trials_whose_kept_worker_died()
    # param_space only lets Tune's live table show the searched values again; the filter above
    # stops a restore that fails before Tune could start new trials from it.
    tuner = tune.Tuner.restore(experiment_path(sweep), trainable=_trainable(planner),
                               param_space=tune_search_space(sweep.search),
                               resume_unfinished=True, resume_errored=True)
    restore_scheduler_state(_restored_scheduler(tuner), experiment_path(sweep))
    for callback in _restored_callbacks(tuner):
        if isinstance(callback, SweepKeeper):
            callback.follow(experiment_path(sweep))
    return tuner


def build_tuner(sweep: SweepConfig, planner: TrialPlanner, concurrent_trials: int) -> Any:
    metric, mode = sweep.scheduler.metric, sweep.scheduler.resolved_mode
    folder = experiment_path(sweep)
    retry_trials_whose_kept_worker_died()
    searcher = ConcurrencyLimiter(
        OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed)),
        max_concurrent=concurrent_trials,  # search.packing.plan_concurrency
    )
    scheduler = PersistentASHA(
        experiment_path=folder,
        time_attr="training_iteration",  # one iteration = one rung: grace period and max_t in rungs
        max_t=sweep.scheduler.max_rungs,
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )
    return tune.Tuner(
        _trainable(planner),
        param_space=tune_search_space(sweep.search),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=sweep.search.num_trials,
            reuse_actors=sweep.resources.reuse_workers,  # warm workers: trainables.warm
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=folder.rsplit("/", 1)[0],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=sweep.checkpoints_kept,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=tune.FailureConfig(max_failures=sweep.trial_retries),
            callbacks=[SweepKeeper(folder), TrialEvents(metric)],
        ),
    )


# --- Ray internals that resume and retries rely on ------------------------------------------------
# No public API offers these. Each use checks first that the installed Ray is the one they were
# written against, so that a Ray upgrade fails with one line instead of a resume gone wrong.

RAY_INTERNALS_WRITTEN_FOR = "2.60"


def check_ray_internals() -> None:
    installed = version("ray")
    if not (installed == RAY_INTERNALS_WRITTEN_FOR or installed.startswith(RAY_INTERNALS_WRITTEN_FOR + ".")):
        raise ConfigError(f"Ray {installed} is installed, but qlora-sweep's resume reads Ray internals written for "
                          f"Ray {RAY_INTERNALS_WRITTEN_FOR}; install ray[default,tune]=={RAY_INTERNALS_WRITTEN_FOR}.0 "
                          "(pyproject.toml)")


def read_tune_state_file(path: Path) -> Any:
    """Load a Tune state file the way Tune's resume loads it; raises whatever that raises."""
    check_ray_internals()
    from ray.tune.utils.serialization import _loads_with_cloudpickle  # Tune's reader of experiment_state-*.json

    data = path.read_bytes()
    if path.name.startswith("experiment_state-"):
        return _loads_with_cloudpickle(data)
    if path.name.startswith("search_gen_state-"):
        return cloudpickle.loads(data)
    return pickle.loads(data)  # searcher-state-*.pkl, tuner.pkl


@dataclass(frozen=True)
class SavedTrials:
    """What one set of Tune's state files says about the trials, read as Tune's resume reads them.
    None where the set has no file of that kind."""

    listed: frozenset[str] | None  # experiment_state-*.json: the trials Tune restores
    made: int | None  # search_gen_state-*.json: how many trials the searcher has made (it makes no more after num_trials)
    told: frozenset[str] | None  # searcher-state-*.pkl: the trials Optuna was told of (each result goes to one)


def read_saved_trials(files: list[Path]) -> SavedTrials:
    """The trial records of a set of state files (newest_state_files); raises what reading a torn one raises."""
    listed = made = told = None
    for path in files:
        loaded = read_tune_state_file(path)
        if path.name.startswith("experiment_state-"):
            states = [entry[0] for entry in loaded["trial_data"]]
            listed = frozenset((json.loads(s) if isinstance(s, str) else s)["trial_id"] for s in states)
        elif path.name.startswith("search_gen_state-"):
            made = int(loaded["counter"])
        elif isinstance(loaded, dict) and isinstance(loaded.get("_ot_trials"), dict):  # OptunaSearch's state
            told = frozenset(loaded["_ot_trials"])
    return SavedTrials(listed, made, told)


UNFINISHED_STATUSES = ("PENDING", "RUNNING", "PAUSED", "ERROR")  # the trials Tune.restore runs again


def forget_deleted_checkpoints(experiment: Path) -> list[str]:
    """Make every trial that a resume runs again name a checkpoint that exists; one line per trial changed.

    Tune deletes a trial's checkpoint beyond CheckpointConfig(num_to_keep) as soon as it registers
    a newer one, sparing only the newest. A driver killed before its next save leaves a state whose
    newest checkpoint for that trial may be the one just deleted; Tune's resume then fails to
    restore it on every retry and ends the trial in ERROR. Such a trial resumes instead from its
    newest checkpoint still on disk (the rungs after it run again; search.history keeps the reruns
    apart), or from its start. Paths are found under the experiment folder by their last two names,
    as Tune finds them after the folder moved. The file is rewritten with Tune's own encoders."""
    check_ray_internals()
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    experiment_state = newest_state_file(experiment, "experiment_state")
    if experiment_state is None:
        return []
    data = json.loads(experiment_state.read_text(encoding="utf-8"))
    changes = []

    def on_disk(result: Any) -> bool:
        path = Path(result.checkpoint.path)
        return (experiment / path.parent.name / path.name).is_dir()

    for entry in data["trial_data"]:
        trial = json.loads(entry[0])
        metadata = _TrainingRunMetadata.from_json_state(entry[1])
        manager = metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        if trial.get("status") not in UNFINISHED_STATUSES or latest is None or on_disk(latest):
            continue
        manager._checkpoint_results = [r for r in manager._checkpoint_results if on_disk(r)]
        newest = max(manager._checkpoint_results, key=lambda r: r.metrics.get("training_iteration", 0), default=None)
        manager._latest_checkpoint_result = newest
        metadata.invalidate_cache()
        entry[1] = metadata.get_json_state()
        changes.append(f"trial {trial['trial_id']}: its newest checkpoint, {Path(latest.checkpoint.path).name}, is gone "
                       "(Tune deleted it after registering a newer one that the killed driver never saved); it "
                       + (f"resumes from {Path(newest.checkpoint.path).name}, at rung "
                          f"{newest.metrics.get('training_iteration', '?')}" if newest else "starts again from its first step"))
    if changes:
        write_atomically(str(experiment), experiment_state.name, json.dumps(data).encode("utf-8"))
    return changes


def retry_trials_whose_kept_worker_died() -> None:
    """Give a trial its retries when the kept worker it was starting in had died.

    With reuse_actors, Tune starts a trial in a finished trial's actor by a `reset` task. If that
    worker died while idle (a kill, the kernel's out-of-memory killer), Ray reports the one death
    twice: as the actor's failure, which Tune handles as a failed start (the trial goes back to
    PENDING, one failure counted), then as the reset task's failure. The second finds the trial
    PENDING, where Tune's `_process_trial_failure` retries nothing and ends the trial in ERROR,
    whatever FailureConfig allows; and the trial stays in Tune's set of resetting trials, which
    would keep it from ever being given another worker. So here each exception counts once per
    trial, and a failed reset is no longer a reset in progress. Found by the random-kill soak
    (tests/test_chaos.py, 2026-12-06: a worker killed as the next trial began in it)."""
    check_ray_internals()
    original = TuneController._trial_task_failure
    if getattr(original, "counts_each_death_once", False):
        return

    def _trial_task_failure(self: Any, trial: Any, exception: Exception) -> None:
        self._resetting_trials.discard(trial)
        last = self.__dict__.setdefault("_qlora_sweep_last_failure", {})
        if last.get(trial.trial_id) is exception:
            logger.debug("trial %s: its worker's death was already counted; not failing it again", trial.trial_id)
            return
        last[trial.trial_id] = exception
        original(self, trial, exception)

    _trial_task_failure.counts_each_death_once = True  # type: ignore[attr-defined]
    TuneController._trial_task_failure = _trial_task_failure


def _driver_staging_path(trial: Any) -> Path:
    """The local folder Tune saves its state to before copying it into the experiment folder."""
    check_ray_internals()
    return Path(trial.storage.experiment_driver_staging_path)


def ray_temp_dir() -> Path:
    """Where Ray keeps its session folders on this machine (RAY_TMPDIR, else /tmp/ray)."""
    check_ray_internals()
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def forward_worker_output(log_file: Path | None) -> None:
    """Send the trial workers' lines that Ray forwards to this driver into `log_file` (appended),
    or, with None, where Ray prints them (the screen). Ray has no public switch for where they go:
    this replaces its handler, under its name, so that ray.shutdown removes ours as it would its."""
    check_ray_internals()
    from ray._private.ray_logging import global_worker_stdstream_dispatcher
    from ray._private.worker import print_to_stdstream, print_worker_logs

    def forward(data: dict) -> None:
        if log_file is None:
            print_to_stdstream(data, ignore_prefix=False)
            return
        try:
            with open(log_file, "a", encoding="utf-8", errors="replace") as log:
                print_worker_logs(data, log)
        except OSError:  # the experiment folder is gone (a refused start removed it): nothing to keep
            pass
        # A trial's own warnings (an out-of-memory retry, say) are for the person watching.
        ours = [line for line in data.get("lines", []) if line.startswith(TRIAL_LINE_PREFIX)]
        view = current_view()
        for line in ours:
            if view is not None:
                view.say(line)
            else:
                logger.warning("%s", line[len(TRIAL_LINE_PREFIX):])

    global_worker_stdstream_dispatcher.remove_handler(RAY_WORKER_LOG_HANDLER)
    global_worker_stdstream_dispatcher.add_handler(RAY_WORKER_LOG_HANDLER, forward)


RAY_WORKER_LOG_HANDLER = "ray_print_logs"  # the name ray._private.worker.connect gives its handler


def _restored_tune_config(tuner: Any) -> Any:
    """Tune keeps the TuneConfig it restored on its internal tuner; there is no public accessor."""
    check_ray_internals()
    return getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)


def _restored_callbacks(tuner: Any) -> list[Any]:
    """The callbacks Tune unpickled from tuner.pkl, kept on its internal tuner's RunConfig."""
    check_ray_internals()
    return list(getattr(getattr(getattr(tuner, "_local_tuner", None), "_run_config", None), "callbacks", None) or [])


def follow_moved_experiment(folder: Path) -> list[str]:
    """Point the searcher's saved experiment at the folder the experiment is in now; one line if it changed.

    Tune's resume moves the trials it restores to where the experiment folder is now, but not the
    experiment spec in search_gen_state-*.json that new trials are made from: in a copied or moved
    experiment, every trial made after the resume would upload its checkpoints to the old folder
    (or fail where that is gone). A local folder only: a bucket's path does not move."""
    check_ray_internals()
    searcher_state = newest_state_file(folder, "search_gen_state")
    if searcher_state is None:
        return []
    state = cloudpickle.loads(searcher_state.read_bytes())
    experiment = state.get("experiment")
    storages = [getattr(experiment, "storage", None), (getattr(experiment, "spec", None) or {}).get("storage")]
    moved = [s for s in storages if s is not None and isinstance(s.storage_filesystem, pyarrow.fs.LocalFileSystem)
             and Path(s.storage_fs_path, s.experiment_dir_name) != folder]
    if not moved:
        return []
    was = Path(moved[0].storage_fs_path, moved[0].experiment_dir_name)
    for storage in moved:
        storage.storage_fs_path, storage.experiment_dir_name = folder.parent.as_posix(), folder.name
    write_atomically(str(folder), searcher_state.name, cloudpickle.dumps(state))
    return [f"{searcher_state.name}: trials made from now on go to {folder}, where the experiment is now (it was {was})"]


def _restored_scheduler(tuner: Any) -> PersistentASHA:
    scheduler = getattr(_restored_tune_config(tuner), "scheduler", None)
    if not isinstance(scheduler, PersistentASHA):
        raise ConfigError("the restored Tuner holds no qlora-sweep scheduler; ASHA's state cannot be restored")
    return scheduler


def restored_concurrency(tuner: Any) -> int:
    """The trials at a time of a restored sweep: its searcher's limit, kept in the restored TuneConfig."""
    searcher = getattr(_restored_tune_config(tuner), "search_alg", None)
    if not isinstance(searcher, ConcurrencyLimiter):
        raise ConfigError("the restored Tuner holds no qlora-sweep searcher; its concurrency cannot be read")
    return searcher.max_concurrent


def _forget_metric_and_mode(scheduler: PersistentASHA) -> None:
    """The saved state holds the metric and mode Tune gave the scheduler; Tune sets them again on
    resume and refuses a scheduler that already has them."""
    check_ray_internals()
    scheduler._metric = scheduler._mode = None
