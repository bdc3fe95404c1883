"""What a trial's validation loss covers (evaluation.loss_examples): the Trainer evaluates exactly the
dialogues the config names, in the trial itself (trainables.trial.run_trial, in this process, on the
tiny 4-bit model), and the rung reports how many."""

import pytest
from transformers import TrainerCallback

from search.config import SweepConfig
from search.packing import TrialPlanner
from tests.conftest import tiny_sweep_dict
from tests.dirty_data import write_long_validation_summaries
from tests.helpers import RecordingSession

pytestmark = pytest.mark.sweep

VALUES = {"lora_r": 2, "lora_alpha": 4, "learning_rate": 1e-3, "max_length": 192}


class EvaluatedRows(TrainerCallback):
    """The input_ids of every row the Trainer's evaluation loop was given, rung by rung."""

    def __init__(self) -> None:
        self.rungs: list[list[list[int]]] = []

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        self.rungs.append([list(row["input_ids"]) for row in eval_dataloader.dataset])


def _trial_rows(tiny_model_path, tmp_path, metric, **evaluation):
    from trainables.data import load_dialogues, tokenize_for_training
    from trainables.prompt import load_tokenizer
    from trainables.trial import run_trial

    sweep = SweepConfig.model_validate(tiny_sweep_dict(
        tiny_model_path, tmp_path / "results", data={"max_train_examples": 8, "max_validation_examples": 6},
        evaluation={"max_new_tokens": 4, "rung_examples": [2, 4], **evaluation},
        scheduler={"max_rungs": 2, "metric": metric}, training={"steps_per_rung": 1}))
    trial = TrialPlanner.alone_on_this_machine(sweep).trial_config(VALUES)
    session, evaluated = RecordingSession(), EvaluatedRows()
    run_trial(trial, session=session, callbacks=[evaluated])

    validation = load_dialogues(trial.data)["validation"]
    tokenized = tokenize_for_training(validation, load_tokenizer(trial.model), trial.prompt, VALUES["max_length"])
    every_row = [list(ids) for ids in tokenized["input_ids"]]
    return trial, session.rungs, evaluated.rungs, every_row


def test_where_rouge_ranks_the_loss_covers_rung_1s_rouge_dialogues_at_every_rung(tiny_model_path, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Trainer's checkpoints go under the working directory, as in a worker
    trial, reported, evaluated, every_row = _trial_rows(tiny_model_path, tmp_path, "rougeL")
    chosen = sorted(trial.evaluation.dialogues_at(1, trial.max_rungs, len(every_row), trial.data.seed))
    assert len(every_row) == 6 and len(chosen) == 2  # every sample summary fits 192 tokens
    assert evaluated == [[every_row[i] for i in chosen]] * 2  # the same 2 of the 6 at both rungs
    assert [rung["eval_loss_examples"] for rung in reported] == [2, 2]
    assert [rung["rouge_examples"] for rung in reported] == [2, 6]  # ROUGE's own budget, unchanged


def test_where_the_loss_ranks_it_covers_every_validation_dialogue(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, reported, evaluated, every_row = _trial_rows(tiny_model_path, tmp_path, "eval_loss")
    assert evaluated == [every_row] * 2
    assert [rung["eval_loss_examples"] for rung in reported] == [6, 6]


def test_a_count_asked_for_is_the_first_of_the_same_sample(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trial, reported, evaluated, every_row = _trial_rows(tiny_model_path, tmp_path, "rougeL", loss_examples=3)
    sample = trial.evaluation.dialogues_at(2, trial.max_rungs, len(every_row), trial.data.seed)  # the last: all 6
    assert evaluated == [[every_row[i] for i in sorted(sample[:3])]] * 2
    assert [rung["eval_loss_examples"] for rung in reported] == [3, 3]


def test_a_trial_whose_loss_dialogues_none_fit_stops_instead_of_reporting_nan(tiny_model_path, tmp_path, monkeypatch):
    from trainables.trial import run_trial

    monkeypatch.chdir(tmp_path)
    data = write_long_validation_summaries(tmp_path / "data")  # the driver refuses it; run_trial is called directly
    sweep = SweepConfig.model_validate(tiny_sweep_dict(
        tiny_model_path, tmp_path / "results", data={"path": str(data), "max_validation_examples": 6},
        evaluation={"max_new_tokens": 4, "rung_examples": [2, 4]}, scheduler={"max_rungs": 2}))
    trial = TrialPlanner.alone_on_this_machine(sweep).trial_config(VALUES)
    session = RecordingSession()
    with pytest.raises(ValueError, match="max_length=192: none of the 2 validation summaries the loss covers fits"):
        run_trial(trial, session=session)
    assert session.rungs == []
