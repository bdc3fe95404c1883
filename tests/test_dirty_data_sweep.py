"""A sweep over a file full of bad rows finishes, and with HF_TOKEN in its environment no file it
writes and no line it prints holds the token."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.dirty_data import write_dirty_data
from tests.helpers import ROOT, short_ray_temp, trial_dirs

pytestmark = pytest.mark.sweep

SECRET = "hf_qlorasweepTestSecret0123456789"


def test_a_sweep_on_dirty_data_completes_and_never_writes_the_hf_token(tiny_model_path, tmp_path):
    data = write_dirty_data(tmp_path / "dirty")
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", name="dirty", data={"path": str(data)},
                             search={"num_trials": 1}, scheduler={"max_rungs": 1, "grace_period": 1})
    env = {**os.environ, "HF_TOKEN": SECRET, "HUGGING_FACE_HUB_TOKEN": SECRET}
    done = subprocess.run([sys.executable, "-m", "search", "run", str(write_config(tmp_path / "s.yaml", config))],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "bad rows dropped or truncated: train: 1 duplicate id" in done.stdout
    experiment = tmp_path / "results" / "dirty"
    assert len(trial_dirs(experiment)) == 1

    assert SECRET not in done.stdout + done.stderr
    # This sweep's own Ray session (Tune names its folder in the TensorBoard hint, in driver.log):
    # with tests running two at a time, /tmp/ray/session_latest may be another test's.
    driver_log = (experiment / "driver.log").read_text()
    session = re.search(r"(\S*/session_[^/\s]+)/", driver_log)
    assert session, driver_log[-2000:]
    ray_logs = Path(session.group(1)) / "logs"
    assert ray_logs.is_dir()
    written = [p for p in experiment.rglob("*") if p.is_file()]
    written += [p for p in ray_logs.rglob("*") if p.is_file()]
    assert len(written) > 20
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaks, leaks


def test_data_the_checks_refuse_stops_the_run_with_one_line_and_leaves_no_folder_and_no_ray(tiny_model_path,
                                                                                             tmp_path):
    """`run` checks the tokenizer and the data while Ray starts (search.checks.check_sweep_in_background):
    a sweep they refuse stops before any trial with their one line and exit code 2, its experiment
    folder and driver.log gone, and the Ray it had started shut down."""
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", name="refused", data={"summary_field": "abstract"})
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-m", "search", "run", str(write_config(tmp_path / "s.yaml", config))],
                              capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
        assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qlora-sweep: error: ")
        assert "missing field 'abstract'" in lines[0]
        assert "experiment folder" not in done.stdout
        assert any(ray_temp.iterdir())  # a Ray did start beside the checks
        assert not (tmp_path / "results").exists()
        deadline = time.monotonic() + 30
        while _ray_processes_under(ray_temp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_processes_under(ray_temp)


def _ray_processes_under(ray_temp: Path) -> list[str]:
    """Live processes of the Ray session kept in `ray_temp` (its agents linger a while: not counted)."""
    table = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout.splitlines()
    return [line for line in table if str(ray_temp) in line and not line.lstrip().startswith("Z")
            and "Agent" not in line and "agent" not in line]
