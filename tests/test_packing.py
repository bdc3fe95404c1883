"""gpus_per_trial: auto sizes each trial's GPU share by its predicted peak memory, so trials
pack onto a GPU by what they need and never add up to more than it has."""

import json

import pytest

from search.config import ConfigError, ModelConfig, SearchConfig, SweepConfig, TrainingConfig, TrialHyperparameters
from search.packing import (
    GIB, model_shape, plan_trial, predicted_peak_bytes, trial_resources, weight_bytes, check_every_trial_fits,
)

LLAMA_3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)


def _hp(r=16, max_length=512, modules="all-linear"):
    return TrialHyperparameters(lora_r=r, lora_alpha=16, learning_rate=1e-4, max_length=max_length, lora_dropout=0.0,
                                target_modules=modules)


def test_predicted_4bit_weights_cover_what_bitsandbytes_actually_allocates(tiny_model_path):
    from trainables.model import load_quantized_model

    model = load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path)))
    actual = model.get_memory_footprint()
    # On the CPU the unquantized parts load in float32 (4 bytes); on a GPU in bf16.
    predicted = weight_bytes(model_shape(ModelConfig(name_or_path=str(tiny_model_path))), dense_bytes=4)
    assert actual <= predicted < 1.2 * actual
    assert 5 * GIB < weight_bytes(LLAMA_3_8B) < 7 * GIB  # Llama-3-8B in NF4 takes about 5.7 GB


def test_small_trials_share_a_gpu_and_keep_activations_when_they_fit():
    share, checkpointing = plan_trial(SMOLLM2, _hp(), TrainingConfig(micro_batch_size=16), 80 * GIB)
    assert checkpointing is False and share <= 0.25  # four or more SmolLM2 trials per H100
    longer, _ = plan_trial(SMOLLM2, _hp(max_length=1024), TrainingConfig(micro_batch_size=16), 80 * GIB)
    assert longer > share  # shares follow each trial's own max_length


def test_a_trial_that_fits_a_gpu_only_with_recompute_gets_recompute():
    training = TrainingConfig(micro_batch_size=4)
    share, checkpointing = plan_trial(LLAMA_3_8B, _hp(max_length=1024), training, 24 * GIB)
    assert checkpointing is True and share < 1
    assert share * 24 * GIB >= predicted_peak_bytes(LLAMA_3_8B, _hp(max_length=1024), training, True)


def test_a_trial_too_large_for_one_gpu_is_refused_with_its_settings():
    with pytest.raises(ConfigError, match="max_length=4096, micro_batch_size=64.*more than one GPU's 24.0 GiB"):
        plan_trial(LLAMA_3_8B, _hp(max_length=4096), TrainingConfig(micro_batch_size=64), 24 * GIB)


def _sweep(model_path, **search):
    return SweepConfig(name="p", model={"name_or_path": str(model_path)}, resources={"gpus_per_trial": "auto"},
                       search={"lora_r": {"choice": [8, 64]}, "max_length": {"choice": [256, 1024]}, **search},
                       training={"micro_batch_size": 8})


def test_each_trial_asks_ray_for_the_share_its_own_hyperparameters_need(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    ask = trial_resources(_sweep(tmp_path), 80 * GIB)
    chosen = {"lora_alpha": 16, "learning_rate": 1e-4}
    short = ask({**chosen, "lora_r": 8, "max_length": 256})
    long = ask({**chosen, "lora_r": 64, "max_length": 1024})
    assert short["cpu"] == 1 and 0 < short["gpu"] < long["gpu"] <= 1
    assert trial_resources(_sweep(tmp_path), None) == {"cpu": 1, "gpu": 0}  # no GPU in the cluster
    fixed = SweepConfig(name="f", model={"name_or_path": str(tmp_path)}, resources={"gpus_per_trial": 0.5})
    assert trial_resources(fixed, 80 * GIB) == {"cpu": 1, "gpu": 0.5}


def test_the_largest_corner_of_the_search_space_is_checked_before_any_trial(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_8B))
    check_every_trial_fits(_sweep(tmp_path), 80 * GIB)
    with pytest.raises(ConfigError, match="max_length=1024, micro_batch_size=8, lora_r=64"):
        check_every_trial_fits(_sweep(tmp_path), 10 * GIB)


def test_auto_is_a_valid_gpu_setting_and_other_words_are_not():
    assert SearchConfig  # imported for the sweep fixtures above
    with pytest.raises(Exception, match="must be auto or a number of GPUs"):
        SweepConfig(name="x", model={"name_or_path": "/tmp"}, resources={"gpus_per_trial": "many"})
