"""A trial whose worker process is killed mid-training is restarted by Tune from its last
checkpoint and continues from the saved step with the saved adapter: its final adapter equals
that of the same trial run without interruption, beside it in the same sweep (two trials of the
same values train the same on a CPU: benchmarks/shared_determinism.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import ROOT, run_cli, trial_dirs

pytestmark = pytest.mark.sweep

STEPS_PER_RUNG = 16


def _config(model, storage, name):
    return tiny_sweep_dict(
        model, storage, name=name, trial_retries=1,
        training={"steps_per_rung": STEPS_PER_RUNG, "micro_batch_size": 2, "gradient_checkpointing": False},
        # two trials of the same values at once: one is killed, the other is the uninterrupted reference
        search={"lora_r": {"choice": [4]}, "lora_alpha": 8, "learning_rate": 1.0e-3, "max_length": 192,
                "num_trials": 2, "max_concurrent_trials": 2},
        scheduler={"max_rungs": 3, "grace_period": 3},  # no early stop: both run every rung
    )


def _rows(trial):
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]


def _final_adapter(trial):
    from safetensors.torch import load_file

    last = max(trial.glob("checkpoint_*"))
    return load_file(str(last / "adapter_model.safetensors"))


def test_a_killed_trial_resumes_from_its_checkpoint_with_the_saved_step_and_adapter(tiny_model_path, tmp_path):
    storage = tmp_path / "results"
    sweep = subprocess.Popen([sys.executable, "-m", "search", "run",
                              str(write_config(tmp_path / "killed.yaml", _config(tiny_model_path, storage, "killed")))],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_pid = killed_trial = None
    deadline = time.time() + 300
    while killed_pid is None and time.time() < deadline and sweep.poll() is None:
        for result in (storage / "killed").glob("*/result.json"):
            if result.read_text().strip():
                killed_pid, killed_trial = json.loads(result.read_text().splitlines()[0])["pid"], result.parent
                os.kill(killed_pid, signal.SIGKILL)  # the trial's worker, mid rung 2
                break
        time.sleep(0.05)
    running = run_cli("report", storage / "killed")  # while the sweep is still going
    assert running.returncode == 0, running.stderr
    assert "2 trials" in running.stdout
    output, _ = sweep.communicate(timeout=300)
    assert killed_pid is not None, output[-3000:]
    assert sweep.returncode == 0, output[-3000:]

    (ref_trial,) = [t for t in trial_dirs(storage / "killed") if t != killed_trial]
    rows = _rows(killed_trial)
    assert rows[0]["pid"] == killed_pid and rows[-1]["pid"] != killed_pid  # a new process finished it
    assert all(r["pid"] != killed_pid for r in _rows(ref_trial))  # the reference ran on, elsewhere
    assert [r["step"] for r in rows] == [STEPS_PER_RUNG, 2 * STEPS_PER_RUNG, 3 * STEPS_PER_RUNG]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert [r["tokens_seen"] for r in rows] == [r["tokens_seen"] for r in _rows(ref_trial)]

    resumed, uninterrupted = _final_adapter(killed_trial), _final_adapter(ref_trial)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert resumed[name].allclose(tensor, atol=1e-6), name
