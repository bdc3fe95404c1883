"""A trial whose training diverges (training.divergence_loss_ratio) stops at that step: it reports the rung
with its validation loss, a ROUGE of 0 it generated nothing for and no checkpoint, and `run`, `report` and
`best` say it diverged. On the tiny Llama trained on the sample (tests/tiny_model.py), which a learning rate far
too high makes worse than it began, in this process (run_trial) and through a real sweep."""

import json
import math

import pytest

from search.config import SweepConfig
from search.packing import TrialPlanner
from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import RecordingSession, run_cli
from trainables.checkpoint_files import RUNG_HISTORY, rung_history_text

pytestmark = pytest.mark.sweep

VALUES = {"lora_r": 4, "lora_alpha": 16, "max_length": 192}
STEPS_PER_RUNG = 8


def _trial_rungs(model, tmp_path, learning_rate, **training):
    from trainables.trial import run_trial

    sweep = SweepConfig.model_validate(tiny_sweep_dict(
        model, tmp_path / "results", data={"max_train_examples": 64, "max_validation_examples": 4},
        evaluation={"max_new_tokens": 4, "rung_examples": [2]}, scheduler={"max_rungs": 2},
        training={"steps_per_rung": STEPS_PER_RUNG, **training}))
    trial = TrialPlanner.alone_on_this_machine(sweep).trial_config({**VALUES, "learning_rate": learning_rate})
    session = RecordingSession()
    run_trial(trial, session=session)
    return list(zip(session.rungs, session.checkpoints))


def test_a_trial_whose_loss_diverges_reports_that_rung_unscored_without_a_checkpoint_and_ends(
        trained_tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rungs = _trial_rungs(trained_tiny_model_path, tmp_path, learning_rate=0.3)
    assert len(rungs) == 1  # the trial ended: no second rung
    metrics, checkpoint = rungs[0]
    assert checkpoint is None
    assert metrics["diverged"] is True and metrics["diverged_why"].startswith("training loss ")
    assert metrics["rung"] == 1 and 4 <= metrics["step"] < STEPS_PER_RUNG  # stopped inside its first rung
    assert [metrics[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_examples")] == [0.0] * 4 + [0]
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 2 * metrics["first_step_loss"]


def test_the_same_trial_without_a_ratio_trains_every_rung(trained_tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rungs = _trial_rungs(trained_tiny_model_path, tmp_path, learning_rate=0.3, divergence_loss_ratio=None)
    assert [(m["rung"], m["step"], m["diverged"], c is not None) for m, c in rungs] == [
        (1, STEPS_PER_RUNG, False, True), (2, 2 * STEPS_PER_RUNG, False, True)]
    assert rungs[0][0]["train_loss"] > 2 * rungs[0][0]["first_step_loss"]  # what the default ratio would have stopped


def test_a_healthy_trial_trains_every_rung_measured_against_its_first_steps_loss(
        trained_tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rungs = _trial_rungs(trained_tiny_model_path, tmp_path, learning_rate=1e-3)
    assert [(m["rung"], m["diverged"], c is not None) for m, c in rungs] == [(1, False, True), (2, False, True)]
    first = rungs[0][0]["first_step_loss"]
    assert rungs[1][0]["first_step_loss"] == first and 0 < first < 3
    assert all(m["train_loss"] < 2 * first and m["rouge_examples"] > 0 for m, _ in rungs)


def test_a_resumed_trial_measures_its_loss_against_the_first_step_it_recorded(tmp_path):
    from trainables.report import RungReporter

    (tmp_path / RUNG_HISTORY).write_text(rung_history_text([
        {"rung": 1, "step": 8, "report_id": "a", "first_step_loss": 2.5, "diverged": False}]), encoding="utf-8")
    reporter = RungReporter(lambda model, rung: {}, 8, trial={}, session=RecordingSession(), divergence_loss_ratio=2.0)
    reporter.resume_history(str(tmp_path))
    assert reporter.first_step_loss == 2.5  # not the resumed trial's next step, already trained


def test_a_sweep_whose_every_trial_diverges_says_so_and_names_no_best_trial(trained_tiny_model_path, tmp_path):
    config = tiny_sweep_dict(
        trained_tiny_model_path, tmp_path / "results", name="diverging",
        # one at a time: the second trial runs in the first one's kept worker, not a fresh process importing
        # the libraries again beside the other tests
        search={"num_trials": 2, "max_concurrent_trials": 1, "learning_rate": 0.3, "lora_r": {"choice": [4, 8]},
                "lora_alpha_ratio": 4, "max_length": 192},
        training={"steps_per_rung": STEPS_PER_RUNG}, scheduler={"max_rungs": 2},
        evaluation={"max_new_tokens": 4, "rung_examples": [2]})
    del config["search"]["lora_alpha"]
    done = run_cli("run", write_config(tmp_path / "sweep.yaml", config))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    diverged = [line for line in done.stdout.splitlines() if " diverged at step " in line]
    assert len(diverged) == 2 and all(f"of rung 1/2: training loss " in line and line.endswith("; stopped")
                                      for line in diverged)
    assert "stopped early by ASHA" not in done.stdout
    assert "no best trial: " in done.stdout and "every trial diverged" in done.stdout
    experiment = tmp_path / "results" / "diverging"
    report = run_cli("report", experiment)
    assert report.returncode == 0 and report.stdout.count(" DIVERGED ") == 2, report.stdout
    rows = [json.loads(line) for path in experiment.glob("*/result.json") for line in path.read_text().splitlines()]
    assert len(rows) == 2 and all(row["diverged"] is True and row["rougeL"] == 0.0 for row in rows)
    assert not list(experiment.glob("*/checkpoint_*"))  # a diverged rung keeps nothing to resume or export
