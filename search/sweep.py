"""`qlora-sweep run`: guard the experiment folder, start or join Ray, record the resolved
config, fit the Tuner, print the best trial."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from search.config import RESOLVED_CONFIG, ConfigError, SweepConfig, is_uri


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("qlora-sweep")
    except PackageNotFoundError:
        package = "unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent)
    return f"{package} ({commit.stdout.strip()})" if commit.returncode == 0 else package


def refuse_existing_experiment(sweep: SweepConfig) -> None:
    if is_uri(sweep.experiment_path):
        return
    path = Path(sweep.experiment_path)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"experiment folder {path} already exists; continue it with --resume "
                          "(or `qlora-sweep resume`), or give the sweep a new name (--set name=...)")


def write_resolved_config(sweep: SweepConfig) -> None:
    import pyarrow.fs

    header = (
        f"# Resolved config of sweep '{sweep.name}', written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"# qlora-sweep {code_version()}; command: {' '.join(sys.argv)}\n"
    )
    text = header + yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    filesystem, path = pyarrow.fs.FileSystem.from_uri(sweep.experiment_path)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{RESOLVED_CONFIG}") as stream:
        stream.write(text.encode("utf-8"))


def warn_about_idle_gpus(sweep: SweepConfig) -> None:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and not sweep.resources.gpus_per_trial:
        # Ray hides every GPU from a trial that asks for none: it would train on the CPU.
        print(f"warning: the cluster has {gpus:g} GPUs but resources.gpus_per_trial is 0, so trials "
              "run on CPUs; set it to 1 (or a fraction to share a GPU)", file=sys.stderr, flush=True)


def load_resolved_config(experiment: str) -> SweepConfig:
    """The config an experiment was started with, pointed at where the folder is now."""
    folder = Path(experiment).expanduser().resolve()
    recorded = folder / RESOLVED_CONFIG
    if not recorded.is_file() or not (folder / "tuner.pkl").is_file():
        raise ConfigError(f"{folder}: not a qlora-sweep experiment folder (no {RESOLVED_CONFIG} or tuner.pkl)")
    values = yaml.safe_load(recorded.read_text(encoding="utf-8"))
    values.update(storage=str(folder.parent), name=folder.name)  # it may have been copied or moved
    return SweepConfig.model_validate(values)


def _start_ray(sweep: SweepConfig) -> int | None:
    import ray

    from search.storage import check_storage_for_cluster

    # Tune warns when it snapshots often; with a checkpoint every rung that is by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Inside `ray job submit` (RAY_ADDRESS set) or next to `ray start`, this joins that cluster;
    # otherwise it starts a local Ray for this process.
    ray.init(ignore_reinit_error=True)
    check_storage_for_cluster(sweep)
    warn_about_idle_gpus(sweep)
    gpu_memory = plan_gpu_shares(sweep)
    print(f"experiment folder: {sweep.experiment_path}", flush=True)
    return gpu_memory


def plan_gpu_shares(sweep: SweepConfig) -> int | None:
    """With gpus_per_trial auto: the GPU size shares are cut from, after checking the largest trial fits."""
    from search.packing import GIB, check_every_trial_fits, smallest_gpu_memory_bytes

    if sweep.resources.gpus_per_trial != "auto":
        return None
    gpu_memory = smallest_gpu_memory_bytes()
    if gpu_memory is None:
        print("gpus_per_trial: auto, and the cluster has no GPU: trials run on CPUs", flush=True)
        return None
    check_every_trial_fits(sweep, gpu_memory)
    print(f"gpus_per_trial: auto: each trial gets the share of a {gpu_memory / GIB:.0f} GiB GPU its predicted "
          "peak memory needs", flush=True)
    return gpu_memory


def resume_sweep(experiment: str) -> int:
    """Continue a sweep whose driver died: same folder, same trials, searcher and ASHA state."""
    from search.state_files import mend_torn_state_files
    from search.tuner import restore_tuner

    sweep = load_resolved_config(experiment)
    for change in mend_torn_state_files(Path(sweep.experiment_path)):
        print(f"qlora-sweep: {change}", flush=True)
    gpu_memory = _start_ray(sweep)
    return _finish(sweep, restore_tuner(sweep, gpu_memory).fit())


def run_sweep(sweep: SweepConfig, resume: bool = False) -> int:
    from search.tuner import build_tuner

    if resume and Path(sweep.experiment_path, RESOLVED_CONFIG).is_file():
        return resume_sweep(sweep.experiment_path)
    refuse_existing_experiment(sweep)
    gpu_memory = _start_ray(sweep)
    write_resolved_config(sweep)
    return _finish(sweep, build_tuner(sweep, gpu_memory).fit())


def _finish(sweep: SweepConfig, results) -> int:
    from search.history import restore_result_rows
    from search.results import best_trial, format_best, load_experiment

    for change in restore_result_rows(sweep.experiment_path):
        print(f"qlora-sweep: {change}", flush=True)
    print(f"\nexperiment folder: {sweep.experiment_path}")
    if is_uri(sweep.experiment_path):
        return 0 if results.num_errors < len(results) else 1
    experiment = load_experiment(sweep.experiment_path)
    try:
        print(format_best(best_trial(experiment)))
    except ConfigError as exc:
        print(f"no best trial: {exc}")
        return 1
    return 0
