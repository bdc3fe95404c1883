"""A resume whose experiment folder holds a state file torn by a killed driver (Tune copies them
non-atomically in the background) mends it from the dead driver's staging copy, or, with that
machine gone, from the copy qlora-sweep keeps in the experiment folder; or it stops with one line
and changes nothing. And Tune never silently starts the sweep again in the same folder."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from search.experiment import STATE_COPY
from search.state_files import mend_torn_state_files, newest_state_files
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
    assert mend_torn_state_files(experiment) == []  # whole files: nothing to mend


def test_a_torn_state_file_is_replaced_with_the_whole_set_from_the_dead_drivers_staging_copy(torn_copy):
    copy, torn, state, temp_dir = torn_copy

    changes = mend_torn_state_files(copy, temp_dir)

    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == state
    assert len(changes) == 3 and f"{torn.name}: replaced by the dead driver's staging copy" in changes[0]
    assert "torn (JSONDecodeError" in next(c for c in changes if c.startswith(torn.name))
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
        mend_torn_state_files(copy, temp_dir)
    assert _files(copy) == before


def test_a_staging_folder_of_another_experiment_with_the_same_name_is_not_used(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    (temp_dir / "session_2026_1" / "artifacts" / "2026-11-28_04-00-00" / copy.name / "driver_artifacts"
     / "run_trial_0000_1_other").mkdir()
    shutil.rmtree(copy / STATE_COPY)

    with pytest.raises(ConfigError, match=f"{torn.name}: unreadable"):
        mend_torn_state_files(copy, temp_dir)


def test_with_the_staging_folder_gone_the_copy_kept_in_the_experiment_folder_mends_the_torn_file(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    shutil.rmtree(temp_dir)  # the dead driver's machine, and its staging folder, are gone
    current = json.loads((copy / STATE_COPY / "current.json").read_text())
    kept = copy / STATE_COPY / current["folder"]

    changes = mend_torn_state_files(copy, temp_dir)

    assert f"{torn.name}: replaced by qlora-sweep's own copy in {kept}" in changes[0]
    assert {p.name: p.read_bytes() for p in newest_state_files(copy)} == {
        p.name: p.read_bytes() for p in newest_state_files(kept)}
    assert mend_torn_state_files(copy, temp_dir) == []  # whole again


def test_a_kept_copy_that_does_not_match_its_checksums_is_not_used(torn_copy):
    copy, torn, _, temp_dir = torn_copy
    shutil.rmtree(temp_dir)
    current = json.loads((copy / STATE_COPY / "current.json").read_text())
    _tear(copy / STATE_COPY / current["folder"] / torn.name)
    before = _files(copy)

    with pytest.raises(ConfigError, match=f"{torn.name}: unreadable .*neither under .* nor in {STATE_COPY}/"):
        mend_torn_state_files(copy, temp_dir)
    assert _files(copy) == before


def test_a_sweep_torn_while_its_head_node_is_lost_resumes_from_the_kept_copy_and_runs_every_trial_once(
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

    resumed = subprocess.run([sys.executable, "-m", "search", "resume", str(experiment)], capture_output=True,
                             text=True, cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(new_machine)}, timeout=600)
    shutil.rmtree(new_machine, ignore_errors=True)

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{torn.name}: replaced by qlora-sweep's own copy" in resumed.stdout
    trials = trial_dirs(experiment)
    assert len(trials) == 2 and all([r["step"] for r in _rows(t)] == [4, 8] for t in trials)
    report = run_cli("report", experiment).stdout.splitlines()
    assert [line.split()[1] for line in report[2:]] == ["TERMINATED", "TERMINATED"], report


def _rows(trial):
    path = trial / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
