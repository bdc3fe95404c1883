"""The trial's trainer: a padding-free micro-batch trains on exactly what a padded one does, with
each example's attention kept inside the example."""

import json
import time

import pytest
import torch

from tests.helpers import rate_and_decay_by_parameter, sample_training_set
from tests.tiny_model import SAMPLE
from trainables.config import ModelConfig, TrainingConfig, TrialHyperparameters

pytestmark = pytest.mark.unit


LEARNING_RATE = 1e-3


def _trainer(tiny_model_path, tmp_path, padding_free, fused_lm_head=False, packing=False, micro_batch_size=4,
             max_length=1000, examples=4):
    training = TrainingConfig(micro_batch_size=micro_batch_size, gradient_checkpointing=False,
                              padding_free=padding_free, fused_lm_head=fused_lm_head, packing=packing)
    return _trial_trainer(tiny_model_path, tmp_path / f"out-{padding_free}-{fused_lm_head}-{packing}", training,
                          total_steps=1, max_length=max_length, examples=examples)


def _trial_trainer(tiny_model_path, output_dir, training, total_steps, max_length=1000, examples=4,
                   loraplus_lr_ratio=1.0):
    """A trial's Trainer on the tiny model in 4-bit with LoRA, and the examples it trains on."""
    from trainables.model import attach_lora, load_quantized_model, prepare_for_training
    from trainables.prompt import load_tokenizer
    from trainables.train import build_trainer

    model_config = ModelConfig(name_or_path=str(tiny_model_path))
    tokenizer = load_tokenizer(model_config)
    dataset = sample_training_set(tokenizer, examples)
    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=LEARNING_RATE, max_length=max_length,
                              lora_dropout=0.0, target_modules="all-linear", loraplus_lr_ratio=loraplus_lr_ratio)
    torch.manual_seed(0)
    model = attach_lora(prepare_for_training(load_quantized_model(model_config), False), hp)
    trainer = build_trainer(model, tokenizer, dataset, dataset, training, hp, total_steps=total_steps,
                            eval_batch_size=4, output_dir=str(output_dir), callbacks=[])
    return trainer, [dataset[i] for i in range(len(dataset))]


def _loss(trainer, batch):
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def test_a_padding_free_micro_batch_has_the_loss_of_the_padded_one(tiny_model_path, tmp_path):
    padded_trainer, examples = _trainer(tiny_model_path, tmp_path, padding_free=False)
    free_trainer, _ = _trainer(tiny_model_path, tmp_path, padding_free=True)
    assert len({len(e["input_ids"]) for e in examples}) > 1  # lengths differ, so the padded batch has padding

    padded = padded_trainer.data_collator(examples)
    flat = free_trainer.data_collator(examples)
    assert "attention_mask" in padded and padded["attention_mask"].sum() < padded["attention_mask"].numel()
    assert flat["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))  # no padding at all

    expected = _loss(padded_trainer, padded)
    assert abs(_loss(free_trainer, flat) - expected) < 1e-5 * expected

    # The check can fail: one running position sequence lets examples attend to each other.
    leaky = {**flat, "position_ids": torch.arange(flat["input_ids"].shape[1])[None]}
    assert abs(_loss(free_trainer, leaky) - expected) > 1e-4 * expected


def test_packed_micro_batches_hold_whole_examples_up_to_the_planned_tokens_each_with_its_own_loss(
        tiny_model_path, tmp_path):
    """training.packing: a micro-batch is one padding-free row of whole examples, up to micro_batch_size
    x max_length tokens (what the memory plan sized it for), so it holds more examples than
    micro_batch_size when they are shorter than max_length; no example is cut, lost or repeated, and
    the row's loss is that of the same examples padded (attention stays inside each example)."""
    count, micro, max_length = 24, 2, 512  # the sample's examples are 211-283 tokens: about 4 fit 2 x 512
    packed, examples = _trainer(tiny_model_path, tmp_path, padding_free=True, packing=True,
                                micro_batch_size=micro, max_length=max_length, examples=count)
    padded, _ = _trainer(tiny_model_path, tmp_path, padding_free=False, micro_batch_size=micro,
                         max_length=max_length, examples=count)
    rows = list(packed.get_train_dataloader())
    starts = [(row["position_ids"][0] == 0).nonzero().flatten().tolist() + [row["input_ids"].shape[1]]
              for row in rows]
    seen = [tuple(row["input_ids"][0, a:b].tolist()) for row, s in zip(rows, starts) for a, b in zip(s, s[1:])]
    assert all(row["input_ids"].shape[0] == 1 and row["input_ids"].shape[1] <= micro * max_length for row in rows)
    assert sorted(seen) == sorted(tuple(e["input_ids"]) for e in examples)  # each example whole, once
    assert len(seen) / len(rows) > 1.5 * micro  # about 4 a row, where unpacked micro-batches hold 2

    row = rows[0]
    inside = [{"input_ids": ids, "labels": labels} for ids, labels in (
        (row["input_ids"][0, a:b].tolist(), row["labels"][0, a:b].tolist()) for a, b in zip(starts[0], starts[0][1:]))]
    expected = _loss(padded, padded.data_collator(inside))
    as_packed = {key: row[key] for key in ("input_ids", "labels", "position_ids")}
    assert abs(_loss(packed, as_packed) - expected) < 1e-5 * expected


@pytest.mark.parametrize("compute_dtype, expected", [("bfloat16", {"bf16": True, "fp16": False}),
                                                     ("float16", {"bf16": False, "fp16": True}),
                                                     ("float32", {"bf16": False, "fp16": False})])
def test_training_autocasts_to_the_4bit_compute_dtype_though_preparation_made_the_model_float32(
        tiny_model_path, compute_dtype, expected):
    from trainables.model import attach_lora, load_quantized_model, prepare_for_training
    from trainables.train import mixed_precision

    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=192, lora_dropout=0.0,
                              target_modules="all-linear")
    base = load_quantized_model(ModelConfig(name_or_path=str(tiny_model_path), compute_dtype=compute_dtype))
    model = attach_lora(prepare_for_training(base, False), hp)
    assert model.dtype == torch.float32  # what k-bit preparation leaves, whatever the compute dtype
    assert mixed_precision(model, on_gpu=True) == expected
    assert mixed_precision(model, on_gpu=False) == {"bf16": False, "fp16": False}


def test_full_logits_and_trls_fused_lm_head_give_the_same_loss(tiny_model_path, tmp_path):
    from trl import SFTTrainer

    full, examples = _trainer(tiny_model_path, tmp_path, padding_free=True)
    fused, _ = _trainer(tiny_model_path, tmp_path, padding_free=True, fused_lm_head=True)
    assert isinstance(fused, SFTTrainer) and isinstance(full, SFTTrainer) and type(fused) is not type(full)
    batch = full.data_collator(examples)
    expected = _loss(fused, batch)
    assert abs(_loss(full, batch) - expected) < 1e-5 * expected


def test_the_fused_heads_training_loss_is_trls_without_its_per_step_metrics(tiny_model_path, tmp_path):
    """A training step's loss through the fused LM head is TRL's own, to float rounding, with and
    without the Trainer's token count; TRL's entropy and token accuracy (host-GPU syncs every step)
    are not computed."""
    from trl import SFTTrainer

    fused, examples = _trainer(tiny_model_path, tmp_path, padding_free=True, fused_lm_head=True)
    batch = fused.data_collator(examples)
    fused.model.train()  # lora_dropout 0: training mode is deterministic here
    with torch.no_grad():
        for count in (None, torch.tensor(57)):
            ours = float(fused.compute_loss(fused.model, dict(batch), num_items_in_batch=count))
            assert "entropy" not in fused._metrics["train"] and "mean_token_accuracy" not in fused._metrics["train"]
            trls = float(SFTTrainer.compute_loss(fused, fused.model, dict(batch), num_items_in_batch=count))
            assert len(fused._metrics["train"]["entropy"]) == 1  # TRL's path computed them: the check can fail
            fused._metrics["train"].clear()
            assert ours == pytest.approx(trls, rel=1e-6)
    args = fused.args  # and the Trainer's own sync points this trial turns off
    assert args.logging_nan_inf_filter is False
    assert args.accelerator_config.non_blocking is torch.cuda.is_available() is args.dataloader_pin_memory


def test_liger_kernels_reach_the_trainer_and_a_trial_without_a_gpu_refuses_them_in_one_line(tmp_path):
    from trainables.errors import ConfigError
    from trainables.train import _sft_config, build_trainer

    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=64, lora_dropout=0.0,
                              target_modules="all-linear")
    for liger in (True, False):
        args = _sft_config(str(tmp_path), 3, TrainingConfig(liger_kernels=liger), hp, 4, {}, on_gpu=False)
        assert args.use_liger_kernel is liger
    if torch.cuda.is_available():
        return  # the GPU test (tests/test_gpu.py) trains with them
    with pytest.raises(ConfigError, match=r"^training.liger_kernels: true needs a CUDA GPU"):
        build_trainer(None, None, None, None, TrainingConfig(liger_kernels=True), hp, total_steps=3,
                      eval_batch_size=4, output_dir=str(tmp_path), callbacks=[])


def test_dense_layers_kept_in_bf16_train_to_the_float32_preparations_loss(tiny_model_path):
    """float32_dense_layers off: norms, embeddings and the LM head stay in the compute dtype, LoRA
    stays float32 and trainable, the rest frozen; the loss of a batch is the float32-prepared
    model's to bf16 rounding, and gradients reach every LoRA matrix."""
    from trainables.model import attach_lora, load_quantized_model, prepare_for_training
    from trainables.prompt import load_tokenizer

    hp = TrialHyperparameters(lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=192, lora_dropout=0.0,
                              target_modules="all-linear")
    config = ModelConfig(name_or_path=str(tiny_model_path), compute_dtype="bfloat16")
    text = [json.loads(line)["dialogue"][:300] for line in SAMPLE.read_text().splitlines()[:2]]
    batch = load_tokenizer(config)(text, return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    losses = {}
    for float32_dense in (True, False):
        torch.manual_seed(0)
        model = attach_lora(prepare_for_training(load_quantized_model(config), True, float32_dense), hp)
        base = model.get_base_model()
        dense = [base.model.norm.weight, base.model.embed_tokens.weight, base.lm_head.weight]
        assert {p.dtype for p in dense} == {torch.float32 if float32_dense else torch.bfloat16}
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable)
        assert base.is_gradient_checkpointing
        model.train()
        loss = model(**batch).loss
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
        losses[float32_dense] = float(loss)
    assert losses[False] == pytest.approx(losses[True], rel=2e-2)


def test_a_rungs_step_pace_is_its_first_step_its_median_step_and_the_time_beyond_it():
    """Rung rows carry the pace of their steps, to tell a rung that ran slow throughout (the median)
    from one where a few steps did (the time beyond the median), and whether its first step was one."""
    from trainables.report import step_pace

    assert step_pace([2.1, 0.1, 0.1, 0.1]) == pytest.approx(
        {"step_s_first": 2.1, "step_s_median": 0.1, "train_s_beyond_median": 2.0})
    assert step_pace([0.3, 0.1, 0.2]) == pytest.approx(
        {"step_s_first": 0.3, "step_s_median": 0.2, "train_s_beyond_median": 0.1})
    assert step_pace([]) == {"step_s_first": None, "step_s_median": None,
                             "train_s_beyond_median": None}  # a rung resumed at its end


def test_the_startup_clock_gives_each_part_and_the_parts_within_one_that_add_up_to_less():
    from trainables.report import StartupClock

    clock = StartupClock(time.perf_counter())
    clock.mark("imports")
    clock.mark_within("tokenizer")
    time.sleep(0.02)
    clock.mark_within("tokenized")
    time.sleep(0.01)  # the part's rest, not marked within
    clock.mark("data")
    clock.mark("model")
    assert set(clock.parts) == {"startup_imports_s", "startup_data_s", "startup_data_tokenizer_s",
                                "startup_data_tokenized_s", "startup_model_s"}
    within = clock.parts["startup_data_tokenizer_s"] + clock.parts["startup_data_tokenized_s"]
    assert clock.parts["startup_data_tokenized_s"] >= 0.02 and within + 0.01 <= clock.parts["startup_data_s"]


@pytest.mark.parametrize("scheduler, warmup, factors", [
    # 2 rungs of 3 steps: the rate of each step, then after the last
    ("warmup_stable_decay", 0, [1, 1, 1, 1, 2 / 3, 1 / 3, 0]),
    ("warmup_stable_decay", 2, [0, 0.5, 1, 1, 2 / 3, 1 / 3, 0]),  # the warm-up, then the same last rung
    ("constant", 0, [1, 1, 1, 1, 1, 1, 1]),
])
def test_warmup_stable_decay_holds_the_rate_until_the_last_rung_and_takes_it_to_zero_over_it(
        scheduler, warmup, factors, tiny_model_path, tmp_path):
    """A trial's Trainer builds the schedule it trains on (the Trainer's own create_scheduler, as train() calls
    it) from the trial's training config: ASHA's earlier rungs at the constant rate, the last annealed."""
    training = TrainingConfig(steps_per_rung=3, lr_scheduler=scheduler, warmup_steps=warmup,
                              gradient_checkpointing=False)
    trainer, _ = _trial_trainer(tiny_model_path, tmp_path / "out", training, total_steps=6)
    peak = LEARNING_RATE
    trainer.create_optimizer_and_scheduler(num_training_steps=6)
    rates = []
    for _ in factors:
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates == pytest.approx([peak * f for f in factors])


def test_warmup_stable_decay_never_decays_into_the_warm_up_of_a_one_rung_budget():
    training = TrainingConfig(steps_per_rung=10, lr_scheduler="warmup_stable_decay", warmup_steps=4)
    assert training.lr_scheduler_kwargs(total_steps=10) == {"num_decay_steps": 6, "decay_type": "linear"}
    assert training.lr_scheduler_kwargs(total_steps=30) == {"num_decay_steps": 10, "decay_type": "linear"}
    assert TrainingConfig(lr_scheduler="linear").lr_scheduler_kwargs(total_steps=30) == {}


@pytest.mark.parametrize("ratio", [1.0, 16.0])
def test_loraplus_trains_lora_b_at_the_ratio_times_lora_as_rate_through_the_trials_schedule(
        ratio, tiny_model_path, tmp_path):
    """search.loraplus_lr_ratio reaches the optimizer the trial's Trainer builds (its `optim`, its weight decay,
    its schedule): every LoRA weight in it once, lora_A at the learning rate, lora_B at the ratio times it."""
    training = TrainingConfig(steps_per_rung=2, lr_scheduler="linear", warmup_steps=0, weight_decay=0.01,
                              gradient_checkpointing=False)
    trainer, _ = _trial_trainer(tiny_model_path, tmp_path / "out", training, total_steps=4, loraplus_lr_ratio=ratio)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    assert type(trainer.optimizer).__name__ == "AdamW"

    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    groups = rate_and_decay_by_parameter(trainer.model, trainer.optimizer)
    assert set(groups) == trained and sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(trained)
    a_weights = {name for name in trained if "lora_A" in name}
    assert a_weights and len(a_weights) * 2 == len(trained)
    for name, (rate, decay) in groups.items():
        assert rate == pytest.approx(LEARNING_RATE * (1 if name in a_weights else ratio)), name
        assert decay == 0.01, name

    trainer.optimizer.step()
    trainer.lr_scheduler.step()  # linear over 4 steps: every group at 3/4 of its own rate
    for name, (rate, _) in rate_and_decay_by_parameter(trainer.model, trainer.optimizer).items():
        assert rate == pytest.approx(0.75 * LEARNING_RATE * (1 if name in a_weights else ratio)), name


def test_a_loraplus_trial_resumed_from_its_checkpoint_trains_the_adapter_an_uninterrupted_one_does(
        tiny_model_path, tmp_path):
    """The optimizer's LoRA+ groups are saved with a checkpoint and loaded back into the same groups: a trial
    that Tune restarts from its first rung ends where one that ran through ends, and differs from plain LoRA's."""
    training = TrainingConfig(steps_per_rung=1, micro_batch_size=2, lr_scheduler="constant", warmup_steps=0,
                              gradient_checkpointing=False)

    from transformers import TrainerCallback

    class StopAfterTheFirstRung(TrainerCallback):  # as a killed trial: its first rung's checkpoint, nothing more
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = True

    def adapter_after(name, ratio, resume_from=None, stop_early=False):
        trainer, _ = _trial_trainer(tiny_model_path, tmp_path / name, training, total_steps=3,
                                    loraplus_lr_ratio=ratio)
        if stop_early:
            trainer.add_callback(StopAfterTheFirstRung())
        trainer.train(resume_from_checkpoint=resume_from)
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    through = adapter_after("through", 16.0)
    adapter_after("killed", 16.0, stop_early=True)
    resumed = adapter_after("resumed", 16.0, resume_from=str(tmp_path / "killed" / "checkpoint-1"))
    plain = adapter_after("plain", 1.0)
    assert set(resumed) == set(through)
    for name in through:
        assert torch.allclose(resumed[name], through[name], atol=1e-6), name
    b_weights = [name for name in through if "lora_B" in name]
    assert any(not torch.allclose(through[name], plain[name], atol=1e-4) for name in b_weights)
