"""The live view of a running sweep, fed events the way search.tuner.TrialEvents feeds them."""

import io
import re

import pytest

from search.live import SweepView

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def view(stream, interactive=False, **kwargs):
    clock = Clock()
    shown = SweepView(metric="rougeL", mode="max", max_rungs=3, num_trials=3, searched=["lora_r", "learning_rate"],
                      stream=stream, interactive=interactive, validation_examples=8, clock=clock, **kwargs)
    return shown, clock


def test_without_a_terminal_each_event_is_one_plain_line():
    out = io.StringIO()
    shown, clock = view(out, cluster_cpus=2)
    shown.start()
    shown.trial_seen("a", {"lora_r": 8, "learning_rate": 1e-3, "max_length": 128})
    shown.trial_started("a", {"lora_r": 8, "learning_rate": 1e-3})
    clock.now = 65
    shown.rung_reported("a", 1, 0.31, 4)
    shown.trial_started("b", {"lora_r": 16, "learning_rate": 2e-4})
    shown.rung_reported("b", 1, 0.12, 4)
    shown.trial_ended("b")
    shown.rung_reported("a", 3, 0.45, 8)
    shown.trial_ended("a")
    shown.trial_started("c", {"lora_r": 4, "learning_rate": 5e-4})
    shown.resources_in_use(0, 1)
    shown.trial_retrying("c", "RuntimeError: boom")
    shown.trial_started("c", {}, after_rung=1)
    shown.trial_ended("c", error="RuntimeError: boom")
    shown.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[0:00] trial a started: lora_r=8, learning_rate=0.001"
    assert lines[1] == "[1:05] trial a rung 1/3: rougeL=0.3100 (on 4 of 8 dialogues) (best so far)"
    assert "trial b stopped early by ASHA after rung 1: rougeL=0.1200 (on 4 of 8 dialogues)" in lines[4]
    assert lines[5] == "[1:05] trial a rung 3/3: rougeL=0.4500 (best so far)"
    assert lines[6] == "[1:05] trial a finished 3 rungs: rougeL=0.4500"
    assert "trial c failed (RuntimeError: boom); retrying from its last checkpoint" in lines[8]
    assert lines[9] == "[1:05] trial c continues after rung 1: lora_r=4, learning_rate=0.0005"
    assert "trial c failed at rung 2: RuntimeError: boom" in lines[10]
    assert lines[-1] == "1:05 elapsed, 3/3 trials done, no GPU; CPUs in use: 1 of 2"
    assert len(lines) == 12  # nothing but the events and the closing line


def test_the_best_trial_is_judged_on_the_most_dialogues_scored_not_on_an_early_subset():
    shown, _ = view(io.StringIO())
    shown.rung_reported("early", 1, 0.9, 4)  # a high score on half the validation set
    assert shown.best_trial_id() == "early"
    shown.rung_reported("whole", 3, 0.5, 8)
    assert shown.best_trial_id() == "whole"
    shown.rung_reported("other", 3, 0.6, 8)
    assert shown.best_trial_id() == "other"


def test_minimized_metrics_mark_the_lowest():
    shown = SweepView(metric="eval_loss", mode="min", max_rungs=2, num_trials=2, searched=[],
                      stream=io.StringIO(), interactive=False)
    shown.rung_reported("a", 1, 2.0, None)
    shown.rung_reported("b", 1, 1.5, None)
    assert shown.best_trial_id() == "b"


def test_on_a_terminal_one_table_is_redrawn_with_a_row_per_trial_and_a_footer():
    out = io.StringIO()
    shown, clock = view(out, interactive=True, cluster_gpus=1.0)
    shown.start()
    shown.trial_seen("pending1", {"lora_r": 32, "learning_rate": 3e-4})
    shown.trial_started("a", {"lora_r": 8, "learning_rate": 1e-3})
    shown.resources_in_use(0.25, 1)
    clock.now = 125
    shown.rung_reported("a", 3, 0.45, 8)
    shown.trial_ended("a")
    shown.say("a line of the driver's own")
    shown.stop()
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with cursor control, in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "a line of the driver's own" in plain
    final = [line.rstrip() for line in plain[plain.rfind("trial "):].splitlines()]  # the last drawing
    assert re.fullmatch(r"trial\s+lora_r\s+learning_rate\s+state\s+rung\s+rougeL", final[0])
    assert re.fullmatch(r"\s+pending1\s+32\s+0\.0003\s+pending\s+-\s+-", final[1])
    assert re.fullmatch(r"\*\s+a\s+8\s+0\.001\s+finished\s+3/3\s+0\.4500", final[2])  # marked best
    assert final[3] == "2:05 elapsed, 1/3 trials done, GPUs in use: 0.25 of 1"
    assert "[0:00]" not in plain  # no event lines on a terminal


def test_a_diverged_trial_is_one_line_saying_why_and_is_done_but_never_the_best():
    out = io.StringIO()
    shown, clock = view(out, cluster_cpus=2)
    shown.trial_started("a", {"lora_r": 8, "learning_rate": 9e-3})
    shown.rung_reported("a", 1, 0.0, None, diverged="training loss 14.2, 21.9, 27.3", step=4)
    shown.trial_ended("a")  # Tune's end of the same trial says nothing more
    assert shown.best_trial_id() is None  # its 0 was never measured
    shown.trial_started("b", {"lora_r": 8, "learning_rate": 1e-3})
    shown.rung_reported("b", 1, 0.2, 4)
    shown.stop()
    lines = out.getvalue().splitlines()
    assert lines[1] == "[0:00] trial a diverged at step 4 of rung 1/3: training loss 14.2, 21.9, 27.3; stopped"
    assert lines[3] == "[0:00] trial b rung 1/3: rougeL=0.2000 (on 4 of 8 dialogues) (best so far)"
    assert lines[-1] == "0:00 elapsed, 1/3 trials done, no GPU; CPUs in use: 0 of 2"
    assert len(lines) == 5
    assert [line.state for line in shown.trials.values()] == ["diverged", "running"]
