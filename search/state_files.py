"""Tune's experiment state in the experiment folder, checked (and mended) before a resume.

Tune writes its state (experiment_state-*.json, search_gen_state-*.json, searcher-state-*.pkl) into
a staging folder under the driver's Ray session directory, then copies that folder into the
experiment folder from a background thread, one plain, non-atomic copy per file. A driver killed
during a copy leaves a torn file behind. Tune's resume then fails to read it, logs the failure and
starts the experiment afresh in the same folder, beside the old trials. So before a resume every
state file is read the way Tune reads it; if one is torn, an intact copy of the whole set from one
save replaces it: the dead driver's staging copy, when that driver ran on this machine, else the
copy qlora-sweep keeps in the experiment folder itself (search.tuner.SweepKeeper), which survives a
lost head node. Otherwise the resume stops with an error that names the torn file, and nothing is
changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from search.experiment import STATE_COPY
from search.tuner import newest_state_files, ray_temp_dir, read_tune_state_file
from trainables.errors import ConfigError


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


def intact_kept_copy(experiment: Path, names: list[str]) -> Path | None:
    """qlora-sweep's own copy of Tune's state in the experiment folder, if it holds every file in
    `names` whole (the checksums it was written with) and readable."""
    try:
        current = json.loads((experiment / STATE_COPY / "current.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    folder = experiment / STATE_COPY / current["folder"]
    for name in names:
        path = folder / name
        if name not in current["files"] or not path.is_file():
            return None
        if hashlib.sha256(path.read_bytes()).hexdigest() != current["files"][name] or why_unreadable(path):
            return None
    return folder


def torn_state_files(experiment: Path) -> dict[Path, str]:
    """The state files a resume would read that Tune cannot read, with why; a torn tuner.pkl is an error."""
    tuner = experiment / "tuner.pkl"
    if tuner.is_file() and (why := why_unreadable(tuner)) is not None:
        # Written once, straight into the folder, as the sweep starts: no other copy exists.
        raise ConfigError(f"{tuner}: unreadable ({why}); the driver died while starting the sweep, before any "
                          "trial could be saved; start it again (--set name=... for a new folder)")
    return {path: why for path in newest_state_files(experiment) if (why := why_unreadable(path)) is not None}


def mend_torn_state_files(experiment: Path, temp_dir: Path | None = None) -> list[str]:
    """Check the state files a resume reads; replace a torn set from an intact copy of the same save.
    Returns one line per file replaced; raises ConfigError when a torn file cannot be mended."""
    torn = torn_state_files(experiment)
    if not torn:
        return []
    state_files = newest_state_files(experiment)
    names = [p.name for p in state_files]
    if temp_dir is None:
        temp_dir = ray_temp_dir()
    staging = intact_staging_copy(experiment, names, temp_dir)
    kept = None if staging else intact_kept_copy(experiment, names)
    if staging is None and kept is None:
        path, why = next(iter(torn.items()))
        raise ConfigError(f"{path}: unreadable ({why}); the driver was probably killed while saving it, and no "
                          f"intact copy of the experiment's state is left, neither under {temp_dir} nor in "
                          f"{STATE_COPY}/, so it cannot be resumed; nothing was changed")
    source = staging or kept
    described = (f"the dead driver's staging copy in {staging}" if staging
                 else f"qlora-sweep's own copy in {kept}")
    changes = []
    for path in state_files:
        partial = path.with_name(path.name + ".partial")
        shutil.copyfile(source / path.name, partial)
        os.replace(partial, path)  # never a half-written state file here either
        why = f"the copy here was torn ({torn[path]})" if path in torn else "to match the mended files"
        changes.append(f"{path.name}: replaced by {described}, {why}")
    return changes
