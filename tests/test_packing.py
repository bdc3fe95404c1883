"""gpus_per_trial: auto sizes each trial's GPU share by its predicted peak memory, so trials pack
onto a GPU by what they need and never add up to more than it has; the driver plans each trial
once, and the plan that sized its share is the plan the trial is given."""

import json

import pytest
from pydantic import ValidationError

from search.config import SweepConfig
from search.packing import TrialPlanner, plan_concurrency
from trainables.config import EvaluationConfig, ModelConfig, TrainingConfig, TrialHyperparameters
from trainables.errors import ConfigError
from trainables.memory import GIB, GpuRequest, model_shape, plan_memory, predicted_peak_bytes, weight_bytes

pytestmark = pytest.mark.unit

LLAMA_3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
MODEL = ModelConfig(name_or_path="/models/m", compute_dtype="bfloat16")


def _hp(r=16, max_length=512, modules="all-linear"):
    return TrialHyperparameters(lora_r=r, lora_alpha=16, learning_rate=1e-4, max_length=max_length, lora_dropout=0.0,
                                target_modules=modules)


def _packed(shape, hp, training, gpu_gb):
    from trainables.config import EvaluationConfig

    return plan_memory(shape, MODEL, training, EvaluationConfig(), hp, GpuRequest(gpu_gb * GIB, "auto"))


def test_predicted_4bit_weights_cover_what_bitsandbytes_actually_allocates(tiny_model_path):
    from trainables.model import load_quantized_model

    model = load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path)))
    actual = model.get_memory_footprint()
    # On the CPU the unquantized parts load in float32 (4 bytes); on a GPU in bf16.
    predicted = weight_bytes(model_shape(ModelConfig(name_or_path=str(tiny_model_path))), dense_bytes=4)
    assert actual <= predicted < 1.2 * actual
    assert 5 * GIB < weight_bytes(LLAMA_3_8B) < 7 * GIB  # Llama-3-8B in NF4 takes about 5.7 GB


def test_small_trials_share_a_gpu_and_keep_activations_when_they_fit():
    plan = _packed(SMOLLM2, _hp(), TrainingConfig(micro_batch_size=16), 80)
    assert plan.gradient_checkpointing is False and plan.gpu_share <= 0.25  # four or more SmolLM2 trials per H100
    longer = _packed(SMOLLM2, _hp(max_length=1024), TrainingConfig(micro_batch_size=16), 80)
    assert longer.gpu_share > plan.gpu_share  # shares follow each trial's own max_length


def test_a_trial_that_fits_a_gpu_only_with_recompute_gets_recompute():
    training = TrainingConfig(micro_batch_size=4)
    plan = _packed(LLAMA_3_8B, _hp(max_length=1024), training, 24)
    assert plan.gradient_checkpointing is True and plan.gpu_share < 1
    bf16_dense = training.model_copy(update={"float32_dense_layers": False})  # auto, where compute is bf16
    assert plan.gpu_share * 24 * GIB >= predicted_peak_bytes(LLAMA_3_8B, _hp(max_length=1024), bf16_dense, True)
    assert plan.memory_budget_gb == pytest.approx(plan.gpu_share * 24)  # the trial plans within what Ray reserved


def test_a_trial_too_large_for_one_gpu_is_refused_with_its_settings():
    with pytest.raises(ConfigError, match="max_length=4096, micro_batch_size=64.*more than one GPU's 24.0 GiB"):
        _packed(LLAMA_3_8B, _hp(max_length=4096), TrainingConfig(micro_batch_size=64), 24)


def _sweep(model_path, **resources):
    return SweepConfig(name="p", model={"name_or_path": str(model_path)},
                       resources={"gpus_per_trial": "auto", **resources},
                       search={"lora_r": {"choice": [8, 64]}, "max_length": {"choice": [256, 1024]}},
                       training={"micro_batch_size": 8})


def test_without_worker_reuse_each_trial_asks_ray_for_the_share_its_own_hyperparameters_need(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    planner = TrialPlanner.for_cluster(_sweep(tmp_path, reuse_workers=False), 80 * GIB)
    chosen = {"lora_alpha": 16, "learning_rate": 1e-4}
    short = planner.resources({**chosen, "lora_r": 8, "max_length": 256})
    long = planner.resources({**chosen, "lora_r": 64, "max_length": 1024})
    assert short["cpu"] == 1 and 0 < short["gpu"] < long["gpu"] <= 1
    no_gpu = TrialPlanner.for_cluster(_sweep(tmp_path), None)
    assert no_gpu.resources(chosen) == {"cpu": 1, "gpu": 0} and no_gpu.shape is None  # CPU trials, no shape read
    fixed = SweepConfig(name="f", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": 0.5})
    assert TrialPlanner.for_cluster(fixed, 80 * GIB).resources(chosen) == {"cpu": 1, "gpu": 0.5}


def test_with_worker_reuse_every_trial_asks_for_the_largest_trials_share_and_plans_within_it(tmp_path):
    """Tune hands a worker only to a trial asking for the same resources: all alike, all fitting."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    planner = TrialPlanner.for_cluster(_sweep(tmp_path), 80 * GIB)
    chosen = {"lora_alpha": 16, "learning_rate": 1e-4}
    short = planner.trial_config({**chosen, "lora_r": 8, "max_length": 256})
    long = planner.trial_config({**chosen, "lora_r": 64, "max_length": 1024})
    own = TrialPlanner.for_cluster(_sweep(tmp_path, reuse_workers=False), 80 * GIB)
    assert short.plan.gpu_share == long.plan.gpu_share == planner.shared_share
    assert planner.shared_share == own.resources({**chosen, "lora_r": 64, "max_length": 1024})["gpu"]
    assert short.plan.memory_budget_gb == pytest.approx(planner.shared_share * 80)
    assert planner.resources({**chosen, "lora_r": 8, "max_length": 256})["gpu"] == planner.shared_share


def _cpu_sweep(**search):
    return SweepConfig(name="c", model={"name_or_path": "/tmp"}, resources={"cpus_per_trial": 2},
                       search={"num_trials": 16, **search})


def test_auto_concurrency_is_what_the_cluster_holds_and_says_what_bounds_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    by_cpus = plan_concurrency(TrialPlanner.for_cluster(_cpu_sweep(), None), cluster_cpus=16, cluster_gpus=0)
    assert (by_cpus.trials, by_cpus.why, by_cpus.hint) == (8, "auto: 16 CPUs at 2 per trial", None)
    few = plan_concurrency(TrialPlanner.for_cluster(_cpu_sweep(num_trials=3), None), 16, 0)
    assert (few.trials, few.why) == (3, "auto: 3 trials in all")
    packed = TrialPlanner.for_cluster(_sweep(tmp_path, cpus_per_trial=1), 80 * GIB)
    by_gpu = plan_concurrency(packed, cluster_cpus=64, cluster_gpus=1)
    assert by_gpu.trials == int(1 / packed.shared_share) < 8 and "1 GPU at" in by_gpu.why
    halves = SweepConfig(name="h", model={"name_or_path": str(tmp_path)}, search={"num_trials": 16},
                         resources={"gpus_per_trial": 0.4, "cpus_per_trial": 1})
    two_gpus = plan_concurrency(TrialPlanner.for_cluster(halves, 80 * GIB), cluster_cpus=64, cluster_gpus=2)
    assert two_gpus.trials == 4  # two 0.4 shares per GPU, never one split across two GPUs
    whole = SweepConfig(name="w", model={"name_or_path": str(tmp_path)}, search={"num_trials": 16},
                        resources={"gpus_per_trial": 2, "cpus_per_trial": 1})
    assert plan_concurrency(TrialPlanner.for_cluster(whole, 80 * GIB), 64, 8).trials == 4


def test_the_most_trials_at_once_before_the_gpus_are_known_is_the_tightest_of_trials_cpus_and_the_set_limit():
    from search.packing import most_trials_at_once

    assert most_trials_at_once(_cpu_sweep(), 16) == 8  # 16 CPUs at 2 a trial
    assert most_trials_at_once(_cpu_sweep(num_trials=3), 16) == 3
    assert most_trials_at_once(_cpu_sweep(max_concurrent_trials=6), 16) == 6
    assert most_trials_at_once(_cpu_sweep(max_concurrent_trials=12), 16) == 8
    assert most_trials_at_once(_cpu_sweep(), 1) == 1  # never none, where Ray queues the trials


def test_the_most_trials_at_once_counts_the_gpus_where_a_trials_share_is_a_number():
    from search.packing import most_trials_at_once

    def sweep(gpus_per_trial):
        return SweepConfig(name="g", model={"name_or_path": "/tmp"}, search={"num_trials": 16},
                           resources={"cpus_per_trial": 2, "gpus_per_trial": gpus_per_trial})

    assert most_trials_at_once(sweep(1), 16, 1) == 1  # one whole GPU a trial: one at a time, not 8 by CPUs
    assert most_trials_at_once(sweep(0.25), 16, 1) == 4
    assert most_trials_at_once(sweep(0.4), 16, 2) == 4  # two 0.4 shares a GPU, never one split across two
    # the GPUs do not bound a trial that asks for none, nor auto's shares before the memory is known
    assert most_trials_at_once(sweep(0), 16, 1) == 8
    assert most_trials_at_once(sweep("auto"), 16, 1) == 8
    assert most_trials_at_once(sweep(1), 16) == 8  # the GPUs not known


def test_a_given_concurrency_that_leaves_the_gpu_idle_gets_a_hint_naming_the_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    sweep = SweepConfig(name="s", model={"name_or_path": str(tmp_path)},
                        resources={"gpus_per_trial": "auto", "cpus_per_trial": 1},
                        search={"num_trials": 16, "max_concurrent_trials": 2})
    planner = TrialPlanner.for_cluster(sweep, 80 * GIB)
    given = plan_concurrency(planner, cluster_cpus=32, cluster_gpus=1)
    assert given.trials == 2 and given.why == "search.max_concurrent_trials"
    assert given.hint.startswith(f"2 at a time use {2 * planner.shared_share:.0%} of the GPU, which holds")
    assert "raise search.max_concurrent_trials (or set it to auto)" in given.hint
    on_cpus = plan_concurrency(TrialPlanner.for_cluster(_cpu_sweep(max_concurrent_trials=2), None), 16, 0)
    assert on_cpus.hint is None  # nothing idle to point at without GPUs


def test_the_plan_that_sized_a_trials_share_is_the_plan_the_trial_is_given(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    planner = TrialPlanner.for_cluster(_sweep(tmp_path), 80 * GIB)
    searched = {"lora_r": 64, "lora_alpha": 32, "max_length": 1024, "learning_rate": 1e-4}
    trial = planner.trial_config(searched)
    assert trial.plan.gpu_share == planner.resources(searched)["gpu"]
    assert trial.hyperparameters.lora_r == 64 and trial.hyperparameters.lora_dropout == 0.05  # fixed value merged in
    assert trial.training.gradient_checkpointing == trial.plan.gradient_checkpointing
    assert trial.max_rungs == 4


def test_a_fixed_share_on_a_cluster_without_gpus_yet_is_planned_on_the_gpu_the_trial_lands_on(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    sweep = SweepConfig(name="f", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": 0.5})
    planner = TrialPlanner.for_cluster(sweep, None)  # an autoscaler adds GPU nodes as trials queue
    searched = {"lora_r": 8, "lora_alpha": 16, "learning_rate": 1e-4, "max_length": 256}
    trial = planner.trial_config(searched, gpu_memory_bytes=48 * GIB)
    assert trial.plan.memory_budget_gb == pytest.approx(24)
    with pytest.raises(ValueError, match="needs the size of its GPU"):
        planner.trial_config(searched)


def test_the_largest_corner_of_the_search_space_is_checked_before_any_trial(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    corner = TrialPlanner.for_cluster(_sweep(tmp_path), 80 * GIB).check_every_trial_fits()
    assert (corner.lora_r, corner.max_length) == (64, 1024)
    with pytest.raises(ConfigError, match="max_length=1024, micro_batch_size=8, lora_r=64"):
        TrialPlanner.for_cluster(_sweep(tmp_path), 10 * GIB).check_every_trial_fits()


def test_a_sweep_of_cpu_trials_asking_for_gpu_kernels_is_refused_before_any_trial(tmp_path):
    sweep = SweepConfig(name="c", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": 0},
                        training={"liger_kernels": True})
    with pytest.raises(ConfigError, match="^training.liger_kernels: true needs GPU trials"):
        TrialPlanner.for_cluster(sweep, None).check_every_trial_fits()
    auto = sweep.model_copy(update={"resources": sweep.resources.model_copy(update={"gpus_per_trial": "auto"})})
    with pytest.raises(ConfigError, match="^training.liger_kernels: true needs GPU trials"):
        TrialPlanner.for_cluster(auto, None).check_every_trial_fits()  # auto, and the cluster has no GPU


def test_liger_kernels_are_one_decision_for_the_whole_sweep_the_largest_trials(tmp_path, monkeypatch):
    from trainables import memory

    monkeypatch.setattr(memory, "liger_installed", lambda: True)
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    small = {"lora_alpha": 16, "learning_rate": 1e-4, "lora_r": 8, "max_length": 64}
    planner = TrialPlanner.for_cluster(_sweep(tmp_path, reuse_workers=False), 48 * GIB)
    trial = planner.trial_config(small)
    # This trial keeps its activations (within the share the largest asks for), but the largest one
    # recomputes: no trial of the sweep gets them
    assert trial.plan.gradient_checkpointing is False and trial.training.liger_kernels is False
    assert planner.trial_config({**small, "lora_r": 64, "max_length": 1024}).plan.gradient_checkpointing is True

    fitting = _sweep(tmp_path, reuse_workers=False).model_copy(update={"search": SweepConfig(
        name="s", model={"name_or_path": "/m"}, search={"lora_r": {"choice": [8]}, "max_length": {"choice": [256]}}
    ).search})
    two_at_once = TrialPlanner.for_cluster(fitting, 80 * GIB, cluster_cpus=2, cluster_gpus=1)  # keeping wins
    assert two_at_once.trial_config(small).training.liger_kernels is True


def test_auto_is_a_valid_gpu_setting_and_other_words_are_not():
    assert SweepConfig(name="x", model={"name_or_path": "/tmp"}, resources={"gpus_per_trial": "auto"})
    with pytest.raises(ValidationError, match="must be auto or a number of GPUs"):
        SweepConfig(name="x", model={"name_or_path": "/tmp"}, resources={"gpus_per_trial": "many"})


def test_compiled_layers_are_one_decision_for_the_whole_sweep_weighed_on_its_whole_trials(tmp_path):
    """The driver decides compile_layers: auto once, from the largest trial over max_rungs x
    steps_per_rung steps; every trial then compiles (with FlexAttention) or none does, so a kept
    worker's base model, loaded with one attention kernel, suits every trial it runs."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    chosen = {"lora_alpha": 16, "learning_rate": 1e-4, "lora_r": 8}

    def sweep(max_rungs, steps_per_rung):
        return SweepConfig(name="c", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": "auto"},
                           search={"lora_r": {"choice": [8, 64]}, "max_length": {"choice": [256, 1024]}},
                           training={"micro_batch_size": 4, "gradient_accumulation_steps": 4,
                                     "steps_per_rung": steps_per_rung},
                           scheduler={"max_rungs": max_rungs})

    # 3 rungs of 50 steps of 16 examples: about 385 s eager for the largest trial (1024 tokens), 96 s
    # for the smallest (256), which alone would not compile; in this sweep it does
    long = TrialPlanner.for_cluster(sweep(3, 50), 80 * GIB)
    assert long.total_steps == 150
    trials = [long.trial_config({**chosen, "max_length": length}) for length in (256, 1024)]
    assert all((t.training.compile_layers, t.model.attention) == (True, "flex_attention") for t in trials)
    alone = plan_memory(LLAMA_3_8B, ModelConfig(name_or_path=str(tmp_path)), TrainingConfig(
        micro_batch_size=4, gradient_accumulation_steps=4), EvaluationConfig(), _hp(max_length=256),
        GpuRequest(80 * GIB, 1), total_steps=150)
    assert alone.compile_layers is False
    # One rung of 10 steps: under 30 s eager even at 1024 tokens, no trial compiles
    short = TrialPlanner.for_cluster(sweep(1, 10), 80 * GIB).trial_config({**chosen, "max_length": 1024})
    assert (short.training.compile_layers, short.model.attention) == (False, "sdpa")


def test_runs_opening_lines_say_what_compile_layers_auto_decided_and_the_seconds_behind_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    sweep = SweepConfig(name="c", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": "auto"},
                        search={"max_length": {"choice": [256, 1024]}}, scheduler={"max_rungs": 4},
                        training={"micro_batch_size": 4, "gradient_accumulation_steps": 4, "steps_per_rung": 50})
    said = TrialPlanner.for_cluster(sweep, 80 * GIB).compile_decision()
    assert said.startswith("compile_layers: auto: on, with FlexAttention: the largest trial's 200 steps would take "
                           "about 513 s in eager layers, at least the 240 s")
    short = sweep.model_copy(update={"scheduler": sweep.scheduler.model_copy(update={"max_rungs": 1})})
    assert "auto: off: the largest trial's 50 steps would take about 128 s" in TrialPlanner.for_cluster(
        short, 80 * GIB).compile_decision()
    told = sweep.model_copy(update={"training": sweep.training.model_copy(update={"compile_layers": False})})
    assert TrialPlanner.for_cluster(told, 80 * GIB).compile_decision() is None
    assert TrialPlanner.for_cluster(sweep, None).compile_decision() is None  # CPU trials


SHARING_RUN = "benchmarks/results/2026-12-02-trial-speed-defaults/gpu_sharing_llama3-8b.json"


def test_the_shared_gpu_model_gives_the_measured_8b_runs_within_their_spread():
    """trainables.memory's model of trials sharing a GPU, against the run its two constants came from:
    each setting's tokens/s in all for 1, 3 and 6 trials at once, within that run's min-max (1 %)."""
    from tests.helpers import ROOT
    from trainables.memory import busy_alone, shared_gpu_tokens_per_s

    run = json.loads((ROOT / SHARING_RUN).read_text())
    full = run["summary"]["kept"]["3"]["median"]  # the unit: a GPU full of trials keeping their activations
    assert "compile_layers=true" in run["settings"]["kept"] and "compile_layers=true" in run["settings"]["recomputed"]
    busy = busy_alone(LLAMA_3_8B, run["micro_batch_size"], run["max_length"], compiled=True)
    checked = []
    for setting, recompute in (("kept", False), ("recomputed", True)):
        for trials, measured in run["summary"][setting].items():
            predicted = full * shared_gpu_tokens_per_s(int(trials), busy, recompute)
            assert 0.99 * measured["min"] <= predicted <= 1.01 * measured["max"], (setting, trials, predicted, measured)
            checked.append((setting, trials))
    assert len(checked) == 5


SEARCHED = {"lora_r": 16, "lora_alpha": 16, "learning_rate": 1e-4, "max_length": 512}


def _sharing_sweep(model_path, shape, micro_batch_size=16, compile_layers=False, **search):
    (model_path / "config.json").write_text(json.dumps(shape))
    return SweepConfig(name="r", model={"name_or_path": str(model_path), "compute_dtype": "bfloat16"},
                       resources={"gpus_per_trial": "auto", "cpus_per_trial": 1},
                       search={"lora_r": {"choice": [16]}, "max_length": {"choice": [512]}, "num_trials": 32, **search},
                       training={"micro_batch_size": micro_batch_size, "compile_layers": compile_layers})


def test_8b_trials_sharing_an_h200_keep_their_activations_because_a_few_fill_it(tmp_path):
    """One 8B trial with compiled layers keeps an H200 busy about two thirds of a step: three keeping
    their activations fill it, and recompute would only add work per token (the measured case)."""
    sweep = _sharing_sweep(tmp_path, LLAMA_3_8B, micro_batch_size=8, compile_layers=True)
    planner = TrialPlanner.for_cluster(sweep, 141 * GIB, cluster_cpus=16,
                                       cluster_gpus=1)
    kept, recomputed = planner.recompute_options
    assert kept.recompute is False and kept.trials >= 2 and kept.tokens_per_s == 1.0
    assert recomputed.recompute is True and recomputed.trials > kept.trials and recomputed.tokens_per_s < 1.0
    trial = planner.trial_config(SEARCHED)
    assert trial.plan.gradient_checkpointing is False and trial.plan.gpu_share == kept.share
    said = planner.recompute_decision()
    assert said.startswith("gradient_checkpointing: auto: off: trials at once on one GPU, with their predicted "
                           f"tokens/s in all (1: the GPU full): {kept.trials} keeping activations ({kept.share:g} GPU "
                           "each): 1.00; ") and "recomputing" in said


def test_small_trials_recompute_when_that_puts_more_of_them_on_the_gpu_and_not_when_nothing_else_fits(tmp_path):
    """A SmolLM2 trial leaves the GPU idle most of its step: more trials at once train more in all,
    so recompute wins where the cluster allows the extra trials and loses where max_concurrent_trials
    (or the CPUs) would not run them anyway."""
    many = TrialPlanner.for_cluster(_sharing_sweep(tmp_path, SMOLLM2), 80 * GIB, cluster_cpus=64, cluster_gpus=1)
    chosen, kept = many.recompute_options
    assert chosen.recompute is True and chosen.trials > kept.trials and chosen.tokens_per_s > kept.tokens_per_s
    assert many.trial_config(SEARCHED).plan.gradient_checkpointing is True
    assert plan_concurrency(many, cluster_cpus=64, cluster_gpus=1).trials == chosen.trials

    four = TrialPlanner.for_cluster(_sharing_sweep(tmp_path, SMOLLM2, max_concurrent_trials=4), 80 * GIB,
                                    cluster_cpus=64, cluster_gpus=1)
    assert [o.trials for o in four.recompute_options] == [4, 4] and four.recompute_options[0].recompute is False
    assert TrialPlanner.for_cluster(_sharing_sweep(tmp_path, SMOLLM2), 80 * GIB, cluster_cpus=4,
                                    cluster_gpus=1).recompute_options[0].recompute is False
    spread = TrialPlanner.for_cluster(_sharing_sweep(tmp_path, SMOLLM2), 80 * GIB, cluster_cpus=64, cluster_gpus=8)
    assert spread.trials_per_gpu == 4 and spread.recompute_options[0].recompute is False  # 32 trials over 8 GPUs


def test_recompute_is_not_decided_for_sharing_where_the_user_fixed_it_or_the_memory(tmp_path):
    sweep = _sharing_sweep(tmp_path, SMOLLM2)
    told = sweep.model_copy(update={"training": sweep.training.model_copy(update={"gradient_checkpointing": False})})
    budget = sweep.model_copy(update={"resources": sweep.resources.model_copy(update={"gpu_memory_gb": 10})})
    for fixed in (told, budget):
        planner = TrialPlanner.for_cluster(fixed, 80 * GIB, cluster_cpus=64, cluster_gpus=1)
        assert planner.recompute_options == [] and planner.recompute_decision() is None
