"""trainables/model.py: the merged dense copy that ROUGE's generation can run through computes
what the 4-bit model with LoRA computes, costs what the memory plan says, and leaves the
training model as it was."""

import pytest
import torch

from search.config import EvaluationConfig, ModelConfig, TrialHyperparameters
from search.packing import HEADROOM_BYTES
from trainables.evaluation import generate_summaries
from trainables.memory import dense_copy_bytes, generation_batch_size, kv_cache_bytes_per_token
from trainables.model import attach_lora, load_quantized_model, merged_dense_copy, model_for_generation
from trainables.model import prepare_for_training


def _adapted(path, dtype="float32"):
    import bitsandbytes as bnb

    base = load_quantized_model(ModelConfig(name_or_path=str(path), compute_dtype=dtype))
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=192, lora_dropout=0.1,
                              target_modules="all-linear")
    model = attach_lora(prepare_for_training(base, False), hp)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a trained adapter is not
            parameter.data.normal_(0, 0.05)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    return model.eval()


def test_the_merged_copy_computes_the_adapted_models_logits_and_leaves_it_untouched(tiny_model_path):
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    model = _adapted(tiny_model_path)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    ids = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        expected = model(input_ids=ids).logits

    dense = merged_dense_copy(model)
    with torch.no_grad():
        got = dense(input_ids=ids).logits

    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()
    assert not any(isinstance(m, (bnb.nn.Linear4bit, LoraLayer)) for m in dense.modules())
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in dense.parameters())
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert [name for name, p in model.named_parameters() if p.requires_grad] == trainable
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.get_base_model().config.quantization_config.load_in_4bit


def test_generation_through_the_merged_copy_writes_the_same_summaries(tiny_model_path, tiny_tokenizer):
    model = _adapted(tiny_model_path)
    prompts = [f"### Instruct: Summarize.\n\n#Person1#: hello {i} " * (1 + i % 3) + "\n\n### Output:\n" for i in range(5)]

    direct = generate_summaries(model, tiny_tokenizer, prompts, "### End", max_new_tokens=10, batch_size=4)
    with model_for_generation(model, merged_copy=True) as dense:
        assert dense is not model
        merged = generate_summaries(dense, tiny_tokenizer, prompts, "### End", max_new_tokens=10, batch_size=4)
    with model_for_generation(model, merged_copy=False) as same:
        assert same is model

    assert merged == direct and any(merged)


def test_a_bfloat16_merged_copy_is_bfloat16_and_close_to_the_adapted_model(tiny_model_path):
    model = _adapted(tiny_model_path, dtype="bfloat16")
    ids = torch.randint(0, 500, (1, 16))
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
        dense = merged_dense_copy(model)
        got = dense(input_ids=ids).logits.float()

    assert {p.dtype for p in dense.parameters()} == {torch.bfloat16}
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_memory_plan_counts_the_merged_copy_and_each_kind_of_kv_cache_exactly(tiny_model_path, dtype):
    from trainables.memory import MAX_GENERATION_BATCH

    model = _adapted(tiny_model_path, dtype)
    dense = merged_dense_copy(model)
    assert dense_copy_bytes(model) == sum(p.numel() * p.element_size() for p in dense.parameters())

    evaluation = EvaluationConfig(max_new_tokens=16, merged_copy=False)
    logits = 4 * model.config.vocab_size
    copy_sequence = (192 + 16) * kv_cache_bytes_per_token(model.config, getattr(torch, dtype).itemsize) + logits
    budget = HEADROOM_BYTES + dense_copy_bytes(model) + 2 * 10 * copy_sequence  # room for 10 sequences beside a copy
    with_copy = generation_batch_size(evaluation.model_copy(update={"merged_copy": True}), model, 192, budget)
    assert with_copy == 10
    # Without the copy its memory goes to sequences, each caching in float32 (the prepared model's).
    own_sequence = (192 + 16) * kv_cache_bytes_per_token(model.config, 4) + logits
    without = generation_batch_size(evaluation, model, 192, budget)
    assert without == min(MAX_GENERATION_BATCH, int((budget - HEADROOM_BYTES) / 2 / own_sequence))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_kv_cache_is_planned_float32_for_the_prepared_4bit_model_and_in_compute_dtype_for_a_copy(
        tiny_model_path, dtype):
    from trainables.memory import cache_value_bytes

    model = _adapted(tiny_model_path, dtype)
    assert cache_value_bytes(model, merged_copy=False) == 4  # norms stay float32, so do hidden states
    assert cache_value_bytes(model, merged_copy=True) == getattr(torch, dtype).itemsize
    with torch.no_grad():  # the copy's cache really is in its compute dtype
        cache = merged_dense_copy(model)(input_ids=torch.randint(0, 500, (1, 8)), use_cache=True).past_key_values
    assert cache.layers[0].keys.dtype == getattr(torch, dtype)


def test_auto_uses_the_merged_copy_only_on_a_gpu_share_that_fits_it_beside_32_sequences(tiny_model_path):
    from trainables.memory import MIN_MERGED_BATCH, use_merged_copy

    model = _adapted(tiny_model_path, "bfloat16")
    auto = EvaluationConfig(max_new_tokens=16)
    assert auto.merged_copy == "auto"
    sequence = (192 + 16) * kv_cache_bytes_per_token(model.config, 2) + 4 * model.config.vocab_size
    just_enough = HEADROOM_BYTES + dense_copy_bytes(model) + 2 * MIN_MERGED_BATCH * sequence
    assert use_merged_copy(auto, model, 192, just_enough) is True
    assert use_merged_copy(auto, model, 192, just_enough - 2 * sequence) is False
    assert use_merged_copy(auto, model, 192, None) is False  # CPU
    assert use_merged_copy(auto.model_copy(update={"merged_copy": True}), model, 192, None) is True
    assert use_merged_copy(auto.model_copy(update={"merged_copy": False}), model, 192, just_enough) is False
    # The batch is planned around the copy exactly when auto chooses it.
    assert generation_batch_size(auto, model, 192, just_enough) == MIN_MERGED_BATCH
