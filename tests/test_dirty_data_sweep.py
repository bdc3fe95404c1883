"""A sweep over a file full of bad rows finishes, and with HF_TOKEN in its environment no file it
writes and no line it prints holds the token."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.dirty_data import write_dirty_data
from tests.helpers import ROOT, trial_dirs

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
