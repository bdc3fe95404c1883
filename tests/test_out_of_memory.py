"""Out-of-memory trials: named cause, one retry at half the micro-batch and twice the
accumulation from the last checkpoint, and a trial that still fails leaves its neighbours running.
CI has no GPU, so a test-only switch raises CUDA's OutOfMemoryError; what follows is the real path."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import ROOT, run_cli, trial_dirs

pytestmark = pytest.mark.sweep


def _run(config_path, oom_setting):
    env = {**os.environ, "QLORA_SWEEP_TEST_OOM_ABOVE_TOKENS": oom_setting}
    return subprocess.run([sys.executable, "-m", "search", "run", str(config_path)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


def test_an_oom_trial_retries_at_half_the_micro_batch_from_its_checkpoint_and_one_still_out_of_memory_fails_alone(
        tiny_model_path, tmp_path):
    """Two trials side by side, both out of memory from rung 2 on at micro-batch 4. Halved, the
    max_length 160 one fits (2 x 160 <= 350) and trains on from its rung-1 checkpoint; the 192 one
    (2 x 192 > 350) fails after its retry with its cause, and the sweep completes with the other.
    (One sweep for both: each costs CI a driver, a Ray and fresh workers. A trial already at
    micro-batch 1, which is never halved and fails without a retry, is no longer run here.)"""
    config = tiny_sweep_dict(
        tiny_model_path, tmp_path / "results", name="oom", trial_retries=0,
        training={"steps_per_rung": 2, "micro_batch_size": 4, "gradient_accumulation_steps": 1,
                  "gradient_checkpointing": False},
        # Seed 0's TPE draws max_length 160 then 192: one trial of each, side by side.
        search={"max_length": {"choice": [160, 192]}, "num_trials": 2, "seed": 0},
        scheduler={"max_rungs": 3, "grace_period": 3},  # no early stop: the survivor runs every rung
    )
    done = _run(write_config(tmp_path / "s.yaml", config), "350@2")  # every step from rung 2 on, at 4 x 160 and up
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # completes, best from the survivor
    output = done.stdout + done.stderr
    experiment = tmp_path / "results" / "oom"
    assert f"1 of 2 trials failed: qlora-sweep report {experiment}" in done.stdout, done.stdout[-2000:]
    for length in (160, 192):
        assert f"out of GPU memory at micro_batch_size=4, max_length={length}" in output
    assert "retrying from the last checkpoint with micro_batch_size=2, gradient_accumulation_steps=2" in output

    lengths = {d.name: json.loads((d / "params.json").read_text())["max_length"] for d in trial_dirs(experiment)}
    assert sorted(lengths.values()) == [160, 192], lengths
    report = run_cli("report", experiment).stdout
    for line in report.splitlines()[2:]:
        assert ("ERROR" in line) == (" 192 " in f" {line} "), report
    for trial in trial_dirs(experiment):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        if lengths[trial.name] == 192:
            assert (trial / "error.txt").read_text().count(
                "out of GPU memory at micro_batch_size=2, max_length=192") == 1
            assert "(after retrying from micro_batch_size=4)" in (trial / "error.txt").read_text()
            assert [r["step"] for r in rows] == [2]  # rung 1 reported, then out of memory twice
            continue
        assert not (trial / "error.txt").exists()
        assert [r["step"] for r in rows] == [2, 4, 6]  # resumed at the rung-1 checkpoint, not from 0
        assert [r["micro_batch_size"] for r in rows] == [4, 2, 2]
        assert [r["gradient_accumulation_steps"] for r in rows] == [1, 2, 2]
        # The same effective batch: each rung still sees 2 steps x 4 examples' worth of tokens.
        per_rung = [b["tokens_seen"] - a["tokens_seen"] for a, b in zip([{"tokens_seen": 0}] + rows, rows)]
        assert per_rung[1] == per_rung[2] and per_rung[1] > 0
