"""`run --verbose`: Ray's, Tune's and Optuna's own output on screen, beside the event lines."""

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import run_cli

pytestmark = pytest.mark.sweep


def test_verbose_shows_tunes_own_output_and_writes_no_driver_log(tiny_model_path, tmp_path):
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", name="loud",
                             search={"num_trials": 1}, scheduler={"max_rungs": 1, "grace_period": 1})
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
