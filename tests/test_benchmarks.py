"""The trial-speed benchmark runs end to end on a tiny shape on the CPU, so it cannot rot."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.sweep


def test_the_trial_speed_benchmark_measures_both_sides_and_writes_json(tiny_model_path, tmp_path):
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/trial_speed.py", "--shape", "tiny", "--data", "trainables/samples",
         "--tokenizer", str(tiny_model_path), "--out", str(out), "--micro-batch-size", "2", "--max-length", "384",
         "--steps", "2", "--warmup", "1", "--train-examples", "16", "--eval-examples", "4",
         "--plain-eval-examples", "2", "--max-new-tokens", "4",
         "--quality-model", str(tiny_model_path), "--quality-seeds", "0", "1", "--quality-steps", "2",
         "--quality-eval-examples", "2", "--variant", "fused_lm_head=true,micro_batch_size=1", "--plain-again"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for side in ("plain", "qlora_sweep"):
        assert result[side]["tokens_per_s"] > 0 and result[side]["real_tokens"] > 0
        assert result[side]["rouge_eval_s"] > 0
    assert result["plain"]["rouge_eval_extrapolated_from"] == 2 and result["eval_examples"] == 4
    assert result["qlora_sweep"]["merged_copy"]["rouge_eval_s"] > 0  # the evaluation.merged_copy lever, timed too
    assert result["qlora_sweep"]["padding_free"] is True
    assert result["qlora_sweep"]["gradient_checkpointing"] is False  # auto on CPU
    assert result["speedup"] > 0
    assert result["qlora_sweep"]["merged_copy_by_default"] is False  # auto, on CPU
    variant = result["variants"]["fused_lm_head=true,micro_batch_size=1"]
    assert variant["tokens_per_s"] > 0 and variant["micro_batch_size"] == 1
    assert result["plain_again"]["tokens_per_s"] > 0
    assert [run["seed"] for run in result["quality_rougeL"]] == [0, 1]
    assert all(0 <= run[side] <= 1 for run in result["quality_rougeL"] for side in ("plain", "qlora_sweep"))
