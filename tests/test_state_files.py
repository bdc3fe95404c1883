"""A resume whose experiment folder holds a state file torn by a killed driver, or a set of state
files from different saves (Tune copies them non-atomically, several at once, in the background),
mends the set from the dead driver's staging copy, or, with that machine gone, from the copy
qlora-sweep keeps in the experiment folder; or it stops with one line and changes nothing. And Tune
never silently starts the sweep again in the same folder."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from search.experiment import DRIVER_HEARTBEAT, STATE_COPY
from search.state_files import STATE_SET_ASIDE, mend_state_files, newest_state_files
from search.tuner import forget_deleted_checkpoints
from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import ROOT, process_tree, ray_processes_still_running, run_cli, trial_dirs
from trainables.errors import ConfigError

pytestmark = pytest.mark.sweep


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _tear(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


@pytest.fixture
def torn_copy(sweep, tmp_path):
    """A copy of a finished sweep whose newest experiment_state file was cut off mid-copy, and the
    intact originals as a dead driver's staging folder under a Ray temp dir of its own."""
    experiment, _ = sweep
    copy = shutil.copytree(experiment, tmp_path / "storage" / experiment.name)
    state = {p.name: p.read_bytes() for p in newest_state_files(copy)}
    staging = tmp_path / "ray" / "session_2026_1" / "artifacts" / "2026-11-28_04-00-00" / experiment.name / "driver_artifacts"
    staging.mkdir(parents=True)
    for name, data in state.items():
        (staging / name).write_bytes(data)
    for trial in copy.iterdir():
        if trial.is_dir():
            (staging / trial.name).mkdir()  # Tune stages each trial's folder too
    torn = next(p for p in newest_state_files(copy) if p.name.startswith("experiment_state-"))
    _tear(torn)
    return copy, torn, state, tmp_path / "ray"


def test_every_state_file_a_resume_reads_is_found_in_a_finished_sweep(sweep):
    experiment, _ = sweep
    kinds = sorted(p.name.split("-")[0] for p in newest_state_files(experiment))
    assert kinds == ["experiment_state", "search_gen_state", "searcher"]
    assert mend_state_files(experiment) == []  # whole files: nothing to mend


def test_a_torn_state_file_is_replaced_with_the_whole_set_from_the_dead_drivers_staging_copy(torn_copy):
    copy, torn, state, temp_dir = torn_copy

    changes = mend_state_files(copy, temp_dir)

    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == state
    assert changes[0].startswith(f"Tune's state files are not one whole save: {torn}: unreadable (JSONDecodeError")
    assert len(changes) == 4 and f"{torn.name}: replaced by the dead driver's staging copy" in changes[1]
    assert not list(copy.glob("*.partial"))


def test_a_torn_state_file_without_an_intact_copy_stops_the_resume_with_one_line_and_changes_nothing(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    shutil.rmtree(temp_dir)
    shutil.rmtree(copy / STATE_COPY)
    before = _files(copy)

    done = subprocess.run([sys.executable, "-m", "search", "resume", str(copy)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(temp_dir.parent / "no-ray")}, timeout=120)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(torn) in done.stderr and "cannot be resumed" in done.stderr
    assert _files(copy) == before
    assert not (temp_dir.parent / "no-ray").exists()  # no Ray was started


def test_tune_failing_to_restore_stops_instead_of_starting_the_sweep_again(torn_copy):
    copy, _, _, _ = torn_copy
    # Past the check above, straight to Tune: its own restore fails on the torn file.
    script = (
        "import ray, sys\n"
        "from search.experiment import load_resolved_config\n"
        "from search.packing import TrialPlanner\n"
        "from search.tuner import restore_tuner\n"
        "from trainables.errors import ConfigError\n"
        "ray.init(num_cpus=1, include_dashboard=False)\n"
        f"sweep = load_resolved_config({str(copy)!r})\n"
        "try:\n"
        "    restore_tuner(sweep, TrialPlanner.for_cluster(sweep, None)).fit()\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc); sys.exit(3)\n"
    )
    trials_before = sorted(p.name for p in copy.iterdir() if p.is_dir())

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)

    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "refused: Tune could not restore the experiment's state (JSONDecodeError" in done.stdout
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == trials_before


def test_the_refusal_is_a_config_error_the_cli_prints_as_one_line():
    import logging

    from search.tuner import RefuseFreshStartOnResume

    record = logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, __file__, 1,
                               "Failed to restore the run state.", None, (ValueError, ValueError("torn"), None))
    with pytest.raises(ConfigError, match="ValueError: torn"):
        RefuseFreshStartOnResume().filter(record)
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "Restarting experiment.", None, None)
    assert RefuseFreshStartOnResume().filter(other) is True


def test_a_torn_tuner_file_says_the_sweep_died_starting_and_changes_nothing(torn_copy):
    copy, _, _, temp_dir = torn_copy
    _tear(copy / "tuner.pkl")
    before = _files(copy)

    with pytest.raises(ConfigError, match="tuner.pkl: unreadable .*died while starting the sweep"):
        mend_state_files(copy, temp_dir)
    assert _files(copy) == before


def test_a_staging_folder_of_another_experiment_with_the_same_name_is_not_used(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    (temp_dir / "session_2026_1" / "artifacts" / "2026-11-28_04-00-00" / copy.name / "driver_artifacts"
     / "run_trial_0000_1_other").mkdir()
    shutil.rmtree(copy / STATE_COPY)

    with pytest.raises(ConfigError, match=f"{torn.name}: unreadable"):
        mend_state_files(copy, temp_dir)


def test_with_the_staging_folder_gone_the_copy_kept_in_the_experiment_folder_mends_the_torn_file(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    shutil.rmtree(temp_dir)  # the dead driver's machine, and its staging folder, are gone
    current = json.loads((copy / STATE_COPY / "current.json").read_text())
    kept = copy / STATE_COPY / current["folder"]

    changes = mend_state_files(copy, temp_dir)

    assert f"{torn.name}: replaced by qlora-sweep's own copy in {kept}" in changes[1]
    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == {
        p.name: p.read_bytes() for p in newest_state_files(kept)}
    assert mend_state_files(copy, temp_dir) == []  # whole again


def test_a_kept_copy_that_does_not_match_its_checksums_is_not_used(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    shutil.rmtree(temp_dir)
    current = json.loads((copy / STATE_COPY / "current.json").read_text())
    _tear(copy / STATE_COPY / current["folder"] / torn.name)
    before = _files(copy)

    with pytest.raises(ConfigError, match=f"{torn.name}: unreadable .*neither under .* nor in {STATE_COPY}/"):
        mend_state_files(copy, temp_dir)
    assert _files(copy) == before


def _newest(folder, kind):
    return next(p for p in newest_state_files(folder) if p.name.startswith(kind))


def _list_one_trial_fewer(path, name=None):
    """The experiment state as the save before the last trial was made wrote it (Tune's JSON, its
    cloudpickled values left as they are)."""
    state = json.loads(path.read_text())
    state["trial_data"] = state["trial_data"][:-1]
    (path.with_name(name) if name else path).write_text(json.dumps(state))


@pytest.fixture
def mixed_copy(torn_copy):
    """The finished sweep's copy whose experiment state is one save older than its searcher's files:
    what a driver killed while Tune copied the set leaves (the searcher counts a trial the
    experiment state never listed, and the resume would never run it)."""
    copy, torn, state, temp_dir = torn_copy
    torn.write_bytes(state[torn.name])  # whole again: this folder's only fault is the mix
    _list_one_trial_fewer(torn)
    return copy, torn, state, temp_dir


def test_state_files_from_different_saves_are_replaced_by_one_whole_save(mixed_copy):
    copy, experiment_state, state, temp_dir = mixed_copy
    searcher = _newest(copy, "search_gen_state-")

    changes = mend_state_files(copy, temp_dir)

    assert changes[0] == (f"Tune's state files are not one whole save: {experiment_state.name} lists 5 trials, but "
                          f"{searcher.name} says the searcher made 6: the two files are from different saves")
    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == state
    assert mend_state_files(copy, temp_dir) == []


def test_a_searcher_that_was_told_of_other_trials_is_from_another_save(mixed_copy):
    import pickle

    copy, experiment_state, state, temp_dir = mixed_copy
    experiment_state.write_bytes(state[experiment_state.name])
    optuna = _newest(copy, "searcher-state-")
    saved = pickle.loads(optuna.read_bytes())
    saved["_ot_trials"].popitem()  # as Optuna's state one trial earlier
    optuna.write_bytes(pickle.dumps(saved))
    shutil.rmtree(temp_dir)

    changes = mend_state_files(copy, temp_dir)

    assert f"but {optuna.name} knows 5, 5 of them the same" in changes[0]
    assert f"{optuna.name}: replaced by qlora-sweep's own copy" in changes[3]
    current = json.loads((copy / STATE_COPY / "current.json").read_text())
    assert optuna.read_bytes() == (copy / STATE_COPY / current["folder"] / optuna.name).read_bytes()


def test_a_missing_searcher_file_is_a_set_tune_would_resume_with_a_searcher_started_over(mixed_copy):
    copy, experiment_state, state, temp_dir = mixed_copy
    experiment_state.write_bytes(state[experiment_state.name])
    searcher = _newest(copy, "search_gen_state-")
    searcher.unlink()

    changes = mend_state_files(copy, temp_dir)

    assert "lists 6 trials, but the folder has no search_gen_state-*" in changes[0]
    assert searcher.read_bytes() == state[searcher.name]


def test_a_state_from_before_the_first_trial_needs_no_searcher_file_but_one_that_made_trials_does(mixed_copy):
    from search.state_files import state_problem

    copy, experiment_state, _, _ = mixed_copy
    state = json.loads(experiment_state.read_text())
    experiment_state.write_text(json.dumps({**state, "trial_data": []}))
    searcher = _newest(copy, "search_gen_state-")

    assert state_problem(copy) == (f"{experiment_state.name} lists 0 trials, but {searcher.name} says the searcher "
                                   "made 6: the two files are from different saves")
    searcher.unlink()
    assert state_problem(copy) is None  # a searcher started over makes the same first trials


def test_a_mixed_set_without_an_intact_copy_stops_with_one_line_and_changes_nothing(mixed_copy):
    copy, experiment_state, _, temp_dir = mixed_copy
    shutil.rmtree(temp_dir)
    shutil.rmtree(copy / STATE_COPY)
    before = _files(copy)

    with pytest.raises(ConfigError, match=f"{experiment_state.name} lists 5 trials, .*different saves; .*"
                                          "cannot be resumed; nothing was changed"):
        mend_state_files(copy, temp_dir)
    assert _files(copy) == before


def test_a_state_file_newer_than_the_intact_copy_is_set_aside_so_that_tune_resumes_from_the_copy(mixed_copy):
    copy, experiment_state, state, temp_dir = mixed_copy
    experiment_state.write_bytes(state[experiment_state.name])
    shutil.rmtree(temp_dir)
    # A resumed driver that died before its first whole save was copied: its experiment state, alone.
    newer = "experiment_state-2099-01-01_00-00-00.json"
    _list_one_trial_fewer(experiment_state, newer)
    written = (copy / newer).read_bytes()

    changes = mend_state_files(copy, temp_dir)

    assert f"{newer}: set aside in {STATE_SET_ASIDE}/, newer than the intact copy" in changes
    assert (copy / STATE_SET_ASIDE / newer).read_bytes() == written and not (copy / newer).exists()
    current = json.loads((copy / STATE_COPY / "current.json").read_text())  # the last save before the sweep's final one
    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == {
        p.name: p.read_bytes() for p in newest_state_files(copy / STATE_COPY / current["folder"])}


def test_a_resume_of_a_mixed_set_mends_it_and_finds_every_trial(mixed_copy, sweep):
    copy, experiment_state, _, _ = mixed_copy
    original = _kept_by_the_driver(sweep[0])

    resumed = subprocess.run([sys.executable, "-m", "search", "resume", str(copy)], capture_output=True, text=True,
                             cwd=ROOT, timeout=600)

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _kept_by_the_driver(sweep[0]) == original  # the copy's driver wrote none of its own where the copy came from
    assert f"{experiment_state.name} lists 5 trials, but" in resumed.stdout
    report = run_cli("report", copy).stdout.splitlines()
    statuses = [line.split()[1] for line in report[2:] if line.strip()]
    assert len(statuses) == 6 and set(statuses) <= {"TERMINATED", "STOPPED_EARLY"}, report


@pytest.fixture
def deleted_checkpoint_copy(sweep, tmp_path):
    """A copy of the finished sweep as a driver killed mid-sweep can leave it: a trial still running
    in the saved state, whose newest checkpoint Tune had deleted after registering a newer one (the
    newer one gone too here, so that the trial has rungs left to run)."""
    experiment, _ = sweep
    copy = shutil.copytree(experiment, tmp_path / "storage" / experiment.name)
    state_file = _newest(copy, "experiment_state-")
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        folder = next(p for p in copy.iterdir() if p.is_dir() and f"_{trial['trial_id']}_" in p.name)
        checkpoints = sorted(folder.glob("checkpoint_*"))
        if len(checkpoints) >= 2:
            break
    trial["status"] = "RUNNING"
    entry[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    last_rung = _rung(checkpoints[-1])
    shutil.rmtree(checkpoints[-1])
    return copy, trial["trial_id"], folder, checkpoints, last_rung


def test_a_trial_whose_newest_checkpoint_was_deleted_resumes_from_its_newest_one_on_disk(deleted_checkpoint_copy):
    copy, trial_id, _, checkpoints, _ = deleted_checkpoint_copy

    changes = forget_deleted_checkpoints(copy)

    assert len(changes) == 1 and changes[0].startswith(
        f"trial {trial_id}: its newest checkpoint, {checkpoints[-1].name}, is gone (Tune deleted it")
    assert changes[0].endswith(f"it resumes from {checkpoints[-2].name}, at rung {_rung(checkpoints[-2])}")
    assert mend_state_files(copy) == [] and forget_deleted_checkpoints(copy) == []  # one save still, and mended


def test_a_trial_with_no_checkpoint_left_starts_again(deleted_checkpoint_copy):
    copy, trial_id, _, checkpoints, _ = deleted_checkpoint_copy
    for checkpoint in checkpoints[:-1]:
        shutil.rmtree(checkpoint)

    changes = forget_deleted_checkpoints(copy)

    assert changes == [f"trial {trial_id}: its newest checkpoint, {checkpoints[-1].name}, is gone (Tune deleted it after "
                       "registering a newer one that the killed driver never saved); it starts again from its first step"]


def test_a_resume_runs_a_trial_whose_newest_checkpoint_was_deleted_to_its_end(deleted_checkpoint_copy):
    copy, trial_id, folder, checkpoints, last_rung = deleted_checkpoint_copy

    resumed = subprocess.run([sys.executable, "-m", "search", "resume", str(copy)], capture_output=True, text=True,
                             cwd=ROOT, timeout=600)

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"trial {trial_id}: its newest checkpoint, {checkpoints[-1].name}, is gone" in resumed.stdout
    report = run_cli("report", copy).stdout.splitlines()
    row = next(line for line in report if line.split()[:1] == [trial_id])
    assert row.split()[1] == "TERMINATED", report  # not ERROR: restored from the checkpoint left
    rungs = [r["rung"] for r in _rows(folder)]
    # The rung lost with the checkpoint ran again, once. Where the trial stopped early at that rung,
    # ASHA now judges it among every trial's results at the rung, not the few in before it the first
    # time, and may let it go on: the rungs then run on from it, each once.
    assert rungs == list(range(1, len(rungs) + 1)) and rungs[-1] >= last_rung, (rungs, last_rung)
    assert (folder / "result.superseded.json").is_file()


def _rung(checkpoint):
    return max(json.loads(line)["rung"] for line in (checkpoint / "qlora_sweep_rungs.jsonl").read_text().splitlines()
               if line.strip())


def test_a_sweep_torn_while_its_head_node_is_lost_resumes_elsewhere_from_the_kept_copy_and_runs_every_trial_once(
        tiny_model_path, tmp_path):
    config = tiny_sweep_dict(
        tiny_model_path, tmp_path / "results", name="lost-head",
        training={"steps_per_rung": 4, "micro_batch_size": 2, "gradient_checkpointing": False},
        search={"num_trials": 2, "max_concurrent_trials": 1},
        scheduler={"metric": "eval_loss", "max_rungs": 2, "grace_period": 2},  # no early stop: both run 2 rungs
    )
    experiment = tmp_path / "results" / "lost-head"
    # Ray's socket paths must stay short (AF_UNIX): its folders go under /tmp, not the test's.
    dead_machine = Path(tempfile.mkdtemp(prefix="qs-lost-head-"))
    new_machine = Path(tempfile.mkdtemp(prefix="qs-new-head-"))
    driver = subprocess.Popen([sys.executable, "-m", "search", "run", str(write_config(tmp_path / "s.yaml", config))],
                              cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(dead_machine)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if (experiment / STATE_COPY / "current.json").is_file() and any(_rows(t) for t in trial_dirs(experiment)):
            break
        time.sleep(0.1)
    assert driver.poll() is None, "the sweep ended before it could be interrupted"
    ray_processes = process_tree(driver.pid)
    driver.kill()
    driver.wait(timeout=60)
    for _ in range(120):
        if ray_processes_still_running(ray_processes) == 0:
            break
        time.sleep(0.5)
    torn = next(p for p in newest_state_files(experiment) if p.name.startswith("experiment_state-"))
    _tear(torn)
    shutil.rmtree(dead_machine)
    # The new machine mounts the storage elsewhere.
    moved = shutil.move(experiment, tmp_path / "new-mount" / "lost-head")

    resumed = subprocess.run([sys.executable, "-m", "search", "resume", str(moved)], capture_output=True,
                             text=True, cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(new_machine)}, timeout=600)
    shutil.rmtree(new_machine, ignore_errors=True)

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{torn.name}: replaced by qlora-sweep's own copy" in resumed.stdout
    assert f"trials made from now on go to {moved}, where the experiment is now" in resumed.stdout
    trials = trial_dirs(moved)
    assert len(trials) == 2 and all([r["step"] for r in _rows(t)] == [4, 8] for t in trials)
    assert all(len(list(t.glob("checkpoint_*"))) == 2 for t in trials)  # the trial made after the resume's too
    assert not experiment.exists()  # nothing went to where the folder was: no checkpoint, heartbeat or state copy
    report = run_cli("report", moved).stdout.splitlines()
    assert [line.split()[1] for line in report[2:]] == ["TERMINATED", "TERMINATED"], report


def _kept_by_the_driver(folder):
    """The files a driver keeps in its experiment folder: the heartbeat and the copy of Tune's state."""
    files = [folder / DRIVER_HEARTBEAT, *(folder / STATE_COPY).rglob("*")]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}


def _rows(trial):
    path = trial / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
