"""`run --verbose`: Ray's, Tune's and Optuna's own output on screen, beside the event lines. The same
sweep preloads the whole trial in Ray's idle workers (resources.preload_libraries: trial): one sweep
for both, since each costs CI a driver, a Ray and a fresh worker."""

import json

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import run_cli, trial_dirs

pytestmark = pytest.mark.sweep


def test_verbose_shows_tunes_own_output_and_writes_no_driver_log_and_a_preloading_sweep_begins_with_its_imports_done(
        tiny_model_path, tmp_path):
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", name="loud",
                             search={"num_trials": 1, "max_concurrent_trials": 1},
                             scheduler={"max_rungs": 1, "grace_period": 1}, resources={"preload_libraries": "trial"})
    done = run_cli("run", write_config(tmp_path / "s.yaml", config), "--verbose")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    both = done.stdout + done.stderr
    assert "Trial status" in both  # Tune's own table
    assert "(run_trial pid=" in both  # a line Ray forwarded from the trial's worker
    assert "] trial " in done.stdout and " started: " in done.stdout  # the event lines as well
    assert "Ray's own output" not in done.stdout
    # resources.ray_dashboard: false (the tiny sweeps'): a local Ray without its dashboard
    assert "Started a local Ray instance" in both and "View the dashboard" not in both
    assert not (tmp_path / "results" / "loud" / "driver.log").exists()

    assert ("Ray's idle workers import trainables.trial before a trial is theirs (resources.preload_libraries: trial)"
            in done.stdout)
    trials = trial_dirs(tmp_path / "results" / "loud")
    first = [json.loads((d / "result.json").read_text().splitlines()[0]) for d in trials]
    assert len(first) == 1 and not first[0]["warm_start"]  # in a fresh worker
    # which had imported the trial before it began: without preloading a fresh worker's imports take seconds
    # here (tests/test_sweep_end_to_end.py: over 0.5 s, 7-12 s on this machine)
    assert first[0]["startup_imports_s"] < 0.5, first
