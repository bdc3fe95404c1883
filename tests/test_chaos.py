"""The random-kill soak (benchmarks/chaos.py), small: 2 kills at random moments, a driver's and
then a trial worker's (seed 2 draws them in that order, both within the first sweep), and nothing
lost. BENCHMARKS.md records a run with 30 or more. (4 kills took 4 minutes of CI's 20 on a 2-core
machine: seed 2's later sweeps ran whole without a kill, so 2 cut the time to a third and keep
both kinds.)"""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.sweep


def test_a_driver_and_a_worker_killed_at_random_moments_lose_no_trial_no_rung_and_leave_no_process(
        tiny_model_path, tmp_path):
    out = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, "benchmarks/chaos.py", "--model", str(tiny_model_path), "--kills", "2",
                           "--seed", "2", "--out", str(out), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    failed = [s for s in summary["sweeps"] if s["missing_or_extra_trials"] or s["unfinished_trials"]
              or s["trials_with_a_duplicated_rung"] or not s["best_answers"]]
    what = {"sweeps_that_lost": failed, "kills": summary["kills"], "leftover_processes": summary["leftover_processes"]}
    assert summary["kills_tried"] == 2 and summary["lost"] == 0, json.dumps(what, indent=1)[:6000]
    assert summary["driver_kills"] == summary["worker_kills"] == 1  # seed 2 draws both kinds
    assert done.returncode == 0
    for sweep in summary["sweeps"]:
        assert sweep["trials"] == sweep["distinct_configurations"] == 4 and sweep["best_answers"]
