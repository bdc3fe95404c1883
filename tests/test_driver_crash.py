"""A sweep whose driver is killed (kill -9) continues with `qlora-sweep resume`: finished trials
stay finished, a trial with a checkpoint continues from it, the sweep ends with exactly the
configured number of distinct trials, and ASHA still knows the results from before the crash."""

import csv
import json
import pickle
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import ROOT, process_tree, ray_processes_still_running, run_cli, trial_dirs

pytestmark = pytest.mark.sweep

NUM_TRIALS = 3  # one finishes, one is killed midway, one has not started or just has
STEPS_PER_RUNG = 6
MAX_RUNGS = 3


def _rows(trial):
    text = (trial / "result.json").read_text() if (trial / "result.json").exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _trial_id(trial) -> str:
    return trial.name.split("_")[2]  # run_trial_<id>_<n>_<params>


def _tune_status(experiment, session=-1) -> dict[str, str]:
    """Trial id -> status in a driver session's saved Tune state ({} while it is being copied)."""
    files = sorted(experiment.glob("experiment_state-*.json"))
    try:
        state = json.loads(files[session].read_text())
    except (IndexError, ValueError):
        return {}
    return {json.loads(trial)["trial_id"]: json.loads(trial)["status"] for trial, _ in state["trial_data"]}


def test_a_killed_driver_resumes_with_trials_checkpoints_and_asha_state(tiny_model_path, tmp_path):
    config = tiny_sweep_dict(
        tiny_model_path, tmp_path / "results", name="crash",
        training={"steps_per_rung": STEPS_PER_RUNG, "micro_batch_size": 2, "gradient_checkpointing": False},
        search={"num_trials": NUM_TRIALS, "max_concurrent_trials": 2},
        scheduler={"metric": "eval_loss", "max_rungs": MAX_RUNGS, "grace_period": 1},
    )
    config_path = write_config(tmp_path / "s.yaml", config)
    experiment = tmp_path / "results" / "crash"
    driver = subprocess.Popen([sys.executable, "-m", "search", "run", str(config_path)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid_trial, deadline = None, time.time() + 300
    while mid_trial is None and time.time() < deadline and driver.poll() is None:
        dirs, status = (trial_dirs(experiment), _tune_status(experiment)) if experiment.exists() else ([], {})
        done_trials = [d for d in dirs if status.get(_trial_id(d)) == "TERMINATED"]
        midway = [d for d in dirs if status.get(_trial_id(d)) == "RUNNING" and 1 <= len(_rows(d)) < MAX_RUNGS]
        if done_trials and midway:
            mid_trial = midway[0].name
            ray_processes = process_tree(driver.pid)
            driver.send_signal(signal.SIGKILL)
        time.sleep(0.05)
    driver.wait(timeout=60)
    assert mid_trial is not None, "the sweep finished before it could be interrupted"
    before = {d.name: len(_rows(d)) for d in trial_dirs(experiment)}
    killed_pid = _rows(experiment / mid_trial)[-1]["pid"]  # the process the dead driver's sweep ran it in
    for _ in range(120):  # Ray tears its local cluster down once it notices the driver is gone
        if ray_processes_still_running(ray_processes) == 0:
            break
        time.sleep(0.5)

    # `report` tells the trials left unfinished from ones waiting to run, and says how to go on.
    interrupted = run_cli("report", experiment)
    assert interrupted.returncode == 0, interrupted.stderr
    assert "INTERRUPTED" in interrupted.stdout and "PENDING" not in interrupted.stdout
    assert interrupted.stdout.strip().splitlines()[-1] == (
        f"the sweep's driver died before the sweep ended; continue it with: qlora-sweep resume {experiment}")

    # A plain `run` into the same folder is refused; `run --resume` or `resume` continues it.
    refused = run_cli("run", config_path)
    assert refused.returncode == 2 and "continue it with --resume" in refused.stderr
    resumed = run_cli("resume", experiment)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{NUM_TRIALS} trials, 2 at a time (as the interrupted sweep ran them)" in resumed.stdout
    starts = [line for line in resumed.stdout.splitlines() if " started: " in line or " continues after rung " in line]
    assert any(" continues after rung " in line for line in starts)  # an interrupted trial, from its checkpoint
    assert all("lora_r=" in line and "learning_rate=" in line for line in starts)  # with its searched values

    # What the dead driver's Tune had saved (the state the resume started from). A trial whose last
    # row was written but whose end Tune had not yet saved runs its last rung again, rightly.
    recorded = _tune_status(experiment, session=0)
    assert "TERMINATED" in recorded.values()
    dirs = trial_dirs(experiment)
    assert len(dirs) == NUM_TRIALS
    configs = {tuple(sorted(json.loads((d / "params.json").read_text()).items())) for d in dirs}
    assert len(configs) == NUM_TRIALS
    for d in dirs:
        rows = _rows(d)
        assert [r["step"] for r in rows] == [STEPS_PER_RUNG * (i + 1) for i in range(len(rows))], d.name
        if recorded.get(_trial_id(d)) == "TERMINATED":
            assert len({r["pid"] for r in rows}) == 1, d.name  # finished before the crash: not run again
    # The trial killed mid-run was not finished in the saved state (it was running when the driver
    # died), so the resumed sweep ran it on, in a new process: its next rung, or the rung it was
    # in again if Tune had not yet saved that rung's checkpoint.
    assert recorded[_trial_id(experiment / mid_trial)] != "TERMINATED"
    continued = _rows(next(d for d in dirs if d.name == mid_trial))
    assert continued[-1]["pid"] != killed_pid and len(continued) >= before[mid_trial]

    # progress.csv holds every rung, not only those reported after the resume.
    for d in dirs:
        with open(d / "progress.csv", newline="") as f:
            assert [int(row["step"]) for row in csv.DictReader(f)] == [r["step"] for r in _rows(d)], d.name

    sessions = sorted(experiment.glob("qlora_sweep_asha_state-*.pkl"))
    assert len(sessions) == 2  # one per driver session
    with open(sessions[-1], "rb") as f:
        state = pickle.load(f)
    first_rung = dict(state["_brackets"][0]._rungs)[1]
    assert set(first_rung) == {json.loads(d.joinpath("result.json").read_text().splitlines()[0])["trial_id"]
                               for d in dirs}  # includes trials that never reported after the crash

    best = run_cli("best", experiment, "--json")
    assert best.returncode == 0 and json.loads(best.stdout)["checkpoint"]
