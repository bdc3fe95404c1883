"""result.json is made to agree with the rung history carried by a trial's newest checkpoint:
rows a killed driver never wrote come back, rows of a rung that was run again are set aside."""

import json

import pytest

from search.history import restore_result_rows
from trainables.checkpoint_files import RUNG_HISTORY

pytestmark = pytest.mark.unit


def _row(step, report_id, **extra):
    return {"rung": step // 8, "step": step, "rougeL": step / 100, "report_id": report_id, **extra}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_the_driver_never_wrote_come_back_from_the_newest_checkpoint(tmp_path):
    trial = tmp_path / "run_trial_a5c195e3_3_lr=0.1"
    _write(trial / "checkpoint_000000" / RUNG_HISTORY, [_row(8, "a")])
    _write(trial / "checkpoint_000002" / RUNG_HISTORY, [_row(8, "a"), _row(16, "b"), _row(24, "c")])
    tune_fields = {"trial_id": "a5c195e3", "experiment_tag": "3_lr=0.1", "config": {"lora_r": 4}}
    _write(trial / "result.json", [_row(16, "b", training_iteration=2, **tune_fields),
                                   _row(24, "c", training_iteration=3, **tune_fields)])

    changes = restore_result_rows(str(tmp_path))

    rows = _read(trial / "result.json")
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert rows[0]["restored_from_checkpoint"] is True
    assert rows[0]["trial_id"] == "a5c195e3" and rows[0]["config"] == {"lora_r": 4}
    assert rows[0]["training_iteration"] == 1
    assert changes == [f"{trial.name}: 1 result row(s) restored from its checkpoint, 0 superseded by a rerun"]
    assert not (trial / "result.superseded.json").exists()
    assert restore_result_rows(str(tmp_path)) == []  # a second pass changes nothing


def test_a_rung_run_again_after_a_restart_keeps_only_the_rerun_and_sets_the_first_aside(tmp_path):
    trial = tmp_path / "run_trial_bbbb_1_lr=0.1"
    _write(trial / "checkpoint_000001" / RUNG_HISTORY, [_row(8, "a"), _row(16, "rerun")])
    _write(trial / "result.json", [_row(8, "a", trial_id="bbbb"), _row(16, "first", trial_id="bbbb"),
                                   _row(16, "rerun", trial_id="bbbb")])

    restore_result_rows(str(tmp_path))

    assert [r["report_id"] for r in _read(trial / "result.json")] == ["a", "rerun"]
    assert [r["report_id"] for r in _read(trial / "result.superseded.json")] == ["first"]


def test_a_trial_without_checkpoint_history_is_left_as_it_is(tmp_path):
    trial = tmp_path / "run_trial_cccc_1_lr=0.1"
    _write(trial / "result.json", [_row(8, "a")])
    before = (trial / "result.json").read_text()

    assert restore_result_rows(str(tmp_path)) == []
    assert (trial / "result.json").read_text() == before


def test_progress_csv_follows_result_json_when_it_kept_the_first_attempt_at_a_rerun_rung(tmp_path):
    """A resumed Tune may go on appending to progress.csv after a rung's first attempt: the rerun
    then shows twice there. It is written again from result.json, once the first attempt is aside."""
    trial = tmp_path / "run_trial_dddd_1_lr=0.1"
    _write(trial / "checkpoint_000002" / RUNG_HISTORY, [_row(8, "a"), _row(16, "rerun"), _row(24, "c")])
    _write(trial / "result.json", [_row(8, "a"), _row(16, "first"), _row(16, "rerun"), _row(24, "c")])
    (trial / "progress.csv").write_text("step,report_id\n8,a\n16,first\n16,rerun\n24,c\n")

    restore_result_rows(str(tmp_path))

    lines = (trial / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    steps = [int(line.split(",")[header.index("step")]) for line in lines[1:]]
    assert steps == [r["step"] for r in _read(trial / "result.json")] == [8, 16, 24]
    assert restore_result_rows(str(tmp_path)) == []  # agreeing now: a second pass changes nothing
