"""The experiment folder: where a sweep keeps its results, the config it was started with, and
what its driver leaves for a resume.

`<storage>/<name>/qlora_sweep.yaml` records the resolved config, the code version and the command;
this module writes it, and is its one reader (resume, `best`, `report`). Beside it the driver
keeps `qlora_sweep_driver.json`, a heartbeat that tells a live sweep from one whose driver died,
and `qlora_sweep_state/`, a complete copy of Tune's state files (search.tuner.SweepKeeper).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow.fs
import yaml

from search.config import SweepConfig, is_experiment_name, validate_sweep
from trainables.config import expand_path
from trainables.errors import ConfigError

RESOLVED_CONFIG = "qlora_sweep.yaml"  # the resolved config, inside every experiment folder
TUNER_FILE = "tuner.pkl"  # Tune writes it as a sweep starts: with it, a folder is an experiment
DRIVER_LOG = "driver.log"  # what Ray, Tune and Optuna said while the driver ran (search.sweep)
DRIVER_HEARTBEAT = "qlora_sweep_driver.json"  # the driver's pid, host and last sign of life
STATE_COPY = "qlora_sweep_state"  # qlora-sweep's own complete copy of Tune's state files
HEARTBEAT_S = 10  # how often a running driver says it is alive
HEARTBEAT_STALE_S = 60  # a driver on another machine silent this long is taken for dead


def is_uri(path: str) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local path."""
    return "://" in path


def experiment_path(sweep: SweepConfig) -> str:
    """Where this sweep's results live: storage/name (local paths expanded)."""
    if is_uri(sweep.storage):
        return sweep.storage.rstrip("/") + "/" + sweep.name
    return str(Path(expand_path(sweep.storage)).resolve() / sweep.name)


DEFAULT_STORAGE = SweepConfig.model_fields["storage"].default


def find_experiment(name_or_path: str, storage: str | None = None) -> str:
    """The experiment folder a user means: a name in `storage` (default: the configs' default
    storage), or a path to the folder. An unknown name is a ConfigError listing the names there."""
    if is_uri(name_or_path):
        return name_or_path
    root = Path(expand_path(storage or DEFAULT_STORAGE)).resolve()
    if is_experiment_name(name_or_path) and (root / name_or_path).is_dir():
        return str(root / name_or_path)
    as_path = Path(expand_path(name_or_path))
    if as_path.is_dir():
        return str(as_path.resolve())
    if not is_experiment_name(name_or_path):
        raise ConfigError(f"experiment folder {as_path.absolute()} does not exist")
    names = experiment_names(root)
    there = f"experiments there: {', '.join(names)}" if names else "there are none there yet"
    raise ConfigError(f"no experiment named {name_or_path!r} in {root} ({there}); give its name, "
                      "its folder, or --storage where it was written")


def experiment_names(root: Path) -> list[str]:
    """Experiment folders directly under a storage folder, by name."""
    if not root.is_dir():
        return []
    return sorted(folder.name for folder in root.iterdir()
                  if (folder / RESOLVED_CONFIG).is_file() or any(folder.glob("experiment_state-*.json")))


def refuse_existing_experiment(sweep: SweepConfig) -> None:
    path = experiment_path(sweep)
    if is_uri(path):
        return
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"experiment folder {path} is a file; give the sweep another name (--set name=...)")
    # A driver.log alone is what a run that failed before its first trial leaves: the name is still free.
    if Path(path).exists() and any(p.name != DRIVER_LOG for p in Path(path).iterdir()):
        raise ConfigError(f"experiment folder {path} already exists; continue it with --resume "
                          "(or `qlora-sweep resume`), or give the sweep a new name (--set name=...)")


def check_storage_writable(sweep: SweepConfig) -> None:
    """Refuse, before anything starts, a storage that cannot be written: one line naming the path
    and the reason. Writes and removes a probe file; folders it had to create are removed again
    (the sweep creates them when it starts)."""
    if is_uri(sweep.storage):
        _probe_uri(sweep.storage)
        return
    root = Path(expand_path(sweep.storage))
    missing = [folder for folder in (root, *root.parents) if not folder.exists()]
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".qlora-sweep-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"storage {sweep.storage}: cannot be written ({_why(exc, root)})") from None
    finally:
        for folder in missing:  # deepest first
            if folder.is_dir():
                folder.rmdir()


def _why(exc: OSError, root: Path) -> str:
    blocking = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None or exc.errno == errno.ENOTDIR:
        return f"{blocking or root} is not a directory"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def _probe_uri(uri: str) -> None:
    probe = f".qlora-sweep-probe-{uuid.uuid4().hex}"
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path}/{probe}") as stream:
            stream.write(b"")
        filesystem.delete_file(f"{path}/{probe}")
    except Exception as exc:  # pyarrow raises many types for a bucket it cannot reach or write
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage {uri}: cannot be written ({reason[:200]})") from None


def code_version() -> str:
    """'0.1.0 (abc1234)': the installed version, or the source tree's own where the code runs from a
    copy that was never installed (as on a GPU machine without a registry), and the git commit where
    the code sits in a clone."""
    try:
        package = version("qlora-sweep")
    except PackageNotFoundError:
        package = source_tree_version()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent)
    return f"{package} ({commit.stdout.strip()})" if commit.returncode == 0 else package


def source_tree_version() -> str:
    """pyproject.toml's version beside this package, marked as not installed; 'unknown' without one."""
    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as file:
            return f"{tomllib.load(file)['project']['version']} (not installed)"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def write_resolved_config(sweep: SweepConfig) -> None:
    header = (
        f"# Resolved config of sweep '{sweep.name}', written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"# qlora-sweep {code_version()}; command: {' '.join(sys.argv)}\n"
    )
    text = header + yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    write_atomically(experiment_path(sweep), RESOLVED_CONFIG, text.encode("utf-8"))


def read_resolved_config(folder: Path) -> SweepConfig | None:
    """The config a local experiment folder was started with, pointed at where the folder is now
    (it may have been copied or moved); None when the folder has none."""
    recorded = folder / RESOLVED_CONFIG
    if not recorded.is_file():
        return None
    values = yaml.safe_load(recorded.read_text(encoding="utf-8"))
    values.update(storage=str(folder.parent), name=folder.name)
    return validate_sweep(values, where=str(recorded))


def tune_experiment_folder(path: str) -> str:
    """The absolute local folder `best`, `report`, `export` and `predict` read, or a ConfigError saying why
    it cannot be read: checked here, before Ray loads, so that a wrong path answers at once."""
    if is_uri(path):
        raise ConfigError(
            f"{path}: best and report read a local folder; copy the experiment first "
            "(e.g. aws s3 sync / gsutil rsync) or read it on a node that mounts it"
        )
    folder = os.path.abspath(expand_path(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"experiment folder {folder} does not exist")
    if not any(Path(folder).glob("experiment_state-*.json")):
        raise ConfigError(
            f"{folder}: no experiment_state-*.json (not a Tune experiment folder, or the sweep has not "
            "recorded its first trial yet)"
        )
    return folder


def load_resolved_config(experiment: str) -> SweepConfig:
    """The config of a qlora-sweep experiment folder, or a ConfigError saying it is not one."""
    folder = Path(expand_path(experiment)).resolve()
    sweep = read_resolved_config(folder) if (folder / TUNER_FILE).is_file() else None
    if sweep is None:
        raise ConfigError(f"{folder}: not a qlora-sweep experiment folder (no {RESOLVED_CONFIG} or {TUNER_FILE})")
    return sweep


def write_atomically(experiment: str, relative: str, data: bytes) -> None:
    """A file in the experiment folder (local or URI), under a temporary name, then moved over:
    a reader never sees half of it."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(experiment)
    final = f"{root}/{relative}"
    filesystem.create_dir(final.rsplit("/", 1)[0], recursive=True)
    replace_file(filesystem, final, data)


def replace_file(filesystem: pyarrow.fs.FileSystem, path: str, data: bytes) -> None:
    """Write `path` beside itself, then move it over: a reader never sees half a file."""
    with filesystem.open_output_stream(path + ".partial") as stream:
        stream.write(data)
    filesystem.move(path + ".partial", path)


def write_driver_heartbeat(experiment: str, ended: bool = False, session_started: float | None = None) -> None:
    """`session_started`: when this driver's Tuner began (time.time()), before its first trial asked for a
    worker: where a fresh trial's wait for its worker shows (benchmarks/sweep_benchmark.py)."""
    beat = {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time(), "ended": ended,
            "session_started": session_started}
    write_atomically(experiment, DRIVER_HEARTBEAT, json.dumps(beat).encode("utf-8"))


def driver_is_gone(folder: Path) -> bool | None:
    """Whether the sweep's driver died without ending it; None when the folder has no heartbeat
    (a sweep from before it was kept, or a plain Tune folder)."""
    try:
        beat = json.loads((folder / DRIVER_HEARTBEAT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if beat.get("ended"):
        return False
    if beat.get("host") == socket.gethostname():
        return not _process_alive(int(beat["pid"]))
    return time.time() - float(beat["heartbeat"]) > HEARTBEAT_STALE_S


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed driver whose parent has not reaped it yet is a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
