"""A sweep whose trials all crash: `run` says so and exits non-zero, `report` lists the failures
and `best` explains that nothing was scored."""

import shutil

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import run_cli

pytestmark = pytest.mark.sweep


def test_report_and_best_on_a_failed_experiment(tiny_model_path, tmp_path):
    broken = shutil.copytree(tiny_model_path, tmp_path / "broken-model")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")  # tokenizer loads, weights don't
    # One trial: a second would cost CI another fresh worker's imports and show nothing more
    config = tiny_sweep_dict(broken, tmp_path / "results", name="failing", trial_retries=0,
                             search={"num_trials": 1})
    done = run_cli("run", write_config(tmp_path / "s.yaml", config))
    assert done.returncode == 1, done.stdout[-2000:]
    failures = [line for line in done.stdout.splitlines() if " failed at rung 1: " in line]
    assert len(failures) == 1 and all("(the whole error: " in line and "error.txt)" in line for line in failures)
    assert "no best trial" in done.stdout

    experiment = tmp_path / "results" / "failing"
    report = run_cli("report", experiment)
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("ERROR") == 1

    best = run_cli("best", experiment)
    assert best.returncode == 2
    assert "no trial has reported rougeL yet" in best.stderr
