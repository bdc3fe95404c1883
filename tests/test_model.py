"""trainables/model.py: the merged dense copy that ROUGE's generation can run through computes
what the 4-bit model with LoRA computes, costs what the memory plan says, and leaves the
training model as it was."""

import pytest
import torch
from transformers import AutoTokenizer

from trainables.config import ModelConfig, TrialHyperparameters
from trainables.evaluation import generate_summaries
from trainables.memory import DTYPE_BYTES, FLOAT32_BYTES, dense_copy_bytes, kv_cache_bytes_per_token, model_shape
from trainables.model import (
    attach_lora,
    generating_in_compute_dtype,
    load_quantized_model,
    merged_dense_copy,
    model_for_generation,
    prepare_for_training,
)

pytestmark = pytest.mark.unit

HP = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=192, lora_dropout=0.0,
                          target_modules="all-linear")


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


def test_the_merged_copy_of_a_model_a_trainer_has_patched_runs_its_own_dense_layers(tiny_model_path, tiny_tokenizer,
                                                                                     tmp_path):
    """Every trial builds its Trainer on the model first, and TRL's SFTTrainer binds its fused LM
    head on the base model's instance: a forward that closes over the original model's own. A deep
    copy keeps that binding, so the copy's forward would run the 4-bit training model and the dense
    layers not at all (on an H200 every such "merged copy" evaluation did). The copy runs its
    class's forward: the 4-bit model is not called, and the logits are still the adapted model's."""
    from tests.helpers import sample_training_set
    from trainables.config import TrainingConfig
    from trainables.train import build_trainer

    model = _adapted(tiny_model_path)
    dataset = sample_training_set(tiny_tokenizer, 2)
    build_trainer(model, tiny_tokenizer, dataset, dataset, TrainingConfig(micro_batch_size=2), HP, total_steps=1,
                  eval_batch_size=2, output_dir=str(tmp_path), callbacks=[])
    base = model.get_base_model()
    assert "forward" in base.__dict__  # what the Trainer bound (if TRL stops, this test has nothing left to prove)
    ids = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        expected = model(input_ids=ids).logits

    dense = merged_dense_copy(model)
    calls = []
    hook = base.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            got = dense(input_ids=ids).logits
    finally:
        hook.remove()
    assert calls == []
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


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
def test_the_plan_counts_the_merged_copy_exactly_from_the_models_shape(tiny_model_path, dtype):
    model = _adapted(tiny_model_path, dtype)
    dense = merged_dense_copy(model)
    real = sum(p.numel() * p.element_size() for p in dense.parameters())
    assert dense_copy_bytes(model_shape(ModelConfig(name_or_path=str(tiny_model_path))), DTYPE_BYTES[dtype]) == real


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_kv_cache_is_float32_in_the_prepared_4bit_model_and_in_compute_dtype_in_a_copy(tiny_model_path, dtype):
    """What the plan assumes per cached value (trainables.memory.plan_memory), against real caches."""
    model = _adapted(tiny_model_path, dtype)
    ids = torch.randint(0, 500, (1, 8))
    with torch.no_grad():
        own = model(input_ids=ids, use_cache=True).past_key_values
        copy = merged_dense_copy(model)(input_ids=ids, use_cache=True).past_key_values
    assert own.layers[0].keys.dtype.itemsize == FLOAT32_BYTES  # norms stay float32, so do hidden states
    assert copy.layers[0].keys.dtype == getattr(torch, dtype)
    shape = model_shape(ModelConfig(name_or_path=str(tiny_model_path)))
    per_token = sum(t.numel() * t.element_size() for layer in own.layers for t in (layer.keys, layer.values)) / 8
    assert kv_cache_bytes_per_token(shape, FLOAT32_BYTES) == per_token


def test_generating_in_bf16_caches_bf16_and_gives_training_its_float32_parameters_back(tiny_model_path):
    """What the plan assumes when generation runs through the model itself (generating_in_compute_dtype)."""
    model = _adapted(tiny_model_path, "bfloat16")
    dense = {name: p for name, p in model.named_parameters() if p.dtype == torch.float32 and "lora_" not in name}
    assert any("norm" in name for name in dense) and any("embed" in name for name in dense)  # k-bit preparation's
    kept = {name: (p.data_ptr(), p.data.clone()) for name, p in dense.items()}
    lora = {name: p.data.clone() for name, p in model.named_parameters() if "lora_" in name}
    ids = torch.randint(0, 500, (1, 8))
    with torch.no_grad(), generating_in_compute_dtype(model):
        assert {p.dtype for p in dense.values()} == {torch.bfloat16}
        cast = model(input_ids=ids, use_cache=True).past_key_values
    assert cast.layers[0].keys.dtype == torch.bfloat16  # half the float32 cache: twice the batch
    for name, p in dense.items():  # the very float32 tensors, back, unchanged
        assert p.dtype == torch.float32 and p.data_ptr() == kept[name][0] and torch.equal(p.data, kept[name][1])
    assert all(torch.equal(p.data, lora[name]) for name, p in model.named_parameters() if "lora_" in name)
    shape = model_shape(ModelConfig(name_or_path=str(tiny_model_path)))
    per_token = sum(t.numel() * t.element_size() for layer in cast.layers for t in (layer.keys, layer.values)) / 8
    assert kv_cache_bytes_per_token(shape, DTYPE_BYTES["bfloat16"]) == per_token
    with torch.no_grad():
        assert model(input_ids=ids, use_cache=True).past_key_values.layers[0].keys.dtype == torch.float32  # without it


def test_a_model_training_with_flex_attention_generates_through_sdpa_and_gets_flex_back(tiny_model_path):
    from trainables.model import attention_implementation

    assert attention_implementation(ModelConfig(name_or_path="m")) == "sdpa"  # auto, without a GPU
    path = str(tiny_model_path)
    flex = attach_lora(prepare_for_training(load_quantized_model(ModelConfig(name_or_path=path,
                                                                             attention="flex_attention")), False), HP)
    sdpa = attach_lora(prepare_for_training(load_quantized_model(ModelConfig(name_or_path=path)), False), HP)
    seen = []
    original = type(flex.get_base_model()).forward

    def recording(self, *args, **kwargs):
        seen.append(self.config._attn_implementation)
        return original(self, *args, **kwargs)

    prompts = ["### Instruct: Summarize.\n\n#Person1#: hello\n\n### Output:\n"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(flex.get_base_model()), "forward", recording)
        for merged in (False, True):
            with model_for_generation(flex, merged) as generator:
                got = generate_summaries(generator, tokenizer, prompts, "### End", max_new_tokens=4, batch_size=1)
            with model_for_generation(sdpa, merged) as generator:
                want = generate_summaries(generator, tokenizer, prompts, "### End", max_new_tokens=4, batch_size=1)
            assert got == want
    assert seen and set(seen) == {"sdpa"}
    assert flex.get_base_model().config._attn_implementation == "flex_attention"  # training gets its kernel back


def test_a_forward_in_eval_mode_keeps_the_4bit_layout_that_dequantization_reads(tiny_model_path):
    """On CPUs with AVX512-BF16, bitsandbytes would repack the weights at the first eval forward
    (trainables.model.keep_4bit_layout_on_cpu); every loaded model is kept from it."""
    import bitsandbytes as bnb

    model = _adapted(tiny_model_path)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 500, (1, 8)))
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)


@pytest.mark.parametrize("merged_copy", [False, True])
def test_generation_runs_the_models_own_code_and_gives_training_its_kernels_back(tiny_model_path, tiny_tokenizer,
                                                                                 tmp_path, merged_copy):
    """A trial generates its ROUGE summaries after its Trainer has put kernels on the model: TRL's
    fused LM head bound on the base, and with training.liger_kernels Liger's RMSNorm and SwiGLU
    forwards bound on the layers and its RoPE function put in the modeling module for the whole
    process. Generated through them, a trial's ROUGE was not its adapter's (on an H200 in-trial
    scores equalled the checkpoints' scored under Liger, and moved by up to 0.008 in a fresh
    process). Liger's kernels are Triton, GPU only, so here its two kinds of patch are made by hand,
    with kernels that would change every summary; the Trainer's binding is the real one. Generation
    writes the untouched model's summaries, and training gets every patch back afterwards."""
    import types

    from transformers.models.llama import modeling_llama

    from tests.helpers import sample_training_set
    from trainables.config import TrainingConfig
    from trainables.train import build_trainer

    model = _adapted(tiny_model_path)
    prompts = [f"### Instruct: Summarize.\n\n#Person1#: hello {i} " * (1 + i % 3) + "\n\n### Output:\n" for i in range(5)]
    dataset = sample_training_set(tiny_tokenizer, 2)
    build_trainer(model, tiny_tokenizer, dataset, dataset, TrainingConfig(micro_batch_size=2), HP, total_steps=1,
                  eval_batch_size=2, output_dir=str(tmp_path), callbacks=[])
    base = model.get_base_model()
    assert "forward" in base.__dict__  # TRL's binding (if TRL stops, the stand-ins below still prove the rest)
    # The summaries before the stand-ins, after the Trainer: on the CPU a Trainer built after other
    # tests in the process can move a near-tie of this random model's greedy choice
    with model_for_generation(model, merged_copy=merged_copy) as generator:
        untouched = generate_summaries(generator, tiny_tokenizer, prompts, "### End", max_new_tokens=10, batch_size=4)

    def scaled_norm(self, hidden):  # a kernel of training's that generation must not run
        return hidden * 3.0

    def rope_of_training(*args, **kwargs):
        raise AssertionError("training's RoPE ran while generating")

    norms = [m for m in base.modules() if type(m).__name__ == "LlamaRMSNorm"]
    for norm in norms:
        norm.forward = types.MethodType(scaled_norm, norm)
    own_rope = modeling_llama.apply_rotary_pos_emb
    modeling_llama.apply_rotary_pos_emb = rope_of_training
    try:
        with model_for_generation(model, merged_copy=merged_copy) as generator:
            assert [m for m in generator.modules() if "forward" in m.__dict__] == []
            generated = generate_summaries(generator, tiny_tokenizer, prompts, "### End", max_new_tokens=10,
                                           batch_size=4)
        assert modeling_llama.apply_rotary_pos_emb is rope_of_training
    finally:
        modeling_llama.apply_rotary_pos_emb = own_rope
    assert generated == untouched and any(generated)
    assert all(norm.__dict__["forward"].__func__ is scaled_norm for norm in norms)
    assert "forward" in base.__dict__


def test_a_model_loaded_after_a_trainer_patched_its_modeling_module_is_built_from_transformers_own_classes(
        tiny_model_path):
    """Liger's kernels replace the modeling module's norm and MLP classes and its RoPE function for
    the whole process when a Trainer starts with training.liger_kernels. A model loaded later in the
    process (a worker's next model, a benchmark's or a test's) would be built of Liger's classes, and
    generate through them for good (on an H200 a GPU test's model was). The loader builds it from
    transformers' own, and leaves the process's patch as it found it. The patch is made by hand here:
    Liger's kernels are Triton, GPU only."""
    from transformers.models.llama import modeling_llama

    load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path)))  # the process's first load
    own_norm, own_mlp = modeling_llama.LlamaRMSNorm, modeling_llama.LlamaMLP

    class TrainingNorm(own_norm):
        pass

    class TrainingMLP(own_mlp):
        pass

    modeling_llama.LlamaRMSNorm, modeling_llama.LlamaMLP = TrainingNorm, TrainingMLP
    try:
        model = load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path)))
        assert modeling_llama.LlamaRMSNorm is TrainingNorm and modeling_llama.LlamaMLP is TrainingMLP
    finally:
        modeling_llama.LlamaRMSNorm, modeling_llama.LlamaMLP = own_norm, own_mlp
    kinds = {type(m) for m in model.modules()}
    assert own_norm in kinds and own_mlp in kinds
    assert not kinds & {TrainingNorm, TrainingMLP}
