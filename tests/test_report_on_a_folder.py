"""`best` and `report` on an experiment folder whose every rung is known: a synthetic one that real
Ray Tune writes from scripted trials (tests/synthetic_experiment.py), with no model to train."""

import json
import subprocess
import sys

import pytest

from search.results import best_trial, format_leaderboard, load_experiment, trial_rows
from tests.conftest import built_once
from tests.helpers import ROOT, run_cli
from tests.synthetic_experiment import NAME

pytestmark = pytest.mark.sweep


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    def write(folder):
        done = subprocess.run([sys.executable, "-m", "tests.synthetic_experiment", str(folder)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    return built_once(tmp_path_factory, "synthetic-experiment", write) / NAME


def _by_rank(rows):
    return {row["hyperparameters"]["lora_r"]: row for row in rows}


def test_trials_are_ranked_by_their_whole_set_score_and_subset_only_trials_after(experiment):
    rows = trial_rows(load_experiment(str(experiment)))
    assert [row["hyperparameters"]["lora_r"] for row in rows] == [4, 8, 16, 32, 64]
    by_rank = _by_rank(rows)
    assert by_rank[8]["best_rougeL"] == pytest.approx(0.40)  # not its 0.55 on two dialogues
    assert by_rank[16]["best_rougeL"] is None and by_rank[16]["best_row_on_subset"]["rougeL"] == pytest.approx(0.60)
    assert by_rank[64]["best_row"] is None and by_rank[64]["best_row_on_subset"] is None  # its 0 was not measured
    assert [by_rank[r]["status"] for r in (4, 8, 16, 32, 64)] == [
        "TERMINATED", "TERMINATED", "STOPPED_EARLY", "ERROR", "DIVERGED"]
    assert [by_rank[r]["rungs"] for r in (4, 8, 16, 32, 64)] == [3, 3, 1, 1, 1]


def test_best_is_the_best_whole_set_row_with_the_checkpoint_saved_with_it_and_edge_warnings(experiment):
    best = best_trial(load_experiment(str(experiment)))
    assert best["hyperparameters"]["lora_r"] == 4 and best["best_rung"] == 3
    assert best["metrics"]["rougeL"] == pytest.approx(0.50) and best["metrics"]["step"] == 6
    assert best["checkpoint"].endswith("checkpoint_000002")
    assert best["warnings"] == [
        "1 of 5 trials diverged, stopped by their training loss (training.divergence_loss_ratio): learning_rate 0.009, "
        "above every trial that trained (0.003 the highest)",
        "lora_r=4 is the smallest or largest of its choices [4, 8, 16, 32, 64]",
        "learning_rate=0.0001 lies at the edge of its range [0.0001, 0.01]"]


def test_the_leaderboard_shows_every_trial_its_status_and_a_subset_score_in_parentheses(experiment):
    lines = format_leaderboard(load_experiment(str(experiment))).splitlines()
    assert lines[0] == f"experiment: {experiment} (5 trials, ranked by rougeL, max)"
    assert lines[1].split() == ["trial", "status", "learning_rate", "lora_r", "rungs", "best", "rougeL"]
    assert lines[2].split()[1:] == ["TERMINATED", "0.0001", "4", "3", "0.5000"]
    assert lines[3].split()[1:] == ["TERMINATED", "0.001", "8", "3", "0.4000"]
    assert lines[4].split()[1:] == ["STOPPED_EARLY", "0.002", "16", "1", "(0.6000", "on", "2", "dialogues)"]
    assert lines[5].split()[1:] == ["ERROR", "0.003", "32", "1", "(0.1000", "on", "2", "dialogues)"]
    assert lines[6].split()[1:] == ["DIVERGED", "0.009", "64", "1", "-"]


def test_the_cli_reads_the_same_folder(experiment):
    report = run_cli("report", experiment)
    assert report.returncode == 0 and report.stdout.strip() == format_leaderboard(load_experiment(str(experiment)))
    best = run_cli("best", experiment, "--json")
    assert best.returncode == 0 and json.loads(best.stdout)["hyperparameters"] == {"lora_r": 4, "learning_rate": 1e-4}
