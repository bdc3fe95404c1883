"""The random-kill soak (benchmarks/chaos.py), small: 4 kills of drivers and trial workers at
random moments, and nothing lost. BENCHMARKS.md records a run with 30 or more."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.sweep


def test_four_random_kills_lose_no_trial_no_rung_and_leave_no_process(tiny_model_path, tmp_path):
    out = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, "benchmarks/chaos.py", "--model", str(tiny_model_path), "--kills", "4",
                           "--seed", "2", "--out", str(out), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    failed = [s for s in summary["sweeps"] if s["missing_or_extra_trials"] or s["unfinished_trials"]
              or s["trials_with_a_duplicated_rung"] or not s["best_answers"]]
    what = {"sweeps_that_lost": failed, "kills": summary["kills"], "leftover_processes": summary["leftover_processes"]}
    assert summary["kills_tried"] == 4 and summary["lost"] == 0, json.dumps(what, indent=1)[:6000]
    assert summary["driver_kills"] >= 1 and summary["worker_kills"] >= 1  # seed 2 draws both kinds
    assert done.returncode == 0
    for sweep in summary["sweeps"]:
        assert sweep["trials"] == sweep["distinct_configurations"] == 4 and sweep["best_answers"]
