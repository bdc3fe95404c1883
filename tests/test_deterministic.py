"""training.deterministic: a trial trains with torch's deterministic kernels, a switch torch keeps per
process, so each trial sets its own (a kept worker's next trial may not want it). Whether trials of the same
values then repeat on a GPU they share is benchmarks/shared_determinism.py's to measure; on the CPU the
kernels add in one order already, so a deterministic trial trains the default's losses."""

import os

import pytest
import torch

from search.config import SweepConfig
from search.packing import TrialPlanner
from tests.conftest import tiny_sweep_dict
from tests.helpers import RecordingSession
from trainables.model import use_deterministic_algorithms

pytestmark = pytest.mark.sweep


def _train_losses(model, tmp_path, deterministic):
    from trainables.trial import run_trial

    sweep = SweepConfig.model_validate(tiny_sweep_dict(
        model, tmp_path / "results", data={"max_train_examples": 16, "max_validation_examples": 2},
        evaluation={"max_new_tokens": 2, "rung_examples": "all"}, scheduler={"max_rungs": 1},
        training={"steps_per_rung": 3, "deterministic": deterministic}))
    values = {"lora_r": 4, "lora_alpha": 8, "max_length": 192, "learning_rate": 1e-3}
    session = RecordingSession()
    run_trial(TrialPlanner.alone_on_this_machine(sweep).trial_config(values), session=session)
    return [(rung["first_step_loss"], rung["train_loss"], rung["eval_loss"]) for rung in session.rungs]


def test_a_deterministic_trial_trains_the_defaults_losses_on_the_cpu_and_each_trial_sets_the_switch_its_way(
        tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # the deterministic trial sets it
    try:
        default = _train_losses(tiny_model_path, tmp_path / "a", deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
        deterministic = _train_losses(tiny_model_path, tmp_path / "b", deterministic=True)
        # on after the trial: the process keeps it until the next trial sets its own; torch's fill of new
        # memory off (training.fill_uninitialized_memory's default), torch's default again after the next
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert deterministic == default and len(default) == 1
        _train_losses(tiny_model_path, tmp_path / "c", deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert torch.utils.deterministic.fill_uninitialized_memory is True
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # cuBLAS's fixed workspace slows default steps
    finally:
        use_deterministic_algorithms(False)  # the rest of this process's tests run as they would


def test_the_switch_fixes_cublas_workspace_only_while_on_and_keeps_one_the_user_set(monkeypatch):
    # cuBLAS reads it after its first matmul too, and it cost a default step 0.77x on an H100: a kept
    # worker's default trial after a deterministic one must not find it still set
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        use_deterministic_algorithms(False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        use_deterministic_algorithms(True)
        use_deterministic_algorithms(True)  # the next deterministic trial in the same worker
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        use_deterministic_algorithms(False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's, either deterministic value
        use_deterministic_algorithms(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        use_deterministic_algorithms(False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # the user's, though the switch's value
        use_deterministic_algorithms(True)
        use_deterministic_algorithms(False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        use_deterministic_algorithms(False)


def test_the_switch_turns_inductors_deterministic_mode_with_it_and_off_keeps_the_users_environment(monkeypatch):
    # compiled layers: Inductor would otherwise time kernel configs on the device and keep the fastest
    monkeypatch.delenv("TORCHINDUCTOR_DETERMINISTIC", raising=False)
    try:
        use_deterministic_algorithms(True)
        assert torch._inductor.config.deterministic
        use_deterministic_algorithms(False)
        assert not torch._inductor.config.deterministic
        monkeypatch.setenv("TORCHINDUCTOR_DETERMINISTIC", "1")
        use_deterministic_algorithms(False)
        assert torch._inductor.config.deterministic
    finally:
        monkeypatch.delenv("TORCHINDUCTOR_DETERMINISTIC", raising=False)  # an early failure must not hide under a KeyError
        use_deterministic_algorithms(False)


def test_the_switch_leaves_new_memory_unfilled_unless_asked_and_off_gives_torch_its_default_back():
    # torch fills what torch.empty hands out while deterministic kernels are on, unless told not to: on an
    # H100 that slowed deterministic steps to 0.89x and changed none of their losses
    try:
        use_deterministic_algorithms(True)
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        use_deterministic_algorithms(True, fill_uninitialized_memory=True)
        assert torch.utils.deterministic.fill_uninitialized_memory is True
        assert torch.empty(4).isnan().all()  # torch fills floats with NaN
        use_deterministic_algorithms(True)
        use_deterministic_algorithms(False)
        assert torch.utils.deterministic.fill_uninitialized_memory is True
    finally:
        use_deterministic_algorithms(False)
