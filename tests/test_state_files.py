"""A resume whose experiment folder holds a state file torn by a killed driver (Tune copies them
non-atomically in the background) mends it from the dead driver's staging copy, or stops with one
line and changes nothing; and Tune never silently starts the sweep again in the same folder."""

import os
import shutil
import subprocess
import sys

import pytest

from search.state_files import mend_torn_state_files, newest_state_files
from tests.helpers import ROOT
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

    with pytest.raises(ConfigError, match=f"{torn.name}: unreadable"):
        mend_torn_state_files(copy, temp_dir)
