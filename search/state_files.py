"""Tune's experiment state in the experiment folder, checked (and mended) before a resume.

Tune writes its state (experiment_state-*.json, search_gen_state-*.json, searcher-state-*.pkl) into
a staging folder under the driver's Ray session directory, then copies that folder into the
experiment folder from a background thread: plain, non-atomic copies, several files at once, while
the next save may already be rewriting the staging folder. A driver killed meanwhile leaves a file
torn, or a set whose files come from different saves. Tune's resume reads either without a word of
warning that matters: a torn file makes it start the experiment afresh beside the old trials; a
mixed set loses a trial (the searcher counts one the experiment state never listed), makes one
more than num_trials, or stops the sweep with a KeyError when a trial reports that Optuna was
never told of. So before a resume every state file is read the way Tune reads it, and the set is
checked to be one save's (the trials the experiment state lists are the trials the searcher made
and Optuna knows). If it is not, an intact copy of one whole save replaces it: the dead driver's
staging copy, when that driver ran on this machine, else the copy qlora-sweep keeps in the
experiment folder itself (search.tuner.SweepKeeper), which survives a lost head node. Otherwise
the resume stops with an error that names the problem, and nothing is changed.

A whole save can still name a checkpoint that is gone: Tune deletes a trial's older checkpoints as
it registers a newer one, before it saves its state again. Such a trial is pointed at its newest
checkpoint still on disk (search.tuner.forget_deleted_checkpoints), rather than failing every retry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from search.experiment import STATE_COPY
from search.tuner import TUNE_STATE_PATTERNS, newest_state_files, ray_temp_dir, read_saved_trials, read_tune_state_file
from trainables.errors import ConfigError

STATE_SET_ASIDE = "qlora_sweep_state_set_aside"  # state files a mend put out of Tune's way, kept


def why_unreadable(path: Path) -> str | None:
    """None if Tune can read the file; else the error reading it gives."""
    try:
        read_tune_state_file(path)
    except ConfigError:
        raise  # not the file: the installed Ray is not the one this reader was written for
    except Exception as exc:  # any failure to load is what makes Tune's resume start afresh
        return f"{type(exc).__name__}: {exc}"
    return None


def why_not_one_save(files: list[Path]) -> str | None:
    """None if readable state files agree on the trials, as one save's always do; else how they disagree."""
    saved = read_saved_trials(files)
    if not saved.listed and not saved.made:
        return None  # no trial made yet: a searcher started over makes the same ones
    named = {pattern.split("-")[0]: next((f.name for f in files if f.match(pattern)), None)
             for pattern in TUNE_STATE_PATTERNS}
    if saved.listed is None:
        return (f"the folder has no experiment_state-*, but {named['search_gen_state']} says the searcher made "
                f"{saved.made} trials: Tune would not know them")
    experiment = named["experiment_state"]
    listed = f"{experiment} lists {len(saved.listed)} trial{'s' if len(saved.listed) != 1 else ''}"
    for kind in ("search_gen_state", "searcher"):
        if named[kind] is None:
            return f"{listed}, but the folder has no {kind}-*: Tune's searcher would start over"
    if saved.made != len(saved.listed):
        return (f"{listed}, but {named['search_gen_state']} says the searcher made {saved.made}: "
                "the two files are from different saves")
    if saved.told is not None and saved.told != saved.listed:
        return (f"{listed}, but {named['searcher']} knows {len(saved.told)}, "
                f"{len(saved.told & saved.listed)} of them the same: the two files are from different saves")
    return None


def state_problem(experiment: Path) -> str | None:
    """What would make Tune's resume go wrong in the state files it reads, or None. A torn
    tuner.pkl is an error: written once, straight into the folder, as the sweep starts, it has no other copy."""
    tuner = experiment / "tuner.pkl"
    if tuner.is_file() and (why := why_unreadable(tuner)) is not None:
        raise ConfigError(f"{tuner}: unreadable ({why}); the driver died while starting the sweep, before any "
                          "trial could be saved; start it again (--set name=... for a new folder)")
    files = newest_state_files(experiment)
    for path in files:
        if (why := why_unreadable(path)) is not None:
            return f"{path}: unreadable ({why})"
    return why_not_one_save(files)


def _whole_save(folder: Path) -> bool:
    """A file of every kind, each readable, all from one save."""
    files = newest_state_files(folder)
    return (len(files) == len(TUNE_STATE_PATTERNS) and all(why_unreadable(f) is None for f in files)
            and why_not_one_save(files) is None)


def intact_staging_copy(experiment: Path, temp_dir: Path) -> Path | None:
    """The newest staging folder of a driver that ran this experiment, if it holds one whole save.
    The staging folder's trial folders (named by random trial ids) must all be this experiment's."""
    candidates = sorted(temp_dir.glob(f"session_*/artifacts/*/{experiment.name}/driver_artifacts"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for staging in candidates:
        if all((experiment / d.name).is_dir() for d in staging.iterdir() if d.is_dir()):
            return staging if _whole_save(staging) else None  # an older session's save would be older still
    return None


def intact_kept_copy(experiment: Path) -> Path | None:
    """qlora-sweep's own copy of Tune's state in the experiment folder, if every file in it is whole
    (the checksums it was written with) and they are one save's."""
    try:
        current = json.loads((experiment / STATE_COPY / "current.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    folder = experiment / STATE_COPY / current["folder"]
    for name, checksum in current["files"].items():
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != checksum:
            return None
    return folder if _whole_save(folder) else None


def mend_state_files(experiment: Path, temp_dir: Path | None = None) -> list[str]:
    """Check the state files a resume reads; replace a torn or mixed set with an intact copy of one save.
    Returns what was wrong, then one line per file replaced or set aside; raises ConfigError when the set cannot be mended."""
    problem = state_problem(experiment)
    if problem is None:
        return []
    if temp_dir is None:
        temp_dir = ray_temp_dir()
    staging = intact_staging_copy(experiment, temp_dir)
    source = staging or intact_kept_copy(experiment)
    if source is None:
        raise ConfigError(f"{problem}; the driver was probably killed while saving Tune's state, and no intact "
                          f"copy of it is left, neither under {temp_dir} nor in {STATE_COPY}/, so it cannot be "
                          "resumed; nothing was changed")
    described = (f"the dead driver's staging copy in {staging}" if staging
                 else f"qlora-sweep's own copy in {source}")
    changes = [f"Tune's state files are not one whole save: {problem}"]
    for pattern, copy in zip(TUNE_STATE_PATTERNS, newest_state_files(source)):
        for newer in sorted(p for p in experiment.glob(pattern) if p.name > copy.name):
            # Tune resumes from the greatest name of each kind: one newer than the copy's goes aside.
            (experiment / STATE_SET_ASIDE).mkdir(exist_ok=True)
            os.replace(newer, experiment / STATE_SET_ASIDE / newer.name)
            changes.append(f"{newer.name}: set aside in {STATE_SET_ASIDE}/, newer than the intact copy")
        target = experiment / copy.name
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(copy, partial)
        os.replace(partial, target)  # never a half-written state file here either
        changes.append(f"{copy.name}: replaced by {described}")
    if (left := state_problem(experiment)) is not None:
        raise ConfigError(f"the state files were mended from {source}, yet {left}; please report this")
    return changes

