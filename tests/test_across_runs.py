"""benchmarks/across_runs.py: a candidate setting's runs read against many earlier runs of one search."""

import json
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

SLOW = {"lora_r": 64, "learning_rate": 2e-4, "max_length": 512}
FAST = {"lora_r": 64, "learning_rate": 2e-3, "max_length": 512}


def _run(folder, trials):
    """A qlora-sweep arm's folder: each trial's values and its (rougeL, train_loss, dialogues scored) by rung."""
    for n, (values, rungs) in enumerate(trials):
        (folder / f"trial_{n}").mkdir(parents=True)
        rows = [{"config": values, "training_iteration": i + 1, "rougeL": rouge, "train_loss": loss,
                 "rouge_examples": examples, "trial_id": f"t{n}", "timestamp": 10 * (i + 1),
                 "time_total_s": 10 * (i + 1)} for i, (rouge, loss, examples) in enumerate(rungs)]
        (folder / f"trial_{n}" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_candidates_rung_scores_are_read_against_every_baseline_run_of_the_same_values(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from across_runs import main

    baselines = [
        _run(tmp_path / "b1", [(SLOW, [(0.30, 1.5, 100), (0.330, 1.3, 500)]), (FAST, [(0.31, 1.4, 100)])]),
        _run(tmp_path / "b2", [(SLOW, [(0.29, 1.6, 100), (0.336, 1.2, 500)]), (FAST, [(0.33, 1.3, 100)])]),
    ]
    # SLOW's rung 2 lies above both baseline runs; FAST's rung 1 between them; FAST's rung 2 has no baseline,
    # and a rung scored on other dialogues than the baseline's (SLOW's rung 1 on 64) is no pair
    candidate = _run(tmp_path / "c", [(SLOW, [(0.35, 1.5, 64), (0.345, 1.1, 500)]),
                                      (FAST, [(0.32, 1.35, 100), (0.34, 1.2, 500)])])
    out = tmp_path / "across.json"
    assert main(["--candidate", str(candidate), "--baseline", *map(str, baselines), "--out", str(out)]) == 0
    result = json.loads(out.read_text())

    assert [(p["rung"], p["hyperparameters"]["learning_rate"]) for p in result["pairs"]] == [(2, 2e-4), (1, 2e-3)]
    rung2 = result["by_rung"]["2"]["rougeL"]
    assert rung2["mean_minus_baseline_mean"] == pytest.approx(0.345 - 0.333)
    assert (rung2["above_every_baseline_run"], rung2["below_every_baseline_run"]) == (1, 0)
    rung1 = result["by_rung"]["1"]["rougeL"]
    assert rung1["mean_minus_baseline_mean"] == pytest.approx(0.0)
    assert (rung1["above_every_baseline_run"], rung1["below_every_baseline_run"]) == (0, 0)
    assert result["by_rung"]["2"]["train_loss"]["below_every_baseline_run"] == 1
    # bests are on the whole validation set only: the candidate's 0.35 on 64 dialogues is not its best
    assert result["candidate"]["spread"]["max"] == pytest.approx(0.345)
    assert result["baseline"]["spread"]["min"] == pytest.approx(0.330)
    assert "rung 2: 1 pairs; rougeL +0.0120" in capsys.readouterr().out


def test_a_folder_without_trial_results_is_refused_in_one_line(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from across_runs import main

    candidate = _run(tmp_path / "c", [(SLOW, [(0.3, 1.5, 100)])])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["--candidate", str(candidate), "--baseline", str(tmp_path / "empty")])
    assert exited.value.code == 2
    assert "empty: no trial results there" in capsys.readouterr().err
