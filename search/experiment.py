"""The experiment folder: where a sweep keeps its results and the config it was started with.

`<storage>/<name>/qlora_sweep.yaml` records the resolved config, the code version and the command;
this module writes it, and is its one reader (resume, `best`, `report`)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow.fs
import yaml

from search.config import SweepConfig, validate_sweep
from trainables.errors import ConfigError

RESOLVED_CONFIG = "qlora_sweep.yaml"  # the resolved config, inside every experiment folder
TUNER_FILE = "tuner.pkl"  # Tune writes it as a sweep starts: with it, a folder is an experiment


def is_uri(path: str) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local path."""
    return "://" in path


def experiment_path(sweep: SweepConfig) -> str:
    """Where this sweep's results live: storage/name (local paths expanded)."""
    if is_uri(sweep.storage):
        return sweep.storage.rstrip("/") + "/" + sweep.name
    return str(Path(sweep.storage).expanduser().resolve() / sweep.name)


def refuse_existing_experiment(sweep: SweepConfig) -> None:
    path = experiment_path(sweep)
    if is_uri(path):
        return
    if Path(path).exists() and any(Path(path).iterdir()):
        raise ConfigError(f"experiment folder {path} already exists; continue it with --resume "
                          "(or `qlora-sweep resume`), or give the sweep a new name (--set name=...)")


def code_version() -> str:
    try:
        package = version("qlora-sweep")
    except PackageNotFoundError:
        package = "unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent)
    return f"{package} ({commit.stdout.strip()})" if commit.returncode == 0 else package


def write_resolved_config(sweep: SweepConfig) -> None:
    header = (
        f"# Resolved config of sweep '{sweep.name}', written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"# qlora-sweep {code_version()}; command: {' '.join(sys.argv)}\n"
    )
    text = header + yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    filesystem, path = pyarrow.fs.FileSystem.from_uri(experiment_path(sweep))
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{RESOLVED_CONFIG}") as stream:
        stream.write(text.encode("utf-8"))


def read_resolved_config(folder: Path) -> SweepConfig | None:
    """The config a local experiment folder was started with, pointed at where the folder is now
    (it may have been copied or moved); None when the folder has none."""
    recorded = folder / RESOLVED_CONFIG
    if not recorded.is_file():
        return None
    values = yaml.safe_load(recorded.read_text(encoding="utf-8"))
    values.update(storage=str(folder.parent), name=folder.name)
    return validate_sweep(values, where=str(recorded))


def load_resolved_config(experiment: str) -> SweepConfig:
    """The config of a qlora-sweep experiment folder, or a ConfigError saying it is not one."""
    folder = Path(experiment).expanduser().resolve()
    sweep = read_resolved_config(folder) if (folder / TUNER_FILE).is_file() else None
    if sweep is None:
        raise ConfigError(f"{folder}: not a qlora-sweep experiment folder (no {RESOLVED_CONFIG} or {TUNER_FILE})")
    return sweep
