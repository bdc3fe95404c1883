"""search/tuner.py's own parts that need no running Ray: ASHA's state kept in the experiment folder
and read back, and the check that stops a resume on a Ray its internals were not written for."""

import pytest

import search.tuner
from search.tuner import PersistentASHA, latest_scheduler_state, restore_scheduler_state, save_scheduler_state
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit


def _asha(folder):
    return PersistentASHA(experiment_path=str(folder), time_attr="training_iteration", max_t=3, grace_period=1,
                          reduction_factor=2, metric="rougeL", mode="max")


def test_ashas_rung_records_are_saved_whole_into_the_folder_and_restored_into_a_new_scheduler(tmp_path):
    saved = _asha(tmp_path)
    rung = dict(saved._brackets[0]._rungs)[1]
    rung.update({"trial_a": 0.3, "trial_b": 0.5})  # what ASHA records as trials report at rung 1
    save_scheduler_state(saved)
    assert latest_scheduler_state(str(tmp_path)) == f"{tmp_path}/{saved.state_name}"
    assert not list(tmp_path.glob("*.partial"))

    restored = PersistentASHA(experiment_path="/elsewhere", time_attr="training_iteration", max_t=3,
                              grace_period=1, reduction_factor=2)
    assert restore_scheduler_state(restored, str(tmp_path)) is True
    assert dict(restored._brackets[0]._rungs)[1] == {"trial_a": 0.3, "trial_b": 0.5}
    assert restored.experiment_path == str(tmp_path)  # it saves where it was restored from
    assert restored._metric is None and restored._mode is None  # Tune sets them again on resume
    (tmp_path / "no-state").mkdir()
    assert restore_scheduler_state(_asha(tmp_path / "no-state"), str(tmp_path / "no-state")) is False


def test_ray_internals_are_refused_on_a_ray_they_were_not_written_for(monkeypatch, tmp_path):
    search.tuner.check_ray_internals()  # the pinned Ray passes
    monkeypatch.setattr(search.tuner, "version", lambda package: "2.61.0")
    with pytest.raises(ConfigError, match=r"Ray 2.61.0 is installed, but qlora-sweep's resume reads Ray internals "
                                          r"written for Ray 2.60; install ray\[default,tune\]==2.60.0"):
        search.tuner.read_tune_state_file(tmp_path / "experiment_state-x.json")


def test_the_trials_tune_calls_from_new_threads_all_train_in_the_workers_one_trial_thread(monkeypatch, tmp_path):
    """search.tuner.run_trial, what Tune calls in a worker for each trial (from a new thread each time),
    hands the recipe to the worker's kept trial thread: CUDA libraries cache per thread (cuDNN's
    attention graphs), and a kept worker's trials would each build them again."""
    import logging
    import sys
    import threading
    import types

    from search.config import SweepConfig
    from search.output import OUR_LOGGERS
    from search.packing import TrialPlanner

    ran = []
    recipe = types.ModuleType("trainables.trial")  # stands in for the recipe (torch, a model): only its thread is read
    recipe.run_trial = lambda trial, started: ran.append((trial.hyperparameters.learning_rate, threading.get_ident()))
    monkeypatch.setitem(sys.modules, "trainables.trial", recipe)
    monkeypatch.setattr(sys.modules["trainables"], "trial", recipe, raising=False)
    for name in OUR_LOGGERS:  # run_trial sets the worker's logging up; this process's goes back after
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "level", logger.level)
        monkeypatch.setattr(logger, "propagate", logger.propagate)
    planner = TrialPlanner.for_cluster(SweepConfig(name="t", model={"name_or_path": str(tmp_path)},
                                                   resources={"gpus_per_trial": 0}), None)
    callers = []
    for rate in (1e-4, 2e-4):
        caller = threading.Thread(target=lambda r=rate: search.tuner.run_trial(
            {"lora_r": 8, "lora_alpha": 16, "learning_rate": r, "max_length": 256}, planner))
        caller.start()
        caller.join()
        callers.append(caller.ident)
    assert [rate for rate, _ in ran] == [1e-4, 2e-4]
    (thread,) = {ident for _, ident in ran}
    assert thread not in callers and thread != threading.get_ident()
