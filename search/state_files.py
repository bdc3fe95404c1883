"""Tune's experiment state in the experiment folder, checked (and mended) before a resume.

Tune writes its state (experiment_state-*.json, search_gen_state-*.json, searcher-state-*.pkl) into
a staging folder under the driver's Ray session directory, then copies that folder into the
experiment folder from a background thread, one plain, non-atomic copy per file. A driver killed
during a copy leaves a torn file behind. Tune's resume then fails to read it, logs the failure and
starts the experiment afresh in the same folder, beside the old trials. So before a resume every
state file is read the way Tune reads it; if one is torn, the dead driver's staging copy of the
whole set (complete, and from the same save) replaces it, when that driver ran on this machine.
Otherwise the resume stops with an error that names the torn file, and nothing is changed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from search.tuner import ray_temp_dir, read_tune_state_file
from trainables.errors import ConfigError

TUNE_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def newest_state_files(folder: Path) -> list[Path]:
    """Per kind, the file Tune resumes from: the greatest name (names end in the session's start time)."""
    newest = []
    for pattern in TUNE_STATE_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            newest.append(found[-1])
    return newest


def why_unreadable(path: Path) -> str | None:
    """None if Tune can read the file; else the error reading it gives."""
    try:
        read_tune_state_file(path)
    except ConfigError:
        raise  # not the file: the installed Ray is not the one this reader was written for
    except Exception as exc:  # any failure to load is what makes Tune's resume start afresh
        return f"{type(exc).__name__}: {exc}"
    return None


def intact_staging_copy(experiment: Path, names: list[str], temp_dir: Path) -> Path | None:
    """The newest staging folder of a driver that ran this experiment and holds every file in
    `names`, all readable. The names carry the driver session's start time, and the staging
    folder's trial folders (named by random trial ids) must all be this experiment's."""
    candidates = sorted(temp_dir.glob(f"session_*/artifacts/*/{experiment.name}/driver_artifacts"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for staging in candidates:
        same_trials = all((experiment / d.name).is_dir() for d in staging.iterdir() if d.is_dir())
        if same_trials and all((staging / n).is_file() and why_unreadable(staging / n) is None for n in names):
            return staging
    return None


def mend_torn_state_files(experiment: Path, temp_dir: Path | None = None) -> list[str]:
    """Check the state files a resume reads; replace a torn set from the dead driver's staging copy.
    Returns one line per file replaced; raises ConfigError when a torn file cannot be mended."""
    tuner = experiment / "tuner.pkl"
    if tuner.is_file() and (why := why_unreadable(tuner)) is not None:
        # Written once, straight into the folder, as the sweep starts: no other copy exists.
        raise ConfigError(f"{tuner}: unreadable ({why}); the driver died while starting the sweep, before any "
                          "trial could be saved; start it again (--set name=... for a new folder)")
    state_files = newest_state_files(experiment)
    torn = {path: why for path in state_files if (why := why_unreadable(path)) is not None}
    if not torn:
        return []
    if temp_dir is None:
        temp_dir = ray_temp_dir()
    staging = intact_staging_copy(experiment, [p.name for p in state_files], temp_dir)
    if staging is None:
        path, why = next(iter(torn.items()))
        raise ConfigError(f"{path}: unreadable ({why}); the driver was probably killed while saving it, and no "
                          f"intact copy of the experiment's state is left under {temp_dir}, so it cannot be "
                          "resumed; nothing was changed")
    changes = []
    for path in state_files:
        partial = path.with_name(path.name + ".partial")
        shutil.copyfile(staging / path.name, partial)
        os.replace(partial, path)  # never a half-written state file here either
        why = f"the copy here was torn ({torn[path]})" if path in torn else "to match the mended files"
        changes.append(f"{path.name}: replaced by the dead driver's staging copy in {staging}, {why}")
    return changes
