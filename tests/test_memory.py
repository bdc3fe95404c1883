"""Automatic choices from the trial's memory share: recompute only when a micro-batch would not
fit, and a generation batch sized to the KV cache that fits."""

from transformers import LlamaConfig

from search.config import EvaluationConfig, TrainingConfig
from trainables.memory import (
    GIB, MAX_GENERATION_BATCH, activation_bytes_per_token, generation_batch_size, use_gradient_checkpointing,
)

LLAMA_3_8B = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256)


class Shape:
    """A loaded model as these helpers see it: its config and its weights' footprint."""

    def __init__(self, config, weights_gb):
        self.config, self.weights = config, weights_gb * GIB

    def get_memory_footprint(self):
        return self.weights


def test_recompute_costs_far_less_memory_per_token_than_keeping_activations():
    kept = activation_bytes_per_token(LLAMA_3_8B.to_dict(), gradient_checkpointing=False)
    recomputed = activation_bytes_per_token(LLAMA_3_8B.to_dict(), gradient_checkpointing=True)
    assert 5e6 < kept < 12e6  # several MB per token on the 8B shape
    assert recomputed < kept / 10


def test_auto_checkpointing_turns_on_only_when_the_micro_batch_does_not_fit():
    model = Shape(LLAMA_3_8B, weights_gb=5.5)
    training = TrainingConfig(micro_batch_size=8, gradient_checkpointing="auto")
    assert use_gradient_checkpointing(training, model, max_length=512, budget=80 * GIB) is False
    assert use_gradient_checkpointing(training, model, max_length=512, budget=16 * GIB) is True
    assert use_gradient_checkpointing(training, model, max_length=512, budget=None) is False  # CPU


def test_an_explicit_checkpointing_setting_is_kept_whatever_the_memory():
    model = Shape(LLAMA_3_8B, weights_gb=5.5)
    assert use_gradient_checkpointing(TrainingConfig(gradient_checkpointing=True), model, 512, 80 * GIB) is True
    assert use_gradient_checkpointing(TrainingConfig(gradient_checkpointing=False), model, 512, 1 * GIB) is False


def test_the_auto_generation_batch_grows_with_memory_and_stays_within_bounds():
    model = Shape(LLAMA_3_8B, weights_gb=5.5)
    auto = EvaluationConfig(max_new_tokens=96, batch_size="auto", merged_copy=False)
    small = generation_batch_size(auto, model, longest_prompt=512, budget=12 * GIB)
    large = generation_batch_size(auto, model, longest_prompt=512, budget=40 * GIB)
    assert 1 <= small < large <= MAX_GENERATION_BATCH
    assert generation_batch_size(auto, model, longest_prompt=512, budget=None) == 16  # CPU
    assert generation_batch_size(EvaluationConfig(batch_size=7), model, 512, 80 * GIB) == 7
