"""The trial-speed benchmark runs end to end on a tiny shape on the CPU, so it cannot rot."""

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import ROOT, rate_and_decay_by_parameter

pytestmark = pytest.mark.sweep


def test_the_trial_speed_benchmark_alternates_the_sides_and_writes_the_summary(tiny_model_path, tmp_path):
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/trial_speed.py", "--shape", "tiny", "--data", "trainables/samples",
         "--tokenizer", str(tiny_model_path), "--out", str(out), "--micro-batch-size", "2", "--max-length", "384",
         "--steps", "2", "--segment-warmup", "1", "--warmup-s", "0", "--rounds", "2", "--train-examples", "16",
         "--eval-examples", "4", "--plain-eval-examples", "2", "--max-new-tokens", "4",
         "--one-gpu-micro-batch-size", "4",
         "--quality-model", str(tiny_model_path), "--quality-seeds", "0", "1", "--quality-steps", "2",
         "--quality-eval-examples", "2",
         # one compiled side (each costs CI 20-40 s of tracing): that a later trial's layers compile code of
         # their own is tests/test_compile.py's kept-worker test
         "--variant", "fused_lm_head=true,micro_batch_size=1,compile_layers=true,gradient_checkpointing=true,"
         "activations_kept=0.5",
         "--quality-variant", "fused_lm_head=true", "--quality-variant", "liger_kernels=true",
         "--quality-variant", "packing=true",
         "--profile-steps", "1", "--profile-generation",
         "--profile-side", "plain", "--profile-side", "qlora_sweep",
         "--continuous-batching-eval"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"equal_memory_speedup", "one_gpu_speedup", "eval_500_s", "plain_tokens_per_s",
                                      "protocol"}
    protocol = result["summary"]["protocol"]
    assert protocol["rounds"] == 2
    # An untimed segment of every side came first, even with no warm-up time asked for: a side's
    # first segment compiles, which no timed round may include
    assert all(len(side["warm_up_segment_s"]) >= 1 for side in result["sides"].values())
    assert protocol["evaluation"] == "timed"  # the summary was rewritten once the evaluation had run
    sides = result["sides"]
    kept_half = "variant fused_lm_head=true,micro_batch_size=1,compile_layers=true,gradient_checkpointing=true," \
                "activations_kept=0.5"
    assert protocol["order"] == ["plain", "qlora_sweep", "one_gpu", kept_half]
    rounds = [line for line in done.stderr.splitlines() if "] round " in line]
    assert [line.split("] round ")[1].split(":")[0] for line in rounds] == [
        f"{r} {name}" for r in (1, 2) for name in protocol["order"]]  # A B C D A B C D: alternating
    for side in sides.values():
        assert len(side["tokens_per_s_each"]) == 2
        assert side["tokens_per_s_min"] <= side["tokens_per_s"] <= side["tokens_per_s_max"]
    assert result["summary"]["plain_tokens_per_s"] == round(sides["plain"]["tokens_per_s"])
    # The summary takes the fastest trial side within plain's memory (every side is, on a CPU) and
    # the fastest of all, and names them; the default's own figures stay beside.
    trial_sides = [name for name in protocol["order"] if name != "plain"]
    fastest = max(trial_sides, key=lambda name: sides[name]["tokens_per_s"])
    assert protocol["equal_memory_side"] == protocol["one_gpu_side"] == fastest
    assert result["summary"]["equal_memory_speedup"] == pytest.approx(
        sides[fastest]["tokens_per_s"] / sides["plain"]["tokens_per_s"], rel=1e-2)
    assert protocol["default_equal_memory_speedup"] == pytest.approx(
        sides["qlora_sweep"]["tokens_per_s"] / sides["plain"]["tokens_per_s"], rel=1e-2)
    evaluations = {f"{name}: {path}": sides[name][key] for name in ("qlora_sweep", "one_gpu")
                   for path, key in (("fixed batches", "rouge_eval_s"), ("continuous batching", "rouge_eval_continuous_s"))}
    # timed on the 4 dialogues of --eval-examples, scaled to 500 and marked so
    assert result["summary"]["eval_500_s"] == pytest.approx(min(evaluations.values()) * 500 / 4, abs=0.06 * 125)
    assert protocol["eval_500_path"] == min(evaluations, key=evaluations.get)
    assert protocol["eval_500_extrapolated_from"] == 4
    # no compiled decoding on a CPU (no merged copy): a later rung's evaluation is the first's path
    assert (protocol["later_rungs_eval_500_s"], protocol["later_rungs_eval_500_path"]) == (
        result["summary"]["eval_500_s"], protocol["eval_500_path"])
    assert protocol["equal_memory_eval_500_s"] == result["summary"]["eval_500_s"]  # every side within plain's, on CPU
    assert "rouge_eval_s" not in sides[kept_half]  # not an --eval-side
    for name in ("qlora_sweep", "one_gpu"):  # continuous batching timed beside, and it scored the same summaries
        assert sides[name]["rouge_eval_continuous_s"] > 0
        assert sides[name]["rougeL_continuous"] == sides[name]["rougeL"]
    assert sides["plain"]["rouge_eval_extrapolated_from"] == 2 and result["eval_examples"] == 4
    assert sides["qlora_sweep"]["padding_free"] is True and sides["plain"]["padding_free"] is False
    assert sides["qlora_sweep"]["gradient_checkpointing"] is False  # auto on CPU
    assert sides["one_gpu"]["micro_batch_size"] == 4
    compiled = sides[kept_half]
    assert (compiled["gradient_checkpointing"], compiled["activations_kept"], compiled["micro_batch_size"]) == (
        True, 0.5, 1)
    # What its layers compiled is recorded with the side; on the CPU they compile whole, recompute included
    assert compiled["compiled"]["graphs"] >= 1 and compiled["compiled"]["graph_breaks"] == {}
    assert "compiled" not in sides["plain"] and "compiled" not in sides["qlora_sweep"]
    quality = result["quality_rougeL"]
    assert [run["seed"] for run in quality["runs"]] == [0, 1]
    for run in quality["runs"]:
        assert all(0 <= run[side] <= 1 for side in ("plain", "qlora_sweep", "variant fused_lm_head=true"))
        assert run["minus_plain"]["qlora_sweep"] == pytest.approx(run["qlora_sweep"] - run["plain"])
        # Trained alike (same rows in the same order, same init and schedule): only rounding apart
        assert all(0 < distance < 0.02 for distance in run["adapter_vs_plain"].values()), run["adapter_vs_plain"]
    # A variant that cannot train here (Liger's kernels need a GPU) is recorded, seed by seed, and
    # the check goes on to the next side instead of losing the others
    for run in quality["runs"]:
        assert "Liger" in run["errors"]["variant liger_kernels=true"] and "variant liger_kernels=true" not in run
    assert set(quality["within_half_a_point"]) == {"qlora_sweep", "variant fused_lm_head=true",
                                                   "variant liger_kernels=true", "variant packing=true"}
    # Packed rows are fewer than the examples: the in-order sampler walks the Trainer's own rows.
    # Sides trained alike trained on the same tokens; the packed side's micro-batches held more.
    for run in quality["runs"]:
        assert 0 <= run["variant packing=true"] <= 1
        tokens = run["real_tokens_trained"]
        assert tokens["qlora_sweep"] == tokens["plain"] == tokens["variant fused_lm_head=true"]
        # 2 x 384 tokens hold about 3 of the sample's 211-283-token examples, where unpacked hold 2
        assert tokens["variant packing=true"] > 1.15 * tokens["plain"]
    assert quality["within_half_a_point"]["variant liger_kernels=true"] is False
    profile = result["profile"]
    for name in ("plain", "qlora_sweep"):  # where the host waits for the GPU: nothing to wait for on a CPU
        assert "syncs_per_step" in profile[name] and profile[name]["syncs_per_step"] is None
    generation = profile["generation"]  # one generation batch of qlora_sweep (--profile-generation's default)
    assert generation["side"] == "qlora_sweep" and generation["dialogues"] == 4 and generation["merged_copy"] is False
    # phases timed alone: a batch cut to one new token, the whole batch, and from both the cost of a decoded token
    assert 0 < generation["one_new_token_s"] and 0 < generation["whole_batch_s"]
    assert generation["per_decoded_token_ms"] == pytest.approx(
        1000 * (generation["whole_batch_s"] - generation["one_new_token_s"]) / 3, abs=0.02)
    assert generation["profiled_new_tokens"] == 4  # --profile-new-tokens (16) cut to --max-new-tokens
    assert generation["host"]["by_self"] and "per batch" in generation["host"]["note"]
    for breakdown in (profile["plain"], profile["qlora_sweep"], generation["kernels"]):
        assert sum(breakdown["by_category"].values()) == pytest.approx(1, abs=0.01)
        assert breakdown["by_category"]["matmul"] > 0 and breakdown["top"]
    assert profile["plain"]["by_category"]["4-bit dequantization"] > 0  # the 4-bit layers were profiled
    assert not [name for name in profile if name.startswith("one_gpu") or name.startswith("variant")]  # --profile-side


def test_compile_check_finds_compiled_layers_whole_with_recompute_and_no_eager_checkpoint(tiny_model_path, tmp_path):
    out = tmp_path / "compile.json"
    done = subprocess.run([sys.executable, "benchmarks/compile_check.py", "--model", str(tiny_model_path), "--out",
                           str(out), "--recompute"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["recompute"] is True and result["checkpoint"] == "none: the compiler recomputes"
    # One compiled call forward and one backward a layer, nothing between them in Python: no break,
    # and none of torch.utils.checkpoint's eager hooks (transformers 5.17's own checkpoint ran 128 a
    # layer a step here, benchmarks/results/2026-12-02-compile-check-cpu)
    assert result["graph_breaks"] == {} and result["eager_checkpoint_hooks_per_step"] == 0
    assert result["compiled_calls_per_step"] == 2 * result["layers"]


def test_the_benchmark_puts_the_llama_module_back_after_a_side_has_patched_it():
    """Liger's kernels replace transformers' Llama RoPE for the whole process when a side's Trainer
    starts; the sides share the benchmark's process, so each side's training run puts the module
    back (left, Liger's RoPE split every later compiled side's layers into pieces)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import trial_speed
    from transformers.models.llama import modeling_llama

    original = modeling_llama.apply_rotary_pos_emb
    with trial_speed.modeling_module_restored():
        modeling_llama.apply_rotary_pos_emb = lambda q, k, cos, sin, **kwargs: (q, k)  # as Liger's apply does
        modeling_llama.LlamaRMSNorm = object
    assert modeling_llama.apply_rotary_pos_emb is original and modeling_llama.LlamaRMSNorm.__name__ == "LlamaRMSNorm"


def test_the_gpu_sharing_benchmark_times_n_trials_in_processes_of_their_own_together(tiny_model_path, tmp_path):
    """benchmarks/gpu_sharing.py (issue 10, item 4): each setting's workers load once and stay; a run's
    N workers time their steps together, and the aggregate is the sum of what each trained a second;
    settings take turns within a round."""
    out = tmp_path / "sharing.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_sharing.py", "--shape", "tiny", "--data", "trainables/samples",
         "--tokenizer", str(tiny_model_path), "--out", str(out), "--setting", "eager:fused_lm_head=false",
         "--trials", "eager=1,2", "--setting", "single:fused_lm_head=false,micro_batch_size=1",
         "--rounds", "1", "--warmup-s", "0", "--steps", "2", "--segment-warmup", "1",
         "--micro-batch-size", "2", "--max-length", "256", "--train-examples", "16",
         "--model-cache", str(tmp_path / "models")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(run["setting"], run["trials"]) for run in result["runs"]] == [("eager", 1), ("single", 1), ("eager", 2)]
    # 3 workers (2 eager, 1 single) loaded once for 4 runs, the untimed warm-up's included
    assert done.stderr.count(": loaded") == 3, done.stderr[-3000:]
    pair = result["runs"][2]
    assert len(pair["tokens_per_s"]) == 2 and all(rate > 0 for rate in pair["tokens_per_s"])
    assert pair["aggregate_tokens_per_s"] == pytest.approx(sum(pair["tokens_per_s"]), abs=1)
    assert 0 < pair["overlap"] <= 1  # the two timed windows ran at the same time, not one after the other
    assert pair["predicted_peak_gb"] is None  # the planner predicts GPU memory only
    alone = result["runs"][0]["aggregate_tokens_per_s"]
    two = result["summary"]["eager"]["2"]
    assert two["contention"] == pytest.approx(pair["aggregate_tokens_per_s"] / (2 * alone), abs=1e-3)


def test_the_gpu_sharing_benchmark_refuses_trials_of_a_setting_it_was_not_given_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_sharing.py", "--data", "x", "--tokenizer", "x", "--out", str(tmp_path / "o"),
         "--setting", "eager:fused_lm_head=false", "--trials", "eagre=1,2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--trials eagre=...: no --setting is named 'eagre' (named: eager)" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_tiny_sweep_timer_refuses_a_baseline_that_is_not_a_checkout_in_one_line(tiny_model_path, tmp_path):
    """(Its timing loop is two CLI sweeps a round, 50-60 s even at one round: its committed run,
    benchmarks/results/2026-12-04-sweep-start, is what exercises it.)"""
    done = subprocess.run([sys.executable, "benchmarks/tiny_sweep_time.py", "--model", str(tiny_model_path),
                           "--baseline", str(tmp_path), "--out", str(tmp_path / "o.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"tiny_sweep_time: --baseline {tmp_path}: not a checkout of this repository"]
    assert not (tmp_path / "o.json").exists()
    missing = tmp_path / "no-venv" / "python"
    done = subprocess.run([sys.executable, "benchmarks/tiny_sweep_time.py", "--model", str(tiny_model_path),
                           "--baseline", str(ROOT), "--baseline-python", str(missing), "--out", str(tmp_path / "o.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"tiny_sweep_time: --baseline-python {missing}: not an executable"]
    assert not (tmp_path / "o.json").exists()


def test_compile_cost_times_a_trials_first_steps_one_by_one_and_writes_nothing_beside_its_json(tiny_model_path,
                                                                                             tmp_path):
    """benchmarks/compile_cost.py: each step timed alone after the side loads, what dynamo compiled
    in it beside it. The out folder holds the JSON alone: a device run brings that folder back whole,
    and a Trainer checkpoint beside it (2026-12-02: a 1B adapter's) made the reply too large to come back."""
    out_dir = tmp_path / "res"
    out_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "benchmarks/compile_cost.py", "--shape", "tiny", "--data", "trainables/samples",
         "--tokenizer", str(tiny_model_path), "--out", str(out_dir / "cost.json"), "--setting",
         "compile_layers=false,fused_lm_head=false", "--steps", "3", "--micro-batch-size", "2", "--max-length", "256",
         "--train-examples", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [path.name for path in out_dir.iterdir()] == ["cost.json"]
    result = json.loads((out_dir / "cost.json").read_text())
    assert result["side"]["compile_layers"] is False and result["side"]["micro_batch_size"] == 2
    assert [row["step"] for row in result["steps"]] == [1, 2, 3]
    assert all(row["s"] > 0 and row["tokens"] > 0 and row["graphs"] == 0 for row in result["steps"])
    assert result["first_step_s"] == result["steps"][0]["s"] and result["compile_s_estimate"] >= 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compile_cost
    import trial_speed

    assert compile_cost.SHAPES == tuple(trial_speed.SHAPES)  # its own list checks --shape before torch loads


def test_the_smollm2_shape_is_smollm2_135m_with_its_134_5_million_parameters():
    """--shape smollm2-135m times the sweep benchmark's model with random weights (no weights to stage):
    built on the meta device from the shape, it has SmolLM2-135M's parameter count, tied head included."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import trial_speed

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**trial_speed.SHAPES["smollm2-135m"]))
    assert model.config.head_dim == 64 and model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


@pytest.mark.parametrize("arguments, message", [
    (["--steps", "1"], "--steps 1: at least 2"),
    (["--setting", "compile_layer=true"], "--setting: compile_layer is no training setting"),
    (["--setting", "compile_layers"], "--setting 'compile_layers': expected field=value pairs"),
])
def test_compile_cost_refuses_bad_arguments_in_one_line_before_it_builds_anything(arguments, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/compile_cost.py", "--data", "x", "--tokenizer", "x", "--out",
         str(tmp_path / "o.json"), *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_first_rung_runs_trials_one_after_another_in_one_process_and_times_every_step(tiny_model_path, tmp_path):
    """benchmarks/first_rung.py: the recipe's trial run by run_trial itself, three times in one process
    (the later two in the worker the first left: warm), `--threads alternate` putting the cold and
    the third in the kept trial thread and the second in a new one; each step timed, each
    evaluation's generations counted, the chosen steps profiled, each side's warm first rung set
    against its second; the out folder holds the JSON alone."""
    from tests.conftest import tiny_sweep_dict, write_config

    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "r", data={"max_train_examples": 16, "max_validation_examples": 3},
        scheduler={"max_rungs": 2, "grace_period": 1}, evaluation={"max_new_tokens": 4}))
    out_dir = tmp_path / "res"
    done = subprocess.run(
        [sys.executable, "benchmarks/first_rung.py", str(config), "--out", str(out_dir / "first.json"), "--trials", "3",
         "--profile-steps", "1,3", "--python-profile-trial", "1", "--threads", "alternate"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [path.name for path in out_dir.iterdir()] == ["first.json"]
    result = json.loads((out_dir / "first.json").read_text())
    assert result["hyperparameters"] == {"lora_r": 32, "lora_alpha": 32, "learning_rate": 2.0e-4, "max_length": 512}
    first, second, third = result["trials"]
    assert [r["warm_start"] for t in (first, second, third) for r in t["rungs"]] == [False, False, True, True, True, True]
    for trial in (first, second, third):
        assert [step["step"] for step in trial["steps"]] == [1, 2, 3, 4]  # 2 rungs of 2 steps
        assert all(step["s"] > 0 and step["tokens"] > 0 for step in trial["steps"])
        assert sorted(trial["profiles"]) == ["1", "3"]
        assert all(p["top_host"] and p["wall_s"] > 0 for p in trial["profiles"].values())
        for profile in trial["profiles"].values():  # every kernel's own time (aten ops' on a CPU): all of it
            assert sum(k["s"] for k in profile["kernels"]["top"]) == pytest.approx(profile["kernels"]["counted_s"],
                                                                                 abs=2e-3)
        for rung, (began, ended) in zip(trial["rungs"], [(0, 2), (2, 4)]):
            assert rung["step_s_first"] == pytest.approx(trial["steps"][began]["s"], abs=0.05)
            assert rung["train_s"] >= sum(step["s"] for step in trial["steps"][began:ended]) * 0.9
            assert rung["generate_calls"] and all(0 < call["new_tokens"] <= 4 for call in rung["generate_calls"])
            assert sum(call["batch"] for call in rung["generate_calls"]) == rung["rouge_examples"]
    assert [(row["trial"], row["threads"], row["rung"]) for row in result["summary"]] == [
        (1, "kept", 1), (1, "kept", 2), (2, "new", 1), (2, "new", 2), (3, "kept", 1), (3, "kept", 2)]
    assert "python_profile" not in second
    if sys.version_info < (3, 12):  # cProfile follows the trial's thread alone: its whole run is the heaviest
        assert first["python_profile"][0]["function"].endswith("(run_trial)"), first["python_profile"][:3]
        assert first["python_profile_threads"] == "the trial's thread"
    else:  # every thread's, which can lose the trial's outer calls (run_trial was not listed on the H100's host)
        assert first["python_profile_threads"] == "every thread (Python 3.12+)" and first["python_profile"]
    assert first["thread"] == third["thread"] != second["thread"]  # the kept trial thread, and a new one
    assert all(step["before_s"] >= 0 for step in first["steps"] + second["steps"] + third["steps"])
    assert result["kernel_cost_by_side"] == {}  # no --candidate: no sides to compare kernels between
    ratios = result["warm_first_rung"]  # the warm trials only: the cold one is no side of the A/B
    assert sorted(ratios) == ["kept", "new"] and ratios["new"]["trials"] == ratios["kept"]["trials"] == 1
    for side, trial in (("new", second), ("kept", third)):
        expected = trial["rungs"][0]["rung_s"] / trial["rungs"][1]["rung_s"]
        assert ratios[side]["rung_s"] == {"median": round(expected, 3), "min": round(expected, 3),
                                          "max": round(expected, 3)}
        assert set(ratios[side]) == {"trials", "rung_s", "train_s", "eval_loss_s", "rouge_s", "later_rung"}
        assert ratios[side]["later_rung"]["step_s_median"]["median"] == round(trial["rungs"][1]["step_s_median"], 3)


def test_first_rung_candidate_ab_alternates_a_setting_over_warm_trials_at_lengths_not_run_before(tiny_model_path,
                                                                                                 tmp_path):
    """`--candidate model.cudnn_attention=false --max-lengths ...`: the cold trial and every other warm one
    run the baseline (--set), the rest the candidate, each planned from its side's config and running
    with it (the trial itself switches SDPA's cuDNN backend), each trial at its own max_length; the
    summary gives each side's first rung against its second and its second rung's pace."""
    from tests.conftest import tiny_sweep_dict, write_config

    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "r", data={"max_train_examples": 16, "max_validation_examples": 3},
        scheduler={"max_rungs": 2, "grace_period": 1}, evaluation={"max_new_tokens": 4},
        training={"lr_scheduler": "constant", "warmup_steps": 0}))
    out = tmp_path / "res" / "ab.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/first_rung.py", str(config), "--out", str(out), "--trials", "3",
         "--profile-steps", "3", "--set", "model.cudnn_attention=true", "--candidate", "model.cudnn_attention=false",
         "--max-lengths", "512,448,384", "--learning-rate", "1.5e-3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["candidate"] == ["model.cudnn_attention=false"] and result["max_lengths"] == [512, 448, 384]
    trials = result["trials"]
    assert [(t["side"], t["threads"], t["max_length"]) for t in trials] == [
        ("baseline", "kept", 512), ("candidate", "kept", 448), ("baseline", "kept", 384)]
    assert [r["warm_start"] for t in trials for r in t["rungs"]] == [False, False, True, True, True, True]
    assert [t["plan"]["cudnn_attention"] for t in trials] == [True, False, True]
    assert [t["cudnn_attention"] for t in trials] == [True, False, True]  # what torch had when each trained
    assert [t["deterministic"] for t in trials] == [False, False, False]  # training.deterministic's default
    assert [t["fill_uninitialized_memory"] for t in trials] == [True, True, True]  # torch's, with the kernels off
    assert len({t["thread"] for t in trials}) == 1
    # --learning-rate: every step of every trial trained at it (the config's constant schedule), not the recipe's
    assert {step["lr"] for t in trials for step in t["steps"]} == {1.5e-3}
    assert result["hyperparameters"]["learning_rate"] == 1.5e-3
    assert [(row["side"], row["max_length"]) for row in result["summary"]] == [
        ("baseline", 512), ("baseline", 512), ("candidate", 448), ("candidate", 448), ("baseline", 384),
        ("baseline", 384)]
    ratios = result["warm_first_rung"]
    assert sorted(ratios) == ["baseline", "candidate"]
    for side, trial in (("candidate", trials[1]), ("baseline", trials[2])):
        assert ratios[side]["trials"] == 1
        assert ratios[side]["rung_s"]["median"] == round(trial["rungs"][0]["rung_s"] / trial["rungs"][1]["rung_s"], 3)
        assert ratios[side]["later_rung"]["rung_s"]["median"] == round(trial["rungs"][1]["rung_s"], 3)
    scores = result["rung_scores"]  # every trial of a side, the cold one too, rung by rung
    assert sorted(scores) == ["baseline", "candidate"] and sorted(scores["baseline"]) == ["1", "2"]
    losses = sorted(t["rungs"][1]["train_loss"] for t in (trials[0], trials[2]))
    assert scores["baseline"]["2"]["trials"] == 2
    assert scores["baseline"]["2"]["train_loss"] == {"median": round(sum(losses) / 2, 5), "min": round(losses[0], 5),
                                                     "max": round(losses[1], 5)}
    assert scores["candidate"]["1"]["rougeL"]["median"] == round(trials[1]["rungs"][0]["rougeL"], 5)
    assert scores["candidate"]["1"]["eval_loss"]["median"] == round(trials[1]["rungs"][0]["eval_loss"], 5)
    # each side's kernels in its warm trial's profiled step (the cold trial's left out), and their differences
    cost = result["kernel_cost_by_side"]
    kernels = {side: {k["name"]: k["s"] for k in trial["profiles"]["3"]["kernels"]["top"]}
               for side, trial in (("candidate", trials[1]), ("baseline", trials[2]))}
    for side in ("baseline", "candidate"):
        assert cost[side]["profiled_steps"] == 1
        assert cost[side]["kernel_s"] == pytest.approx(sum(kernels[side].values()), abs=1e-3)
        assert sum(cost[side]["by_category_s"].values()) == pytest.approx(cost[side]["kernel_s"], abs=1e-3)
    differences = cost["largest_differences"]
    assert differences and [abs(d["difference_s"]) for d in differences] == sorted(
        (abs(d["difference_s"]) for d in differences), reverse=True)
    for row in differences:
        assert row["baseline_s"] == round(kernels["baseline"].get(row["name"], 0.0), 5)
        assert row["candidate_s"] == round(kernels["candidate"].get(row["name"], 0.0), 5)


@pytest.mark.parametrize("arguments, message", [
    (["--trials", "0"], "--trials 0: at least 1"),
    (["--profile-steps", "0,2"], "--profile-steps [0, 2]: steps count from 1"),
    (["--profile-steps", "one"], "--profile-steps: invalid literal"),
    (["--trials", "2", "--python-profile-trial", "3"], "--python-profile-trial 3: 0 (none) to --trials"),
    (["--set", "training.micro_batch_size=0"], "training.micro_batch_size"),
    (["--candidate", "model.cudnn_attention=maybe"], "--candidate model.cudnn_attention=maybe: model.cudnn_attention: must be auto or true"),
    (["--candidate", "model.cudnn_attention=false", "--threads", "alternate"], "one A/B at a time"),
    (["--max-lengths", "512,0"], "--max-lengths 512,0: comma-separated whole numbers above 0"),
    (["--learning-rate", "0"], "--learning-rate 0.0: above 0 and below 1"),
])
def test_first_rung_refuses_bad_arguments_in_one_line_before_it_loads_anything(arguments, message, tiny_model_path,
                                                                              tmp_path):
    from tests.conftest import tiny_sweep_dict, write_config

    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(tiny_model_path, tmp_path / "r"))
    done = subprocess.run([sys.executable, "benchmarks/first_rung.py", str(config), "--out",
                           str(tmp_path / "res" / "o.json"), *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "res").exists()


def test_resume_keeps_a_scored_arm_reruns_a_cut_one_and_a_rerun_one_setting_each_earlier_run_aside(tmp_path):
    """sweep_benchmark.arm_to_run: with a test score the arm is kept, unless --rerun names it: then its
    folder is renamed .earlier-<time> and its score kept under that name; without one it was cut, and
    its folder is renamed .cut-<time>. Nothing is deleted."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import arm_to_run

    for name in ("plain-script-s0", "qlora-sweep-s0", "recipe-s0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(name)
    tests = {"plain_script": {"rougeL": 0.33}, "qlora_sweep": {"rougeL": 0.32}}
    assert arm_to_run(tmp_path, "plain_script", "plain-script-s0", tests, rerun=["qlora_sweep"]) is False
    assert arm_to_run(tmp_path, "qlora_sweep", "qlora-sweep-s0", tests, rerun=["qlora_sweep"]) is True
    assert arm_to_run(tmp_path, "recipe", "recipe-s0", tests, rerun=["qlora_sweep"]) is True  # no score: cut
    (earlier,) = tmp_path.glob("qlora-sweep-s0.earlier-*")
    (cut,) = tmp_path.glob("recipe-s0.cut-*")
    assert (earlier / "result.json").read_text() == "qlora-sweep-s0" and (cut / "result.json").read_text() == "recipe-s0"
    assert tests == {"plain_script": {"rougeL": 0.33}, earlier.name: {"rougeL": 0.32}}
    assert (tmp_path / "plain-script-s0").is_dir() and not (tmp_path / "qlora-sweep-s0").exists()


def test_the_shared_best_is_the_lower_of_the_two_bests_and_each_arms_first_time_at_it():
    """sweep_benchmark.shared_best: defined whichever arm's best is higher, where sooner_than_plain
    needs qlora-sweep to reach the plain script's best."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import shared_best

    plain = [(87.0, 0.28), (186.0, 0.3403), (369.0, 0.3516)]
    ours = [(81.0, 0.29), (95.0, 0.3241), (151.0, 0.3383)]
    assert shared_best(plain, ours) == pytest.approx(
        {"rougeL": 0.3383, "plain_script_s": 186.0, "qlora_sweep_s": 151.0, "sooner": 186.0 / 151.0})
    assert shared_best(ours, plain)["rougeL"] == 0.3383  # the same value with the arms' roles swapped
    assert shared_best([], ours) is None


def _by_hand_model_and_rows(tiny_model_path):
    """The by-hand arm's 4-bit model with LoRA (trial_speed.plain_model), its tokenizer and 4 training rows."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from transformers import AutoTokenizer

    from trainables.config import PromptConfig
    from trainables.prompt import encode_example
    from trial_speed import plain_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    rows = [encode_example(tokenizer, PromptConfig(), f"#Person1#: hello {i}", f"greeting {i}", 256) for i in range(4)]
    model = plain_model(tiny_model_path, 0, {"lora_r": 4, "lora_alpha": 4, "lora_dropout": 0.0,
                                             "target_modules": "all-linear"})
    return model, tokenizer, rows


@pytest.mark.parametrize("scheduler, warmup, after_rungs", [
    ("linear", 2, [0.75, 0.0]),  # warm-up over 2 steps, then down to 0 at the 6th: (6 - 3) / (6 - 2) after 3
    ("constant", 0, [1.0, 1.0]),
    ("warmup_stable_decay", 0, [1.0, 0.0]),  # held through the first rung, down to 0 over the last
])
def test_the_by_hand_arm_trains_on_the_configs_schedule_across_its_rungs(scheduler, warmup, after_rungs,
                                                                          tiny_model_path):
    """plain_ray_tune's rungs step one schedule over the whole budget (2 rungs x 3 steps here), the
    config's, as qlora-sweep's Trainer does: with a decaying one the rate is where the Trainer's
    formula has it at each rung's end, not back at its peak."""
    model, tokenizer, rows = _by_hand_model_and_rows(tiny_model_path)  # benchmarks/ on the path
    import torch

    from plain_ray_tune import lr_schedule
    from trainables.config import TrainingConfig
    from trial_speed import plain_train

    peak = 1e-3
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=peak)
    schedule = lr_schedule(optimizer, TrainingConfig(lr_scheduler=scheduler, warmup_steps=warmup, steps_per_rung=3),
                           total_steps=6)
    for rung, expected in enumerate(after_rungs):
        plain_train(model, rows, tokenizer, 2, 3, 0, peak, 0, optimizer, first_step=rung * 3, schedule=schedule)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(peak * expected), (scheduler, rung)


@pytest.mark.parametrize("ratio", [1, 16])
def test_the_by_hand_arm_trains_lora_b_at_the_configs_loraplus_ratio_times_lora_as_rate(ratio, tiny_model_path):
    """search.loraplus_lr_ratio reaches the by-hand arm too, through peft's LoRA+ optimizer as its docs build it,
    so that a space with it is the same search in both arms: every LoRA weight in the optimizer once, lora_B at
    the ratio times the rate through the schedule, the config's weight decay on all."""
    model, tokenizer, rows = _by_hand_model_and_rows(tiny_model_path)  # benchmarks/ on the path
    from plain_ray_tune import lr_schedule, plain_optimizer
    from trainables.config import TrainingConfig
    from trial_speed import plain_train

    peak = 1e-3
    optimizer = plain_optimizer(model, peak, ratio, weight_decay=0.01)
    schedule = lr_schedule(optimizer, TrainingConfig(lr_scheduler="linear", warmup_steps=0, steps_per_rung=2),
                           total_steps=4)
    plain_train(model, rows, tokenizer, 2, 2, 0, peak, 0, optimizer, first_step=0, schedule=schedule)

    rates = rate_and_decay_by_parameter(model, optimizer)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(rates) == trained and sum(len(g["params"]) for g in optimizer.param_groups) == len(trained)
    for name, (rate, decay) in rates.items():  # half-way down a linear schedule after the first rung
        assert rate == pytest.approx(0.5 * peak * (ratio if "lora_B" in name else 1)), name
        assert decay == 0.01, name


def test_the_by_hand_arm_sets_torchs_deterministic_kernels_as_the_config_says(monkeypatch):
    """training.deterministic reaches the by-hand arm too (its trials use none of qlora-sweep's code), so that
    with it both arms' reruns repeat; off, a trial in a reused worker gets torch's fastest kernels back."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    from plain_ray_tune import use_deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        use_deterministic_kernels(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.utils.deterministic.fill_uninitialized_memory is False  # as qlora-sweep's trials
        use_deterministic_kernels(True, fill_uninitialized_memory=True)
        assert torch.utils.deterministic.fill_uninitialized_memory is True
        use_deterministic_kernels(False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert torch.utils.deterministic.fill_uninitialized_memory is True  # torch's default back
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # as qlora-sweep's: it slows default steps
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's stays
        use_deterministic_kernels(True)
        use_deterministic_kernels(False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        use_deterministic_kernels(False)


def test_the_by_hand_arm_reports_its_rungs_mean_training_loss(tiny_model_path):
    """plain_train's train_loss is the mean of its steps' losses, as the Trainer logs a rung's: at a
    learning rate of 0 nothing moves, so it equals the mean of the same batches' losses taken alone."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from transformers import AutoTokenizer

    from trainables.config import PromptConfig
    from trainables.prompt import encode_example
    from trial_speed import _pad, plain_model, plain_train

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    rows = [encode_example(tokenizer, PromptConfig(), f"#Person1#: hello {'there ' * i}", f"greeting {i}", 256)
            for i in range(4)]
    model = plain_model(tiny_model_path, 0, {"lora_r": 4, "lora_alpha": 4, "lora_dropout": 0.0,
                                             "target_modules": "all-linear"})
    reported = plain_train(model, rows, tokenizer, 2, 2, 0, 0.0, 0, shuffle=False)["train_loss"]
    with torch.no_grad():
        alone = [float(model(**_pad(rows[i:i + 2], tokenizer.pad_token_id)).loss) for i in (0, 2)]
    assert alone[0] != pytest.approx(alone[1])  # two different batches, so a mean differs from either
    assert reported == pytest.approx(sum(alone) / 2, rel=1e-5)


def test_the_summary_pairs_the_trials_both_arms_trained_alike_rung_by_rung(tmp_path):
    """sweep_benchmark.same_hyperparameters: only hyperparameters both arms trained are paired, at the
    rungs both reached; the gaps are qlora-sweep's minus the by-hand arm's, split at a rate of 1e-3."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import same_hyperparameters

    def trial(arm: str, name: str, config: dict, rungs: list[tuple[float, float | None]], examples: int) -> None:
        (tmp_path / arm / name).mkdir(parents=True)
        lines = [json.dumps({"config": config, "training_iteration": i + 1, "rougeL": rouge, "train_loss": loss,
                             "rouge_examples": examples, "trial_id": name, "timestamp": i, "time_total_s": 1})
                 for i, (rouge, loss) in enumerate(rungs)]
        (tmp_path / arm / name / "result.json").write_text("\n".join(lines) + "\n")

    slow = {"lora_r": 64, "learning_rate": 2e-4, "max_length": 512}
    fast = {"lora_r": 64, "learning_rate": 2e-3, "max_length": 512}
    only_mine = {"lora_r": 16, "learning_rate": 2e-4, "max_length": 384}
    trial("plain", "a", slow, [(0.30, 1.50), (0.33, 1.20)], 100)
    trial("plain", "b", fast, [(0.31, 1.30)], 100)
    trial("ours", "a", slow, [(0.28, 1.60)], 64)  # stopped after rung 1
    trial("ours", "b", fast, [(0.32, 1.30)], 64)
    trial("ours", "c", only_mine, [(0.40, 1.00)], 64)

    compared = same_hyperparameters(tmp_path / "plain", tmp_path / "ours")
    assert [(p["hyperparameters"]["learning_rate"], p["rung"]) for p in compared["pairs"]] == [(2e-4, 1), (2e-3, 1)]
    rung = compared["by_rung"]["1"]
    assert rung["pairs"] == 2 and rung["rouge_examples"] == {"plain_script": [100], "qlora_sweep": [64]}
    assert rung["rougeL"]["mean_gap"] == pytest.approx((-0.02 + 0.01) / 2)
    assert (rung["rougeL"]["qlora_sweep_lower"], rung["rougeL"]["qlora_sweep_higher"]) == (1, 1)
    assert rung["learning_rate_below_0.001"]["train_loss"]["mean_gap"] == pytest.approx(0.10)
    assert rung["learning_rate_from_0.001"]["rougeL"]["mean_gap"] == pytest.approx(0.01)
    assert list(compared["by_rung"]) == ["1"]


def test_a_rung_cut_short_by_divergence_is_neither_a_first_rungs_time_nor_a_pair(tmp_path):
    """sweep_benchmark.rung_times and same_hyperparameters leave out a rung a trial diverged in: it ended
    after a few steps and generated nothing, so it would pass for a fast first rung and a ROUGE of 0."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import rung_times, same_hyperparameters

    values = {"lora_r": 64, "learning_rate": 9e-3, "max_length": 512}
    for arm, name, rows in [
            ("ours", "fresh", [{"rung_s": 30.0}, {"rung_s": 15.0}]),
            ("ours", "diverged", [{"rung_s": 4.0, "diverged": True, "rougeL": 0.0}]),
            ("plain", "diverged", [{"rougeL": 0.01}])]:
        (tmp_path / arm / name).mkdir(parents=True)
        lines = [json.dumps({"config": values if name == "diverged" else {"lora_r": 8}, "training_iteration": i + 1,
                             "warm_start": False, "rouge_examples": 100, "train_loss": 2.0, "trial_id": name,
                             "timestamp": i, **row}) for i, row in enumerate(rows)]
        (tmp_path / arm / name / "result.json").write_text("\n".join(lines) + "\n")
    timing = rung_times(tmp_path / "ours")
    assert (timing["first_rung_cold_s"], timing["later_rung_s"], timing["cold_first_rungs"]) == (30.0, 15.0, 1)
    assert timing["diverged_rungs"] == 1
    assert same_hyperparameters(tmp_path / "plain", tmp_path / "ours")["pairs"] == []


def test_the_arms_are_timed_against_each_other_only_when_both_searched_the_same_space(tmp_path):
    """sweep_benchmark.summarize: each searching arm's test score carries the search section it ran
    with (searched_space: the config with the arm's overrides, the seed aside). After one arm is run
    again on a changed space, or beside an arm whose space is not on record, no sooner_than_plain is
    given and the summary names why; the trials both trained alike still pair."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import describe_spaces, searched_space, summarize

    config = str(ROOT / "configs" / "sweep_benchmark_gpu.yaml")
    space = searched_space(config, ["search.seed=1"])
    assert "seed" not in space and space["num_trials"] == 12
    assert space == searched_space(config, ["search.seed=0"])  # the seed is the arms' shared, not the space
    widened = searched_space(config, ["search.lora_r={choice: [64, 512]}"])
    assert widened["lora_r"] == {"choice": [64, 512]} and widened != space

    folder = tmp_path / "seed0"
    values = {"lora_r": 64, "learning_rate": 2e-4, "max_length": 512}
    for arm, (rouge, seconds) in {"plain-script-s0": (0.33, 600), "qlora-sweep-s0": (0.34, 100)}.items():
        (folder / arm / "trial_a").mkdir(parents=True)
        (folder / arm / "trial_a" / "result.json").write_text(json.dumps(
            {"config": values, "training_iteration": 1, "rougeL": rouge, "rouge_examples": 100, "trial_id": "a",
             "timestamp": seconds, "time_total_s": seconds, "rung_s": seconds}) + "\n")

    def summary_with(plain_space, ours_space) -> dict:
        scores = {"plain_script": {"rougeL": 0.3}, "qlora_sweep": {"rougeL": 0.3}}
        for arm, recorded in (("plain_script", plain_space), ("qlora_sweep", ours_space)):
            if recorded is not None:
                scores[arm]["search"] = recorded
        (folder / "test_scores.json").write_text(json.dumps(scores))
        return summarize(tmp_path, 0, gpus=1)

    alike = summary_with(space, space)
    assert alike["sooner_than_plain"] == pytest.approx(6.0) and "search_spaces_differ" not in alike
    assert summary_with(None, None)["sooner_than_plain"] == pytest.approx(6.0)  # runs from before the record

    apart = summary_with(space, widened)
    assert apart["sooner_than_plain"] is None and "shared_best" not in apart
    assert apart["search_spaces_differ"] == {"lora_r": [space["lora_r"], {"choice": [64, 512]}]}
    assert apart["same_hyperparameters"]["by_rung"]["1"]["pairs"] == 1
    assert describe_spaces(apart["search_spaces_differ"]) == (
        'the searching arms ran different spaces (lora_r: by hand {"choice": [16, 32, 64, 128]}, '
        'qlora-sweep {"choice": [64, 512]})')

    # a setting only the newer record has (search.loraplus_lr_ratio, after by hand's run): the older ran its default
    older = {name: value for name, value in space.items() if name != "loraplus_lr_ratio"}
    assert "search_spaces_differ" not in summary_with(older, space)
    with_loraplus = searched_space(config, ["search.loraplus_lr_ratio=16"])
    assert summary_with(older, with_loraplus)["search_spaces_differ"] == {"loraplus_lr_ratio": [1, 16]}

    one_sided = summary_with(None, widened)
    assert one_sided["sooner_than_plain"] is None
    assert one_sided["search_spaces_differ"] == {"unrecorded": "plain_script"}
    assert describe_spaces(one_sided["search_spaces_differ"]).startswith("plain_script's search space is not on record")


def test_the_sweep_is_timed_to_the_trial_of_by_hands_best_values_whichever_arm_scored_them_higher(tmp_path):
    """sweep_benchmark.sooner_to_plain_best_values: by hand's best is the values and rung it scored best
    on the whole set; qlora-sweep's time is when it reported those values at that rung on the whole set,
    even where its score of them came out lower (training's spread), so sooner_than_plain is undefined
    while this is not. Values qlora-sweep stopped before that rung, or scored there on a subset, give None."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import sooner_to_plain_best_values, summarize

    best = {"lora_r": 128, "learning_rate": 6.7e-4, "max_length": 512}
    other = {"lora_r": 32, "learning_rate": 1.6e-3, "max_length": 512}

    def arm(name: str, trials: dict[str, tuple[dict, list[tuple[float, float, int]]]]) -> Path:
        for trial_id, (config, rungs) in trials.items():  # rungs: (seconds since 0, rougeL, dialogues)
            (tmp_path / "seed0" / name / trial_id).mkdir(parents=True)
            (tmp_path / "seed0" / name / trial_id / "result.json").write_text("".join(json.dumps(
                {"config": config, "trial_id": trial_id, "training_iteration": i + 1, "rougeL": rouge,
                 "rouge_examples": dialogues, "timestamp": 10 + seconds, "time_total_s": seconds}) + "\n"
                for i, (seconds, rouge, dialogues) in enumerate(rungs)))
        return tmp_path / "seed0" / name

    plain = arm("plain-script-s0", {"a": (other, [(20, 0.30, 500), (40, 0.33, 500)]),
                                    "b": (best, [(300, 0.32, 500), (600, 0.3360, 500)])})
    ours = arm("qlora-sweep-s0", {"a": (other, [(20, 0.31, 500), (40, 0.3345, 500)]),
                                  "b": (best, [(60, 0.32, 500), (150, 0.3350, 500)])})
    timed = sooner_to_plain_best_values(plain, ours)
    assert timed.pop("hyperparameters") == best
    assert timed == pytest.approx({"rung": 2, "plain_script_s": 600, "qlora_sweep_s": 150,
                                   "plain_script_rougeL": 0.3360, "qlora_sweep_rougeL": 0.3350, "sooner": 4.0})
    (tmp_path / "seed0" / "test_scores.json").write_text(json.dumps({"plain_script": {}, "qlora_sweep": {}}))
    summary = summarize(tmp_path, 0, gpus=1)
    assert summary["sooner_than_plain"] is None  # 0.3350 never reached 0.3360
    assert summary["sooner_to_plain_best_values"]["sooner"] == pytest.approx(4.0)

    stopped = arm("stopped", {"b": (best, [(60, 0.32, 500)])})  # ASHA stopped it at rung 1
    subset = arm("subset", {"b": (best, [(60, 0.32, 500), (150, 0.3350, 100)])})  # its rung 2 on 100 of 500
    assert sooner_to_plain_best_values(plain, stopped) is None
    assert sooner_to_plain_best_values(plain, subset) is None


def test_a_sweep_of_more_trials_races_to_by_hands_best_over_all_of_them_and_over_its_first_as_many(tmp_path):
    """sweep_benchmark.summarize with --sweep-trials: qlora-sweep ran 4 trials to by hand's 2, and only the
    third to begin beat by hand's best. sooner_than_plain counts every trial; same_trials counts
    the first 2 to begin, whatever their folders' order, and there by hand's best is never reached. How
    many trials an arm ran is not a difference of space: both arms are still compared."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import searched_space, summarize

    config = str(ROOT / "configs" / "sweep_benchmark_gpu.yaml")
    values = {"lora_r": 64, "learning_rate": 2e-4, "max_length": 512}

    def arm(name: str, trials: dict[str, tuple[float, list[tuple[float, float]]]]) -> None:
        for trial_id, (began, rungs) in trials.items():  # rungs: (seconds since the trial began, rougeL)
            (tmp_path / "seed0" / name / trial_id).mkdir(parents=True)
            (tmp_path / "seed0" / name / trial_id / "result.json").write_text("".join(json.dumps(
                {"config": {**values, "lora_r": ord(trial_id[-1])}, "trial_id": trial_id, "training_iteration": i + 1,
                 "rougeL": rouge, "rouge_examples": 500, "timestamp": 1000 + began + seconds, "time_total_s": seconds})
                + "\n" for i, (seconds, rouge) in enumerate(rungs)))

    arm("plain-script-s0", {"p1": (0, [(300, 0.330)]), "p2": (0, [(600, 0.336)])})
    # the folders sort "a" first, but "b" and "c" began first; "a" and "d" came after them
    arm("qlora-sweep-s0", {"a": (70, [(60, 0.338)]), "b": (0, [(50, 0.331)]), "c": (5, [(60, 0.333)]),
                           "d": (80, [(60, 0.332)])})
    scores = {"plain_script": {"rougeL": 0.3, "search": searched_space(config, [])},
              "qlora_sweep": {"rougeL": 0.3, "search": searched_space(config, ["search.num_trials=4"])}}
    (tmp_path / "seed0" / "test_scores.json").write_text(json.dumps(scores))

    summary = summarize(tmp_path, 0, gpus=1)
    assert "search_spaces_differ" not in summary
    assert summary["qlora_sweep"]["trials"] == 4 and summary["plain_script"]["trials"] == 2
    assert summary["qlora_sweep"]["time_to_reach_plain_best_s"] == pytest.approx(130)
    assert summary["sooner_than_plain"] == pytest.approx(600 / 130)
    assert summary["same_trials"] == pytest.approx({"trials": 2, "best": 0.333, "time_to_best_s": 65,
                                                    "time_to_reach_plain_best_s": None, "sooner_than_plain": None})

    for later in ("a", "d"):  # as many trials as by hand's
        (tmp_path / "seed0" / "qlora-sweep-s0" / later).rename(tmp_path / later)
    assert "same_trials" not in summarize(tmp_path, 0, gpus=1)


def test_the_rescored_pairs_use_each_trials_latest_kept_adapter_and_sum_up_where_they_compare(tmp_path):
    """sweep_benchmark.kept_adapters picks a trial's latest checkpoint still on disk (Tune deleted the
    others); rescored_summary gives the arms' gap as their runs scored and as one evaluator scored,
    and each arm's own score over the evaluator's only where both scored the same dialogues."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import kept_adapters, rescored_summary

    values = {"lora_r": 64, "learning_rate": 2e-4}
    trial = tmp_path / "arm" / "trial_a"
    trial.mkdir(parents=True)
    rows = [{"config": values, "training_iteration": i, "rougeL": 0.3 + i / 100, "checkpoint_dir_name": f"checkpoint_00000{i - 1}"}
            for i in (1, 2, 3)]
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for kept in ("checkpoint_000000", "checkpoint_000001"):  # rung 3's was deleted
        (trial / kept).mkdir()
    ((key, (rung, folder, row)),) = kept_adapters(tmp_path / "arm").items()
    assert dict(key) == values and rung == 2 and folder == trial / "checkpoint_000001" and row["rougeL"] == 0.32

    def side(in_run: float, rescored: float, in_run_examples: int = 100) -> dict:
        return {"in_run": in_run, "in_run_examples": in_run_examples, "rescored": rescored, "rescored_examples": 100}

    pairs = [{"plain_script": side(0.34, 0.345), "qlora_sweep": side(0.33, 0.345)},
             {"plain_script": side(0.35, 0.34), "qlora_sweep": side(0.33, 0.35)},
             {"plain_script": side(0.30, 0.31), "qlora_sweep": side(0.28, 0.30, in_run_examples=64)}]
    pairs[0]["qlora_sweep"]["rescored_under_liger"] = 0.335  # where the trial trained with Liger's kernels
    summed = rescored_summary(pairs)
    assert summed["qlora_sweep_under_liger_minus_rescored"] == pytest.approx(-0.01)
    assert summed["in_run"]["mean_gap"] == pytest.approx((-0.01 - 0.02 - 0.02) / 3)
    assert (summed["in_run"]["qlora_sweep_lower"], summed["in_run"]["qlora_sweep_higher"]) == (3, 0)
    assert summed["rescored"]["mean_gap"] == pytest.approx((0 + 0.01 - 0.01) / 3)
    assert (summed["rescored"]["qlora_sweep_lower"], summed["rescored"]["qlora_sweep_higher"]) == (1, 1)
    # the third pair's qlora-sweep run scored 64 dialogues: not set against the evaluator's 100
    assert summed["in_run_minus_rescored"]["qlora_sweep"] == pytest.approx((-0.015 - 0.02) / 2)
    assert summed["in_run_minus_rescored"]["plain_script"] == pytest.approx((-0.005 + 0.01 - 0.01) / 3)



def test_the_by_hand_arms_best_is_chosen_and_drawn_on_the_whole_validation_set_only(tmp_path):
    """sweep_benchmark.best_of_plain_script and curve: where an early rung scores a subset (here 2 of 4
    dialogues), its higher score by chance neither becomes the arm's best nor enters its curve, nor does a
    diverged rung's 0 of no dialogues start it; the best's adapter is the checkpoint saved with its
    whole-set score."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import best_of_plain_script, curve

    def trial(name: str, config: dict, rungs: list[tuple[float, int]]):
        folder = tmp_path / "arm" / name
        folder.mkdir(parents=True)
        rows = [{"config": config, "trial_id": name, "training_iteration": i + 1, "rougeL": rouge,
                 "rouge_examples": examples, "checkpoint_dir_name": f"checkpoint_00000{i}", "timestamp": 10 * (i + 1),
                 "time_total_s": 10 * (i + 1)} for i, (rouge, examples) in enumerate(rungs)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for i in range(len(rungs)):
            (folder / f"checkpoint_00000{i}").mkdir()
        return folder

    trial("a", {"lora_r": 16}, [(0.50, 2), (0.30, 4)])  # lucky on 2 dialogues at rung 1
    kept = trial("b", {"lora_r": 64}, [(0.20, 2), (0.35, 4)])
    trial("c", {"lora_r": 32}, [(0.45, 2)])  # stopped at rung 1: never scored on the whole set
    trial("d", {"lora_r": 128}, [(0.0, 0)])  # diverged in rung 1: it scored no dialogue, not 0 on all
    values, checkpoint = best_of_plain_script(tmp_path / "arm")
    assert values == {"lora_r": 64} and checkpoint == str(kept / "checkpoint_000001")
    drawn = curve(tmp_path / "arm")
    assert drawn["best"] == 0.35 and [v for _, v in drawn["points"]] == [0.30, 0.35]
    assert drawn["validation_examples"] == 4

    (kept / "checkpoint_000001").rmdir()  # Tune deleted it: say so, never fall back to another trial's
    with pytest.raises(SystemExit, match="the best trial's checkpoint for rung 2 is not on disk"):
        best_of_plain_script(tmp_path / "arm")


@pytest.mark.parametrize("arguments, message", [
    (["--rescore-pairs", "-1"], "--rescore-pairs -1: 0 (none) or more"),
    (["--rerun", "qlora_sweep"], "--rerun runs arms again inside an OUT that --resume continues: add --resume"),
    (["--sweep-trials", "0"], "--sweep-trials 0: 1 or more"),
])
def test_the_sweep_benchmark_refuses_bad_arguments_with_exit_2_before_it_writes(arguments, message, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/sweep_benchmark.py", "configs/sweep_benchmark_gpu.yaml",
                           "--out", str(tmp_path / "out"), *arguments], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_a_pair_that_cannot_be_scored_again_is_recorded_with_its_error_and_the_rest_goes_on(tmp_path):
    """sweep_benchmark.rescore_pairs is a diagnostic after the arms have run: a pair it cannot score
    again (here qlora-sweep's checkpoint lacks the trial record it reads the config from) is kept
    with its error instead of ending the benchmark before the next seed, and the summary lists it
    apart from the pairs it compares."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_benchmark import rescore_pairs, rescored_summary

    values = {"lora_r": 64, "learning_rate": 2e-4}
    for arm in ("plain", "ours"):
        trial = tmp_path / "seed0" / arm / "trial_a"
        (trial / "checkpoint_000000").mkdir(parents=True)
        (trial / "result.json").write_text(json.dumps({"config": values, "training_iteration": 1, "rougeL": 0.3,
                                                       "checkpoint_dir_name": "checkpoint_000000"}) + "\n")
    (pair,) = rescore_pairs(tmp_path / "seed0" / "plain", tmp_path / "seed0" / "ours")
    assert pair["rung"] == 1 and pair["error"].startswith("FileNotFoundError") and "qlora_sweep_trial.json" in pair[
        "error"]
    summed = rescored_summary([pair])
    assert summed["pairs"] == 0 and summed["rescored"] is None
    assert summed["pairs_failed"] == [{"hyperparameters": values, "rung": 1, "error": pair["error"]}]


def test_the_by_hand_loop_trains_the_rows_a_trial_trains_in_the_same_order(tiny_model_path, tiny_tokenizer, tmp_path):
    """The sweep benchmark compares qlora-sweep's trials with the by-hand arm's rung by rung, losses
    included: both must train the same examples at the same step. The Trainer's seeded sampler and
    the by-hand loop's permutation draw the same order (checked on DialogSum on 2026-12-03, when the
    first rung's loss differed by 0.04: the cause was bf16 dense layers, not the data)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from tests.helpers import sample_training_set
    from trainables.config import TrainingConfig, TrialHyperparameters
    from trainables.train import build_trainer
    from trial_speed import training_order

    rows = sample_training_set(tiny_tokenizer, 12)
    training = TrainingConfig(micro_batch_size=2, gradient_checkpointing=False, liger_kernels=False,
                              fused_lm_head=False, compile_layers=False, float32_dense_layers=False)
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=1000, lora_dropout=0.0,
                              target_modules="all-linear")
    steps = 6  # one pass over the 12 rows; past it the by-hand loop cycles its order where the Trainer draws a
    # new one, and the sweep benchmark's trials train less than a pass (60 steps of 16 of about 11,960 rows)
    set_seed(training.seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    torch.randn(100)  # LoRA's initialization draws from the generator between the seed and the Trainer
    trainer = build_trainer(model, tiny_tokenizer, rows, rows, training, hp, total_steps=steps, eval_batch_size=2,
                            output_dir=str(tmp_path), callbacks=[])
    trained = []
    loader = trainer.get_train_dataloader()
    loader.set_epoch(0)  # as the Trainer does before its first step
    for batch in loader:  # padding-free: one row a micro-batch, each example's positions from 0
        ids, positions = batch["input_ids"][0].tolist(), batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        trained += [ids[a:b] for a, b in zip(starts, starts[1:])]
    by_hand = [rows[i]["input_ids"] for i in training_order(len(rows), training.seed)]
    assert trained == by_hand
    assert trained != [r["input_ids"] for r in rows]  # shuffled, not in file order


def test_the_tokenize_timer_times_both_encoders_by_turns_on_the_same_rows(tiny_model_path, tmp_path):
    out = tmp_path / "tokenize.json"
    done = subprocess.run([sys.executable, "benchmarks/tokenize_time.py", "--data", "trainables/samples",
                           "--tokenizer", str(tiny_model_path), "--max-length", "256", "--rounds", "2",
                           "--test-examples", "20", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["train_dialogues"] == 220 and 0 < result["rows"] <= 220  # the sample's 240, 20 held out
    assert {side: len(v["runs"]) for side, v in result["seconds"].items()} == {"one_call_per_example": 2, "batched": 2}
    assert result["batched_speedup"] > 0 and "rows at max_length 256" in done.stdout


def test_the_tokenize_timer_times_threaded_tokenizing_beside_batched(tiny_model_path, tmp_path):
    out = tmp_path / "threads.json"
    done = subprocess.run([sys.executable, "benchmarks/tokenize_time.py", "--data", "trainables/samples",
                           "--tokenizer", str(tiny_model_path), "--max-length", "256", "--rounds", "2",
                           "--test-examples", "20", "--sides", "batched,threaded", "--threads", "3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # exit 1 where the threaded side tokenized differently
    result = json.loads(out.read_text())
    assert {side: len(v["runs"]) for side, v in result["seconds"].items()} == {"batched": 2, "threaded": 2}
    assert result["threads"] == 3 and result["threaded_speedup"] > 0 and "batched_speedup" not in result


@pytest.mark.parametrize("flags,error", [
    (["--sides", "batched"], "--sides batched: two or more of one_call_per_example, batched, threaded, each once"),
    (["--sides", "batched,fast"], "--sides batched,fast: two or more of one_call_per_example, batched, threaded, "
                                  "each once"),
    (["--sides", "batched,threaded", "--threads", "1"], "--threads must be at least 2"),
])
def test_the_tokenize_timer_refuses_bad_sides_or_threads_in_one_line(tmp_path, flags, error):
    done = subprocess.run([sys.executable, "benchmarks/tokenize_time.py", "--data", "trainables/samples",
                           "--tokenizer", str(tmp_path), *flags, "--out", str(tmp_path / "t.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "t.json").exists()
    assert done.stderr.splitlines() == [f"tokenize_time: {error}"]


def test_the_tokenize_timer_refuses_a_missing_path_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/tokenize_time.py", "--data", str(tmp_path / "none"),
                           "--tokenizer", str(tmp_path), "--out", str(tmp_path / "t.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "t.json").exists()
    assert done.stderr.splitlines() == [f"tokenize_time: --data {tmp_path / 'none'} does not exist"]


def _synthetic_trials(scale_peak: float = 7e-4, diverges_from: float = 8e-3) -> list[dict]:
    """Trials scored by a known quadratic in log10(learning rate x alpha ratio), the runs' one scale."""
    trials = []
    for lr in (1e-4, 3e-4, 1e-3, 3e-3, 9e-3):
        for ratio in (0.5, 1, 2, 4):
            for rank, max_length in ((32, 384), (64, 512), (128, 384), (256, 512)):
                off = math.log10(lr * ratio / scale_peak)
                rouge = 0.34 - 0.05 * off * off
                scores = [0.0] if lr * ratio >= diverges_from else [rouge - 0.03, rouge - 0.01, rouge]
                trials.append({"learning_rate": lr, "lora_alpha_ratio": ratio, "lora_r": rank, "max_length": max_length,
                               "rouge": scores})
    return trials


def test_the_sampler_simulations_surrogate_recovers_the_landscape_it_was_fitted_to_and_its_divergence():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sampler_simulation import Surrogate

    surrogate = Surrogate(_synthetic_trials())
    at_peak = surrogate.true_scores({"learning_rate": 7e-4, "lora_alpha_ratio": 1, "lora_r": 64, "max_length": 512})
    assert at_peak == pytest.approx((0.31, 0.34), abs=1e-6)
    decade_off = surrogate.true_scores({"learning_rate": 7e-5, "lora_alpha_ratio": 1, "lora_r": 32, "max_length": 384})
    assert decade_off[1] == pytest.approx(0.29, abs=1e-6)
    assert surrogate.noise3 == pytest.approx(0.0, abs=1e-9)
    assert surrogate.diverges_from == pytest.approx(9e-3 * 1)  # the lowest learning rate x ratio seen to diverge
    diverging = {"learning_rate": 9e-3, "lora_alpha_ratio": 2, "lora_r": 64, "max_length": 512}
    assert surrogate.true_scores(diverging) == (0, 0)


def test_the_sampler_simulation_replays_asha_and_keeps_the_best_finished_trial_it_saw():
    """Without noise the chosen trial is the finished one with the highest score, ASHA stops some
    trials after rung 1, and every trial the sampler proposed is counted once."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import optuna
    from sampler_simulation import Surrogate, replay

    surrogate = Surrogate(_synthetic_trials())
    space = {"lora_r": [32, 64], "lora_alpha_ratio": [0.5, 1, 2, 4], "learning_rate": (1e-4, 1e-2),
             "max_length": [384, 512]}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=4)
    outcome = replay(surrogate, sampler, space, np.random.default_rng(0), trials=12, concurrent=3)
    assert 1 <= outcome["finished"] < 12  # ASHA cut at least one trial after its first rung
    assert outcome["chosen_true"] == pytest.approx(outcome["chosen_observed"]) == pytest.approx(
        max(outcome["finished_true"]))
    assert outcome["chosen_true"] > 0.3


@pytest.mark.parametrize("arguments, message", [
    (["--random-trials", "4,x"], "--random-trials: whole numbers separated by commas, got '4,x'"),
    (["--seeds", "0"], "--seeds: at least 1, got 0"),
    (["--noise", "-1"], "--noise: 0 or more, got -1.0"),
])
def test_the_sampler_simulation_refuses_bad_arguments_in_one_line_with_exit_2(arguments, message, tmp_path):
    out = tmp_path / "simulation.json"
    done = subprocess.run([sys.executable, "benchmarks/sampler_simulation.py", *arguments, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(message), done.stderr
    assert not out.exists()


def test_the_cuda_import_probe_imports_each_module_alone_and_names_who_asked_cuda(tmp_path):
    # on a CPU build nothing can be hidden (seen: None), but who asked is watched all the same: bitsandbytes
    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, "benchmarks/cuda_on_import.py", "--out", str(out), "json", "bitsandbytes"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {result["module"]: result for result in json.loads(out.read_text())}
    assert set(results) == {"(none)", "json", "bitsandbytes", "json bitsandbytes"}
    assert results["(none)"]["asked"] == [] and results["json"]["asked"] == []
    assert any("bitsandbytes/" in asked["from"][-1] for asked in results["bitsandbytes"]["asked"])
    assert results["json bitsandbytes"]["asked"]


def test_the_cuda_import_probe_refuses_an_out_file_in_a_missing_folder_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/cuda_on_import.py", "--out", str(tmp_path / "no" / "x.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


def test_the_suite_cpu_sampler_counts_a_commands_child_processes_by_kind_and_passes_its_exit_code_on(tmp_path):
    out = tmp_path / "cpu.json"
    # a child that spends about a second of CPU, then the command fails with 3
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
    command = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}]); sys.exit(3)"
    done = subprocess.run([sys.executable, "benchmarks/suite_cpu.py", "--out", str(out), "--interval", "0.1", "--",
                           sys.executable, "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["exit_code"] == 3 and summary["wall_s"] >= 1.0
    # every process begun on the machine meanwhile counts, so the other xdist worker's may be among them
    kinds = {row["kind"]: row for row in summary["by_kind"]}
    assert kinds["python -c"]["processes"] >= 2  # the command and its child
    assert 0.5 <= kinds["python -c"]["cpu_s"] <= summary["cpu_s"]  # most of the child's second, read every 0.1 s


def test_the_suite_cpu_sampler_names_a_process_seen_before_its_exec_by_the_command_it_then_runs(tmp_path):
    """A sample taken between a fork and its exec reads the parent's command line: the process is named by
    what it runs after the exec (CI's run of 2026-12-06 counted the sampled command itself as suite_cpu.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite_cpu import kind_of, sample

    target = tmp_path / "after_exec.py"
    target.write_text("import time\ntime.sleep(0.5)\n")
    # the child waits a second between its fork and its exec, so the first samples see the parent's line
    forking = (f"import os, sys, time\npid = os.fork()\nif pid == 0:\n    time.sleep(1.0)\n"
               f"    os.execv(sys.executable, [sys.executable, {str(target)!r}])\nos.waitpid(pid, 0)\n")
    seen: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(seen, stop, 0.1), daemon=True)
    sampler.start()
    parent = subprocess.Popen([sys.executable, "-c", forking])
    parent.wait(timeout=60)
    stop.set()
    sampler.join()
    children = [process for process in seen.values() if process["parent"] == str(parent.pid)]
    assert [process["command"].split()[-1] for process in children] == [str(target)], children
    assert kind_of(children[0]["command"]) == "other"  # not "python -c", its parent's kind


def test_the_suite_cpu_sampler_counts_a_process_to_the_test_folder_its_own_or_an_ancestors_command_names(tmp_path):
    out = tmp_path / "cpu.json"
    # a child whose command line names a test's folder (as a CLI run names its config) starts a
    # grandchild that names none (as a driver starts Ray's workers) and spends about a second of CPU
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"
    command = (f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}, "
               "'/tmp/x/pytest-7/popen-gw1/test_named_here0/s.yaml'])")
    done = subprocess.run([sys.executable, "benchmarks/suite_cpu.py", "--out", str(out), "--interval", "0.1", "--",
                           sys.executable, "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    tests = {row["test"]: row["cpu_s"] for row in json.loads(out.read_text())["by_test"]}
    assert 0.5 <= tests["test_named_here0"] <= 3, tests  # the grandchild's second, its parent's start beside it
    assert "test_named_here0" in done.stdout


def test_the_suite_cpu_sampler_names_each_kind_of_process_the_suite_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite_cpu import kind_of, test_of

    assert kind_of("/v/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))").startswith("pytest-xdist")
    assert kind_of("ray::ImplicitFunc.train") == kind_of("/v/python /v/ray/_private/workers/setup_worker.py x") \
        == "Ray worker"
    assert kind_of("/v/ray/core/src/ray/raylet/raylet --node-ip-address=1") == "Ray daemon"
    assert kind_of("/v/bin/python -m search best /tmp/e --json") == "CLI best"
    assert kind_of("/v/bin/python benchmarks/trial_speed.py --shape tiny") == "benchmarks/trial_speed.py"
    # the test a command ran for, by its temporary folder, with pytest-xdist and without
    assert test_of("/v/python -m search run /tmp/pytest-of-u/pytest-3/popen-gw0/test_verbose_shows0/s.yaml") \
        == "test_verbose_shows0"
    assert test_of("/v/python -m search run /tmp/pytest-of-u/pytest-3/sweep/s.yaml") == "sweep"
    assert test_of("/v/python -m search run /tmp/elsewhere/s.yaml") is None
    # a test's command that loads a shared fixture's folder counts to the test, wherever it names it
    assert test_of("/v/python b/trial_speed.py --tokenizer /tmp/p/pytest-3/tiny-llama --out "
                   "/tmp/p/pytest-3/popen-gw1/test_the_trial_speed0/s.json") == "test_the_trial_speed0"


@pytest.mark.parametrize("arguments, message", [
    ([], "suite_cpu.py: no command given (put it after --)"),
    (["--", "true"], "suite_cpu.py: --out: no folder"),
])
def test_the_suite_cpu_sampler_refuses_bad_arguments_in_one_line_before_it_runs_anything(arguments, message,
                                                                                          tmp_path):
    out = tmp_path / ("no/cpu.json" if arguments else "cpu.json")
    done = subprocess.run([sys.executable, "benchmarks/suite_cpu.py", "--out", str(out), *arguments],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and done.stderr.startswith(message), \
        done.stderr
    assert not out.exists()


def test_shared_determinism_runs_trials_of_the_recipes_values_at_once_and_finds_them_alike_on_the_cpu(
        tiny_model_path, tmp_path):
    """benchmarks/shared_determinism.py for real: a sweep of two trials of the same values, both at once,
    none stopped early, each rung's losses compared; on a CPU two such trials train the same."""
    from tests.conftest import tiny_sweep_dict, write_config

    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "unused", data={"max_train_examples": 16, "max_validation_examples": 2},
        scheduler={"max_rungs": 2, "grace_period": 1, "reduction_factor": 2},
        evaluation={"max_new_tokens": 2, "rung_examples": "all"}))
    out = tmp_path / "det.json"
    done = subprocess.run([sys.executable, "benchmarks/shared_determinism.py", str(config), "--out", str(out),
                           "--trials", "2", "--group", "shared:2:training.steps_per_rung=3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    group = json.loads(out.read_text())["groups"]["shared"]
    assert group["at_once"] == 2 and group["settings"] == ["training.steps_per_rung=3"]
    (run,) = group["runs"]
    assert len(run["trials"]) == 2
    for trial in run["trials"]:  # the recipe's values, every rung run (the grace period is every rung)
        assert trial["config"] == {"lora_r": 32, "lora_alpha": 32, "learning_rate": 2.0e-4, "max_length": 512}
        assert [rung["rung"] for rung in trial["rungs"]] == [1, 2]
    first, second = ([{key: value for key, value in rung.items() if key != "tokens_per_s"} for rung in trial["rungs"]]
                     for trial in run["trials"])
    assert first == second  # both in fresh workers, every loss the same
    assert not any(rung["warm_start"] for rung in first)
    compared = group["compared"]
    assert compared["identical"], compared
    assert compared["later_rung_tokens_per_s_median"] > 0  # rung 2's pace, both trials'
    assert compared["rungs"]["1"]["train_loss"] == {"distinct_in_a_run": 1, "distinct_over_runs": 1, "spread": 0,
                                                    "trials": 2}
    assert "shared-r1: every trial the same to the last digit (1 run(s))" in done.stderr
    assert (tmp_path / "det-runs" / "shared-r1.log").is_file()


def test_shared_determinism_counts_the_values_each_rungs_losses_took_within_and_across_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from shared_determinism import compare, describe

    def trial(*train_losses, eval_loss=1.0):
        return {"rungs": [{"rung": i + 1, "first_step_loss": 2.0, "train_loss": loss, "eval_loss": eval_loss}
                          for i, loss in enumerate(train_losses)]}

    alike = compare([[trial(1.5, 1.2), trial(1.5, 1.2)], [trial(1.5, 1.2), trial(1.5, 1.2)]])
    assert alike["later_rung_tokens_per_s_median"] is None  # no rung reported a pace
    assert alike["identical"] and alike["runs"] == 2 and alike["rungs"]["2"]["train_loss"]["trials"] == 4
    # alike within each run, but the second run's rung 2 differs in the sixth digit
    apart = compare([[trial(1.5, 1.2), trial(1.5, 1.2)], [trial(1.5, 1.200001), trial(1.5, 1.200001)]])
    assert not apart["identical"]
    assert apart["rungs"]["1"]["train_loss"]["distinct_over_runs"] == 1
    rung2 = apart["rungs"]["2"]["train_loss"]
    assert rung2["distinct_in_a_run"] == 1 and rung2["distinct_over_runs"] == 2
    assert rung2["spread"] == pytest.approx(1e-6)
    assert describe(apart) == "trials differ: rung 2's train_loss took 2 values over 2 run(s), spread 1e-06"
    # a loss a rung did not report (None) is left out, not compared
    assert compare([[trial(1.5, eval_loss=None), trial(1.5, eval_loss=None)]])["rungs"]["1"].keys() == {
        "first_step_loss", "train_loss"}
    assert not compare([])["identical"]  # nothing ran: nothing shown alike


def test_shared_determinism_gives_each_groups_pace_by_run_and_against_the_first_group_round_by_round():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from shared_determinism import compare, pace_against_first

    def trial(*paces):  # a pace for each rung; only later rungs' count
        return {"rungs": [{"rung": i + 1, "train_loss": 1.0, "tokens_per_s": pace} for i, pace in enumerate(paces)]}

    fast = compare([[trial(50, 100), trial(50, 300)], [trial(50, 200)]])
    assert fast["later_rung_tokens_per_s_by_run"] == [200, 200] and fast["later_rung_tokens_per_s_median"] == 200
    slow = compare([[trial(1, 150)], [trial(1, 100)], [trial(1, 90)]])  # a third round the first group lacks
    unreported = compare([[trial(1)]])
    ratios = pace_against_first({"fast": {"compared": fast}, "slow": {"compared": slow},
                                 "unreported": {"compared": unreported}, "not_run_yet": {}})
    assert ratios["slow"] == {"against": "fast", "rounds": [0.75, 0.5], "median": 0.625, "min": 0.5, "max": 0.75}
    assert ratios["unreported"]["rounds"] == [] and ratios["unreported"]["median"] is None
    assert ratios["not_run_yet"]["rounds"] == []


@pytest.mark.parametrize("arguments, message", [
    (["--trials", "1"], "--trials must be 2 or more"),
    (["--group", "shared"], "--group shared: expected NAME:AT_ONCE"),
    (["--group", "shared:9"], "--group shared:9: trials at a time must be 1 to --trials (6)"),
    (["--group", "a:1", "--group", "a:2"], "--group: two groups of the same name"),
    (["--group", "a:2:training.seed"], "--group a:2:training.seed: its settings must be KEY=VALUE"),
    (["--set", "training.nonsense=1"], "training.nonsense"),
])
def test_shared_determinism_refuses_bad_arguments_in_one_line_before_any_sweep(arguments, message, tmp_path):
    out = tmp_path / "det.json"
    done = subprocess.run([sys.executable, "benchmarks/shared_determinism.py", "configs/sweep_benchmark_gpu.yaml",
                           "--out", str(out), *arguments], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
