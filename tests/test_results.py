"""search/results.py's own rules, on rows and configs written here: which rows rank a trial, which
status a trial that ASHA stopped shows, where a best value sits on the edge of its space."""

import numpy
import pytest

from search.results import (Experiment, _best_row, _status, boundary_warnings, divergence_notes, format_file_scores,
                            whole_set_rows)

pytestmark = pytest.mark.unit

SEARCH = {"lora_r": {"choice": [8, 16, 32]}, "lora_alpha": {"choice": [16, 32]},
          "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "max_length": 512}


def _experiment(**scheduler):
    return Experiment(path="/x", config={"search": SEARCH, "scheduler": scheduler}, analysis=None)


class Trial:
    def __init__(self, status):
        self.status = status


def test_rouge_ranks_only_rows_scored_on_the_whole_validation_set_and_loss_ranks_every_row():
    rows = [{"rougeL": 0.9, "eval_loss": 1.0, "rouge_examples": 2}, {"rougeL": 0.5, "eval_loss": 2.0, "rouge_examples": 6}]
    assert whole_set_rows(rows, "rougeL", whole=6) == rows[1:]
    assert whole_set_rows(rows, "eval_loss", whole=6) == rows
    assert _best_row(rows, "eval_loss", "min") is rows[0] and _best_row(rows, "rougeL", "max") is rows[0]
    assert _best_row([{"rougeL": float("nan")}], "rougeL", "max") is None


def _rungs(count, **last):
    return [{"training_iteration": i + 1, **(last if i == count - 1 else {})} for i in range(count)]


def test_a_trial_that_ended_before_the_last_rung_shows_as_stopped_early():
    experiment = _experiment(max_rungs=3)
    assert _status(experiment, Trial("TERMINATED"), _rungs(1)) == "STOPPED_EARLY"
    assert _status(experiment, Trial("TERMINATED"), _rungs(3)) == "TERMINATED"
    assert _status(experiment, Trial("ERROR"), _rungs(1)) == "ERROR"
    assert _status(Experiment(path="/x", config=None, analysis=None), Trial("TERMINATED"), _rungs(1)) == "TERMINATED"


def test_a_trial_whose_last_rung_diverged_shows_as_diverged_not_as_stopped_by_asha():
    experiment = _experiment(max_rungs=3)
    assert _status(experiment, Trial("TERMINATED"), _rungs(1, diverged=True)) == "DIVERGED"
    assert _status(experiment, Trial("TERMINATED"), _rungs(2, diverged=numpy.True_)) == "DIVERGED"  # as pandas reads it
    assert _status(experiment, Trial("TERMINATED"), _rungs(1, diverged=False)) == "STOPPED_EARLY"
    assert _status(experiment, Trial("TERMINATED"), _rungs(1, diverged=float("nan"))) == "STOPPED_EARLY"  # an old row


def _row(status, learning_rate):
    return {"status": status, "hyperparameters": {"learning_rate": learning_rate}}


def test_diverged_trials_are_counted_with_their_learning_rates_and_whether_those_topped_the_sweep():
    experiment = _experiment()
    assert divergence_notes(experiment, [_row("TERMINATED", 1e-3), _row("STOPPED_EARLY", 2e-3)]) == []
    rows = [_row("TERMINATED", 1e-3), _row("DIVERGED", 9e-3), _row("DIVERGED", 6.4e-3)]
    assert divergence_notes(experiment, rows) == [
        "2 of 3 trials diverged, stopped by their training loss (training.divergence_loss_ratio): learning_rate "
        "0.0064, 0.009, above every trial that trained (0.001 the highest)"]
    assert divergence_notes(experiment, [_row("DIVERGED", 9e-3), _row("DIVERGED", 9e-3)]) == [
        "2 of 2 trials diverged, stopped by their training loss (training.divergence_loss_ratio): learning_rate 0.009"]
    assert divergence_notes(experiment, [_row("TERMINATED", 8e-3), _row("DIVERGED", 6.4e-3)]) == [
        "1 of 2 trials diverged, stopped by their training loss (training.divergence_loss_ratio): learning_rate 0.0064"]


def test_the_metric_and_its_direction_come_from_the_recorded_config_or_the_schemas_defaults():
    assert (_experiment(metric="eval_loss").metric, _experiment(metric="eval_loss").mode) == ("eval_loss", "min")
    plain = Experiment(path="/x", config=None, analysis=None)
    assert (plain.metric, plain.mode, plain.max_rungs) == ("rougeL", "max", None)


def test_a_best_value_on_the_edge_of_the_space_is_flagged_and_one_inside_is_not():
    experiment = _experiment()
    assert boundary_warnings(experiment, {"lora_r": 32, "lora_alpha": 32, "learning_rate": 1e-3}) == [
        "lora_r=32 is the smallest or largest of its choices [8, 16, 32]"]
    assert boundary_warnings(experiment, {"lora_r": 16, "learning_rate": 9.5e-3}) == [
        "learning_rate=0.0095 lies at the edge of its range [0.0001, 0.01]"]
    assert boundary_warnings(experiment, {"lora_r": 16, "learning_rate": 1e-3}) == []  # two choices: no edge to speak of
    assert boundary_warnings(Experiment(path="/x", config=None, analysis=None), {"lora_r": 32}) == []


def test_file_scores_are_shown_per_rule_with_what_each_rule_means():
    scores = {"file": "/d/test.jsonl", "examples": 5, "skipped_rows": 1, "reference_fields": ["summary1", "summary2"],
              "rules": {"best_reference": "best of them", "mean_over_references": "their mean"},
              "best_reference": {"rougeL": 0.5}, "mean_over_references": {"rougeL": 0.25}}
    assert format_file_scores(scores).splitlines() == [
        "on /d/test.jsonl: 5 dialogues (1 rows skipped), references: summary1, summary2",
        "  best_reference (best of them): rougeL=0.5000",
        "  mean_over_references (their mean): rougeL=0.2500"]


def test_best_test_scores_read_as_one_line_naming_how_the_dialogues_were_held_out():
    from search.results import format_test_scores

    line = format_test_scores({"test_examples": 500, "seed": 0, "rouge1": 0.4, "rouge2": 0.15, "rougeL": 0.33,
                               "rougeLsum": 0.35})
    assert line == ("  held-out test (500 dialogues held out of train by data.seed=0): rouge1=0.4000, "
                    "rouge2=0.1500, rougeL=0.3300, rougeLsum=0.3500")
