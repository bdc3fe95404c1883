"""training.compile_layers: the decoder layers compiled in place train to what the eager layers
train to, recompute included, and generation runs them eagerly. (It compiles: tens of seconds on
a CPU, so it is not in the unit layer.)"""

import json

import pytest
import torch

from tests.helpers import sample_training_set
from tests.tiny_model import SAMPLE
from trainables.config import ModelConfig, PromptConfig, TrainingConfig, TrialHyperparameters

pytestmark = pytest.mark.sweep


def _trained(tiny_model_path, tmp_path, compiled):
    from trainables.model import attach_lora, compile_decoder_layers, load_quantized_model, prepare_for_training
    from trainables.prompt import load_tokenizer
    from trainables.train import build_trainer

    config = ModelConfig(name_or_path=str(tiny_model_path))
    tokenizer = load_tokenizer(config)
    dataset = sample_training_set(tokenizer, 8)
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-2, max_length=1000, lora_dropout=0.0,
                              target_modules="all-linear")
    torch.manual_seed(0)
    model = attach_lora(prepare_for_training(load_quantized_model(config), True), hp)
    if compiled:
        compile_decoder_layers(model)
    training = TrainingConfig(micro_batch_size=2, gradient_checkpointing=True, padding_free=True, fused_lm_head=False,
                              compile_layers=compiled, steps_per_rung=4)
    trainer = build_trainer(model, tokenizer, dataset, dataset, training, hp, total_steps=4, eval_batch_size=2,
                            output_dir=str(tmp_path / f"out-{compiled}"), callbacks=[])
    trainer.train()
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return model, tokenizer, weights, [len(row["input_ids"]) for row in dataset]


def test_compiled_decoder_layers_train_as_the_eager_ones_and_generate_eagerly(tiny_model_path, tmp_path):
    from torch._dynamo.utils import counters

    from trainables.evaluation import RougeEvaluation
    from trainables.model import merged_dense_copy

    _, _, eager, lengths = _trained(tiny_model_path, tmp_path, compiled=False)
    model, tokenizer, compiled, _ = _trained(tiny_model_path, tmp_path, compiled=True)
    assert len(set(lengths)) > 1  # micro-batches of different lengths: dynamic graphs, not one per length
    # No graph breaks, and three graphs for four steps of different lengths: the first layer (its
    # input needs no gradient), every later layer, and the Trainer's closing no-grad evaluation.
    assert counters["stats"]["unique_graphs"] <= 3 and not counters["graph_break"]
    assert any(not torch.equal(compiled[name], eager[name]) for name in eager)  # it ran compiled code, not eager
    for name in eager:  # four steps of training, recompute on: where the eager layers led, to float rounding
        assert (compiled[name] - eager[name]).norm() <= 1e-3 * eager[name].norm(), name

    frames = counters["frames"]["total"]
    evaluation = RougeEvaluation(tokenizer, PromptConfig(), 256, 8, 2, merged_copy=False)
    dialogues = [json.loads(line)["dialogue"] for line in SAMPLE.read_text().splitlines()[:2]]
    summaries = evaluation.summaries(model, evaluation.prompts(dialogues))
    assert all(summaries) and counters["frames"]["total"] == frames  # decoding compiled nothing new
    dense = merged_dense_copy(model)  # a deep copy: compiled code it carried would run the 4-bit layers
    assert all(getattr(module, "_compiled_call_impl", None) is None for module in dense.modules())
    assert dense.model.layers[0].self_attn.q_proj.weight.dtype != torch.uint8


def test_compiling_a_model_without_marked_decoder_layers_is_refused_in_one_line():
    from trainables.errors import ConfigError
    from trainables.model import compile_decoder_layers

    with pytest.raises(ConfigError, match=r"^training.compile_layers: Sequential has no decoder layers"):
        compile_decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), fresh=False)


def test_a_kept_workers_next_trial_compiles_its_own_layers_afresh(tiny_model_path, tmp_path):
    """Trial after trial on one kept base (trainables.warm, as reused Tune workers run them), each
    with a LoRA of its own: each compiles its layers anew and trains; none inherits the last
    trial's compiled code, whose guards would fail and count against dynamo's recompile limit."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    from torch._dynamo.utils import counters

    from trainables import warm
    from trainables.model import attach_lora, compile_decoder_layers, load_quantized_model, prepare_for_training
    from trainables.prompt import load_tokenizer
    from trainables.train import build_trainer

    config = ModelConfig(name_or_path=str(tiny_model_path))
    tokenizer = load_tokenizer(config)
    dataset = sample_training_set(tokenizer, 4)
    training = TrainingConfig(micro_batch_size=2, gradient_checkpointing=False, padding_free=True,
                              fused_lm_head=False, compile_layers=True, steps_per_rung=3)
    def compiled_entries(code):  # the compiled versions dynamo keeps for a function
        return len(_debug_get_cache_entry_list(code))

    warm.forget_all()
    try:
        for trial in range(2):
            base, was_kept = warm.base_model_for(config, load_quantized_model)
            assert was_kept == (trial == 1)
            hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-2, max_length=1000,
                                      lora_dropout=0.0, target_modules="all-linear")
            model = attach_lora(prepare_for_training(base, False), hp)
            compile_decoder_layers(model)
            warm.remember_adapted(model)
            layer_code = type(base.model.layers[0]).forward.__code__
            assert compiled_entries(layer_code) == 0  # the last trial's code is forgotten
            before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
            counters.clear()
            build_trainer(model, tokenizer, dataset, dataset, training, hp, total_steps=2, eval_batch_size=2,
                          output_dir=str(tmp_path / f"trial-{trial}"), callbacks=[]).train()
            assert counters["frames"]["ok"] > 0 and not counters["graph_break"]  # its own layers, compiled
            assert 0 < compiled_entries(layer_code) <= 3  # this trial's graphs only (first layer, the others, a length)
            assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)
    finally:
        warm.forget_all()


def test_compiled_layers_recompute_by_the_compiler_and_keep_the_share_of_activations_asked(tiny_model_path,
                                                                                           tiny_tokenizer):
    """Recompute planned, a compiled layer has no checkpoint (transformers 5.17 checkpoints around
    the compiled call, eagerly, from the layer's flag; a checkpoint inside the compiled code failed
    to compile on torch 2.11): the flag is off, and the compiler splits the layer with torch's
    activation memory budget at `activations_kept`. At 0 a training forward keeps far fewer bytes
    for the backward than the same layers compiled without recompute, about what transformers' own
    checkpoint keeps; at 0.5 it keeps more than at 0 and less than without recompute. Each model
    compiled in the same process compiles its own code (dynamo does not guard on the budget, so
    sharing would have run the first one's split). A kept base's next trial, planned without
    recompute, gets uncompiled layers back."""
    from torch._dynamo.utils import counters

    from trainables.model import attach_lora, compile_decoder_layers, load_quantized_model, prepare_for_training

    config = ModelConfig(name_or_path=str(tiny_model_path))
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-2, max_length=1000, lora_dropout=0.05,
                              target_modules="all-linear")
    dialogue = json.loads(SAMPLE.read_text().splitlines()[0])["dialogue"]
    ids = tiny_tokenizer(dialogue, return_tensors="pt")["input_ids"][:, :256]

    def saved_bytes(model):  # what a training forward keeps for its backward
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return total

    def adapted(recompute, compiled, activations_kept=0.0):
        torch.manual_seed(0)
        base = load_quantized_model(config)
        model = attach_lora(prepare_for_training(base, recompute), hp)
        if compiled:
            compile_decoder_layers(model, fresh=False, activations_kept=activations_kept)
        return base, model

    torch._dynamo.reset()
    checkpointed = saved_bytes(adapted(recompute=True, compiled=False)[1])  # transformers' own checkpoint, eager
    kept = saved_bytes(adapted(recompute=False, compiled=True, activations_kept=0.5)[1])  # no recompute: all kept
    graphs = counters["stats"]["unique_graphs"]
    base, model = adapted(recompute=True, compiled=True)
    layers = list(base.model.layers)
    assert all(not layer.gradient_checkpointing for layer in layers)
    recomputed = saved_bytes(model)
    assert counters["stats"]["unique_graphs"] > graphs  # its own code, not the model without recompute's
    assert recomputed < 0.6 * kept, (recomputed, kept)
    assert recomputed < 1.25 * checkpointed, (recomputed, checkpointed)
    graphs = counters["stats"]["unique_graphs"]
    half = saved_bytes(adapted(recompute=True, compiled=True, activations_kept=0.5)[1])
    assert counters["stats"]["unique_graphs"] > graphs
    assert recomputed < half < kept, (recomputed, half, kept)

    prepare_for_training(base, False)  # the next trial on this kept base, planned without recompute
    assert all(layer._compiled_call_impl is None and not layer.gradient_checkpointing for layer in layers)
