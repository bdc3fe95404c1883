"""benchmarks/quickstart_time.py reads a sweep's printed clock and runs its sides by turns."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quickstart_time  # noqa: E402

pytestmark = pytest.mark.unit

A_RUN = """\
experiment folder: /tmp/home/qlora-sweep-results/quickstart
sweep quickstart: 4 trials, 2 at a time (auto: 2 CPUs at 1 per trial); ASHA on rougeL over 2 rungs of 3 steps
[0:07] trial c27a98aa started: lora_r=8, learning_rate=0.00186, max_length=192, lora_alpha_ratio=1
[0:08] trial 48dbc150 started: lora_r=16, learning_rate=0.0012, max_length=128, lora_alpha_ratio=4
[0:40] trial 48dbc150 rung 1/2: rougeL=0.2164 (best so far)
[0:45] trial c27a98aa rung 1/2: rougeL=0.0392
[0:45] trial c27a98aa stopped early by ASHA after rung 1: rougeL=0.0392
[0:59] trial 48dbc150 rung 2/2: rougeL=0.5143 (best so far)
[0:59] trial 48dbc150 finished 2 rungs: rougeL=0.5143
[1:02:03] trial 7a66f3a6 rung 1/2: rougeL=0.1864
1:02:05 elapsed, 4/4 trials done, no GPU; CPUs in use: 0 of 2

best trial: 48dbc150 (TERMINATED, 2 rungs) by rougeL (max)
  at rung 2: rouge1=0.6291, rouge2=0.3556, rougeL=0.5143, rougeLsum=0.5143
"""


def test_a_runs_first_start_first_result_and_end_are_read_from_the_sweeps_own_clock():
    seen = quickstart_time.outcome(A_RUN.splitlines())
    assert seen["first_trial_started_s"] == 7.0
    assert seen["first_result_s"] == 40.0  # the first rung 1, not the first line with a clock
    assert seen["sweep_elapsed_s"] == 3725.0  # hours, minutes and seconds
    assert (seen["trials_started"], seen["stopped_early"], seen["best_rougeL"]) == (2, 1, 0.5143)


def test_a_run_that_never_reported_has_no_first_result_rather_than_a_wrong_one():
    seen = quickstart_time.outcome(A_RUN.splitlines()[:4])
    assert seen["first_trial_started_s"] == 7.0
    assert seen["first_result_s"] is None and seen["sweep_elapsed_s"] is None


def test_every_round_runs_each_side_once_in_the_order_reversed_every_other_round():
    assert quickstart_time.rounds_by_turns(["off", "trial", "true"], 3) == [
        "off", "trial", "true", "true", "trial", "off", "off", "trial", "true"]


def test_each_sides_numbers_are_summed_up_by_median_and_range_over_its_runs_only():
    runs = [{"side": "a", "wall_s": 10.0, "first_result_s": 4.0}, {"side": "a", "wall_s": 14.0, "first_result_s": None},
            {"side": "a", "wall_s": 11.0, "first_result_s": 6.0}]
    summary = quickstart_time.side_summary(runs)
    assert summary["wall_s"] == {"median": 11.0, "min": 10.0, "max": 14.0}
    assert summary["first_result_s"] == {"median": 5.0, "min": 4.0, "max": 6.0}
    assert "sweep_elapsed_s" not in summary  # no run read it: no number made up


@pytest.mark.parametrize("arguments, message", [
    (["--side", "a=b"], "--side 'a=b': expected a name, then KEY=VALUE settings"),
    (["--side", "off x=1", "--side", "off y=2"], "--side: each side needs a name of its own"),
    (["--runs", "0"], "--runs 0: at least 1"),
])
def test_bad_arguments_are_refused_in_one_line_with_exit_2_before_anything_is_cloned(arguments, message, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/quickstart_time.py", "--out", str(tmp_path / "q.json"),
                           *arguments], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
