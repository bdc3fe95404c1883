"""A kept worker that dies between trials costs the next trial one retry, not its life.

With reuse_actors, Tune starts the next trial in the finished trial's actor. If that worker died while idle,
Ray reports the one death twice, and Tune as shipped ends the trial in ERROR whatever FailureConfig allows
(search.tuner.retry_trials_whose_kept_worker_died). The random-kill soak met it on 2026-12-06. Here the worker
is killed at that exact moment: a Tune callback kills the first trial's worker as the trial completes, before
Tune hands that worker to the second trial. The trainable is a bare function, as small as Tune allows, since
what is tested is Tune's handling of the worker, not a trial."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, short_ray_temp

pytestmark = pytest.mark.sweep

SCRIPT = """
import json, os, signal, sys, tempfile
import ray
from ray import tune
from search.tuner import retry_trials_whose_kept_worker_died

def trainable(config):
    tune.report({"x": config["x"], "pid": os.getpid()})

class KillTheFirstTrialsWorkerAsItCompletes(tune.Callback):
    def __init__(self):
        self.killed = None
    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.killed is None:
            self.killed = trial.last_result["pid"]
            os.kill(self.killed, signal.SIGKILL)

if sys.argv[1] == "fixed":
    retry_trials_whose_kept_worker_died()
ray.init(num_cpus=1, include_dashboard=False)
outcome = {}
for retries in (1, 0):
    killer = KillTheFirstTrialsWorkerAsItCompletes()
    grid = tune.Tuner(
        trainable, param_space={"x": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), name=f"retries-{retries}", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=retries), callbacks=[killer]),
    ).fit()
    outcome[retries] = {"finished": sorted(r.metrics["x"] for r in grid if r.error is None and r.metrics),
                        "errors": [type(r.error).__name__ for r in grid if r.error is not None],
                        "killed_worker_ran_trials": sorted(r.metrics["x"] for r in grid
                                                           if r.metrics and r.metrics.get("pid") == killer.killed)}
print("OUTCOME " + json.dumps(outcome))
"""


def run_the_kill(mode: str) -> dict:
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    return {int(retries): result for retries, result in json.loads(lines[-1][len("OUTCOME "):]).items()}


def test_a_trial_whose_kept_worker_died_before_it_began_is_retried_in_a_new_one_and_counts_the_death_once():
    outcome = run_the_kill("fixed")
    # One retry allowed: the second trial, handed the dead worker, starts again in a new one and finishes
    assert outcome[1]["errors"] == [] and outcome[1]["finished"] == [1, 2, 3], outcome
    assert outcome[1]["killed_worker_ran_trials"] == [1]  # the kill hit the worker between trials, as meant
    # None allowed: the death is the second trial's one failure, and it fails, as FailureConfig says
    assert outcome[0]["errors"] == ["ActorDiedError"] and outcome[0]["finished"] == [1, 3], outcome
