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


def _trial(tiny_model_path, tmp_path, base, compiled, folder):
    """One trial on `base`: LoRA attached, its layers compiled (or not), four steps with recompute on; and
    how many compiled versions of the layers' code dynamo held as training began."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from trainables.model import attach_lora, compile_decoder_layers, prepare_for_training
    from trainables.prompt import load_tokenizer
    from trainables.train import build_trainer

    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_path)))
    dataset = sample_training_set(tokenizer, 8)
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-2, max_length=1000, lora_dropout=0.0,
                              target_modules="all-linear")
    torch.manual_seed(0)
    model = attach_lora(prepare_for_training(base, True), hp)
    if compiled:
        compile_decoder_layers(model)
    held = len(_debug_get_cache_entry_list(_layer_code(base)))
    training = TrainingConfig(micro_batch_size=2, gradient_checkpointing=True, padding_free=True, fused_lm_head=False,
                              compile_layers=compiled, steps_per_rung=4)
    trainer = build_trainer(model, tokenizer, dataset, dataset, training, hp, total_steps=4, eval_batch_size=2,
                            output_dir=str(tmp_path / folder), callbacks=[])
    trainer.train()
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return model, tokenizer, weights, [len(row["input_ids"]) for row in dataset], held


def _layer_code(base):
    return type(base.model.layers[0]).forward.__code__


def test_compiled_layers_train_as_eager_ones_generate_eagerly_and_a_kept_bases_next_trial_compiles_afresh(
        tiny_model_path, tmp_path):
    """Compiled decoder layers (recompute on) train to where the eager layers lead, with no graph
    break; generation runs them eagerly. The next trial on the same kept base (trainables.warm, as
    reused Tune workers run them), with a LoRA of its own, compiles its layers anew and trains:
    it inherits none of the last trial's compiled code, whose guards would fail and count against
    dynamo's recompile limit. (One test: each compile costs CI 15-30 s.)"""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    from torch._dynamo.utils import counters

    from trainables import warm
    from trainables.evaluation import RougeEvaluation
    from trainables.model import load_quantized_model, merged_dense_copy

    config = ModelConfig(name_or_path=str(tiny_model_path))
    _, _, eager, lengths, _ = _trial(tiny_model_path, tmp_path, load_quantized_model(config), False, "eager")
    warm.forget_all()
    torch._dynamo.reset()
    counters.clear()
    try:
        base, was_kept = warm.base_model_for(config, load_quantized_model)
        model, tokenizer, compiled, _, held = _trial(tiny_model_path, tmp_path, base, True, "compiled")
        warm.remember_adapted(model)
        assert not was_kept and len(set(lengths)) > 1  # micro-batches of different lengths: dynamic graphs
        # No graph breaks, and three graphs for four steps of different lengths: the first layer (its
        # input needs no gradient), every later layer, and the Trainer's closing no-grad evaluation.
        assert counters["stats"]["unique_graphs"] <= 3 and not counters["graph_break"]
        assert held == 0 and 0 < len(_debug_get_cache_entry_list(_layer_code(base))) <= 3
        assert any(not torch.equal(compiled[name], eager[name]) for name in eager)  # it ran compiled code
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
        del dense

        base, was_kept = warm.base_model_for(config, load_quantized_model)  # the kept worker's next trial
        counters.clear()
        model, _, after, _, held = _trial(tiny_model_path, tmp_path, base, True, "next")
        assert was_kept and held == 0  # the last trial's compiled code forgotten once it compiled its own
        assert counters["frames"]["ok"] > 0 and not counters["graph_break"]  # its own layers, compiled
        assert 0 < len(_debug_get_cache_entry_list(_layer_code(base))) <= 3  # this trial's graphs only
        assert all(p.abs().sum() > 0 for n, p in after.items() if "lora_B" in n)  # trained anew from peft's zeros
    finally:
        warm.forget_all()


def test_compiling_a_model_without_marked_decoder_layers_is_refused_in_one_line():
    from trainables.errors import ConfigError
    from trainables.model import compile_decoder_layers

    with pytest.raises(ConfigError, match=r"^training.compile_layers: Sequential has no decoder layers"):
        compile_decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), fresh=False)


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
