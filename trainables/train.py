"""TRL's SFTTrainer, set up so that one rung = steps_per_rung optimizer steps ending in an
evaluation and a checkpoint. The LR schedule spans the full budget (max_rungs rungs) so every
trial is at the same point of its schedule at the same rung, whatever ASHA decides."""

from __future__ import annotations

import gc
import logging
import os
import warnings
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from trainables.config import TrainingConfig, TrialHyperparameters
from trainables.errors import ConfigError
from trainables.model import checkpointing_rename_quiet, loaded_compute_dtype

logger = logging.getLogger(__name__)


def build_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any,
    training: TrainingConfig,
    hp: TrialHyperparameters,
    total_steps: int,
    eval_batch_size: int,
    output_dir: str,
    callbacks: list,
) -> Any:
    """`training` as the trial's plan decided it: no `auto` left (trainables.config.TrialConfig)."""
    on_gpu = torch.cuda.is_available()
    if training.liger_kernels is True and not on_gpu:
        raise ConfigError("training.liger_kernels: true needs a CUDA GPU (Liger's kernels are Triton); "
                          "this trial has none")
    trainer_class = fused_head_sft_trainer() if training.fused_lm_head else full_logits_sft_trainer()
    with checkpointing_rename_quiet(), warnings.catch_warnings():
        # TRL deprecates use_liger_kernel for the Hub's kernels, which an offline cluster cannot fetch
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`use_liger_kernel=True` is deprecated")
        trainer = trainer_class(
            model=model,
            args=_sft_config(output_dir, total_steps, training, hp, eval_batch_size, mixed_precision(model, on_gpu),
                             on_gpu),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)  # metrics go to Tune's table, not raw dicts on stdout
    trainer.loraplus_lr_ratio = hp.loraplus_lr_ratio
    keep_adapter_in_float32(model)
    return trainer


def _sft_config(output_dir: str, total_steps: int, training: TrainingConfig, hp: TrialHyperparameters,
                eval_batch_size: int, precision: dict[str, bool], on_gpu: bool) -> Any:
    rung = training.steps_per_rung
    return SFTConfig(
        output_dir=output_dir,
        max_steps=total_steps,
        **micro_batches(training, hp),
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=training.lr_scheduler,
        lr_scheduler_kwargs=training.lr_scheduler_kwargs(total_steps),
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        optim=training.optimizer,
        seed=training.seed,
        # Decided by the trial's memory plan. Compiled layers recompute as the compiler splits them
        # (trainables.model.InductorRecomputing); the Trainer turning it on would wrap them in an eager checkpoint.
        gradient_checkpointing=training.gradient_checkpointing and training.compile_layers is not True,
        padding_free=training.padding_free is not False,  # a trial's is decided; an undecided auto as it was before
        eval_packing=False,  # the validation loss sees each example as it is, packed or not
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_liger_kernel=training.liger_kernels is True,  # RMSNorm, SwiGLU, RoPE; TRL keeps its own fused LM head
        **precision,
        use_cpu=not on_gpu,
        # Every step's loss, for trainables.divergence. The host already waits for each step's end
        # (trainables.report times each step), so reading the loss then costs no extra wait.
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=rung,
        save_strategy="steps",
        save_steps=rung,
        save_total_limit=1,  # Tune has the reported copies; keep only the newest locally
        include_num_input_tokens_seen="non_padding",
        # Fewer points a step where the host waits for the GPU (CUDA's sync debug mode counted 17 a
        # step on an H200, benchmarks/results/2026-12-02-trial-speed-compiler-recompute): batches
        # copied to the GPU from pinned memory without waiting (3), and no NaN/inf check of each
        # step's loss, which only filters the logged training loss (2; ASHA reads ROUGE), and would hide
        # a NaN loss from trainables.divergence.
        accelerator_config={"non_blocking": on_gpu},
        logging_nan_inf_filter=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=on_gpu,
    )


def micro_batches(training: TrainingConfig, hp: TrialHyperparameters) -> dict[str, Any]:
    """SFTConfig's micro-batch settings. Unpacked: micro_batch_size examples, no truncation (trainables.prompt
    already cut them, dialogue-first). Packed (training.packing): one row of whole examples, up to the
    micro_batch_size x max_length tokens the memory plan sized the micro-batch for; best-fit decreasing never
    cuts an example, since none is longer than max_length."""
    if not training.packing:
        return {"per_device_train_batch_size": training.micro_batch_size, "max_length": None}
    return {"per_device_train_batch_size": 1, "packing": True, "packing_strategy": "bfd",
            "max_length": training.micro_batch_size * hp.max_length}


class LoraPlusOptimizer:
    """A Trainer whose optimizer trains lora_B at loraplus_lr_ratio times lora_A's rate (LoRA+), through peft's
    create_loraplus_optimizer, with the optimizer class and arguments the Trainer's `optim` gives.

    The Trainer builds its optimizer when training starts, so a retry or a resumed trial builds it the same way
    (a resumed one then loads the saved state into these groups). The schedule scales every group's rate alike.
    At 1 the Trainer's own optimizer, unchanged."""

    loraplus_lr_ratio: float = 1.0

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.loraplus_lr_ratio != 1:
            from peft.optimizers import create_loraplus_optimizer

            opt_model = self.model if model is None else model
            optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = create_loraplus_optimizer(
                opt_model, optimizer_class, loraplus_lr_ratio=self.loraplus_lr_ratio,
                loraplus_weight_decay=self.args.weight_decay, **optimizer_kwargs)
            logger.info("LoRA+: lora_B at %g x the learning rate", self.loraplus_lr_ratio)
        return super().create_optimizer(model)


def fused_head_sft_trainer() -> type:
    """SFTTrainer, whose training loss goes through TRL's chunked LM head as it does there, without
    the entropy and token accuracy TRL derives beside it at every step.

    Those metrics, read by nothing here, made 6 of the 17 points a step where the host waited for
    the GPU (their .item() calls and a compare on their values; CUDA's sync debug mode on an H200,
    benchmarks/results/2026-12-02-trial-speed-compiler-recompute): each one empties the queue of
    work the host had launched ahead. TRL has no switch for them. The loss is TRL's own arithmetic,
    the label tokens' negative log-probabilities summed over their number (tests/test_train.py);
    evaluation, and any loss TRL computes otherwise, take TRL's path."""
    class FusedHeadSFTTrainer(LoraPlusOptimizer, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            plain_loss = (self.compute_loss_func is None and self.label_smoother is None and not self.aux_loss_enabled
                          and self.args.loss_type == "nll")
            if return_outputs or not self.model.training or not plain_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return loss

    return FusedHeadSFTTrainer


def full_logits_sft_trainer() -> type:
    """SFTTrainer with transformers' own loss: the model's forward with labels, over full logits.

    SFTTrainer always computes its loss through TRL's chunked LM head, which also derives entropy
    and token accuracy for its logs. On CPU its torch fallback made a step 2.5x slower than this.
    Everything else (collation, padding-free batches, checkpoints) is SFTTrainer's.
    """
    class FullLogitsSFTTrainer(LoraPlusOptimizer, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return FullLogitsSFTTrainer


def mixed_precision(model: Any, on_gpu: bool) -> dict[str, bool]:
    """The Trainer's autocast: the 4-bit layers' compute dtype, on a GPU.

    Not `model.dtype`: k-bit preparation makes the norms and embeddings float32, so a prepared
    model reports float32, and training without autocast then runs attention, the LoRA branches
    and the LM head in float32. (How much that cost on a GPU was not measured apart.)
    """
    dtype = loaded_compute_dtype(model) if on_gpu else torch.float32
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def keep_adapter_in_float32(model: Any) -> None:
    """Undo SFTTrainer's bf16 cast of QLoRA adapter weights.

    A trial resumed from a checkpoint gets its adapter back through peft's load_adapter, which
    upcasts to float32; without this, resumed and uninterrupted trials would train in different
    precisions. float32 master weights are peft's default (matmuls still run in bf16 under
    autocast on GPU). In place, so the optimizer built later holds these same tensors.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


class TrialOutOfMemory(RuntimeError):
    """A trial that ran out of GPU memory, with the settings that did it."""


def adapter_state(model: Any) -> dict:
    """A copy of the trainable (LoRA) weights: a retry that finds no checkpoint starts from these."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def train_with_oom_retry(trainer_for, training: TrainingConfig, hp: TrialHyperparameters,
                         resume_dir: str | None, model: Any, initial_adapter: dict) -> None:
    """Train; on CUDA out-of-memory, once more at half the micro-batch and twice the accumulation.

    The effective batch (micro-batch x accumulation) stays the same, so the learning-rate
    schedule and the step count mean the same. The retry resumes from the newest checkpoint this
    process wrote (or the one Tune restarted it from); with none, from the initial adapter.
    A trial is its own process, so its failure frees its memory and leaves other trials sharing
    the GPU running.
    """
    trainer = trainer_for(training)
    try:
        _train(trainer, training, hp, resume_dir)
        return
    except torch.cuda.OutOfMemoryError as exc:
        cause = _oom_cause(training, hp)
        if not training.retry_on_oom or training.micro_batch_size == 1:
            raise TrialOutOfMemory(f"{cause}; lower training.micro_batch_size or search.max_length") from exc
        output_dir = trainer.args.output_dir
    del trainer
    model.zero_grad(set_to_none=True)
    gc.collect()
    in_use = ""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        in_use = f" ({torch.cuda.memory_allocated() / 2**30:.1f} GiB still allocated before the retry)"
    smaller = training.model_copy(update={
        "micro_batch_size": training.micro_batch_size // 2,
        "gradient_accumulation_steps": training.gradient_accumulation_steps * 2,
    })
    logger.warning("%s; retrying from the last checkpoint with micro_batch_size=%d, gradient_accumulation_steps=%d%s",
                   cause, smaller.micro_batch_size, smaller.gradient_accumulation_steps, in_use)
    latest = (get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None) or resume_dir
    if latest is None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in initial_adapter:
                    param.copy_(initial_adapter[name])
    try:
        _train(trainer_for(smaller), smaller, hp, latest)
    except torch.cuda.OutOfMemoryError as exc:
        raise TrialOutOfMemory(
            f"{_oom_cause(smaller, hp)} (after retrying from micro_batch_size={training.micro_batch_size}); "
            "lower training.micro_batch_size or search.max_length"
        ) from exc


def _oom_cause(training: TrainingConfig, hp: TrialHyperparameters) -> str:
    return (f"out of GPU memory at micro_batch_size={training.micro_batch_size}, max_length={hp.max_length}, "
            f"gradient_checkpointing={training.gradient_checkpointing}")


def _train(trainer: Any, training: TrainingConfig, hp: TrialHyperparameters, resume_dir: str | None) -> None:
    simulate_oom_for_tests(trainer, training, hp)
    with checkpointing_rename_quiet():
        trainer.train(resume_from_checkpoint=resume_dir)


def simulate_oom_for_tests(trainer: Any, training: TrainingConfig, hp: TrialHyperparameters) -> None:
    """Test-only fault switch, so CI (no GPU) drives the real recovery path.

    QLORA_SWEEP_TEST_OOM_ABOVE_TOKENS=T[@S]: a training step at global step >= S (default 0) of a
    trial whose micro_batch_size x max_length exceeds T raises CUDA's out-of-memory error, as a
    too-large batch would. A real OOM on a GPU is recorded in BENCHMARKS.md.
    """
    setting = os.environ.get("QLORA_SWEEP_TEST_OOM_ABOVE_TOKENS")
    if not setting:
        return
    limit, _, first_step = setting.partition("@")
    if training.micro_batch_size * hp.max_length <= int(limit):
        return

    class RaiseOutOfMemory(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= int(first_step or 0):
                raise torch.cuda.OutOfMemoryError(
                    f"simulated: {training.micro_batch_size} x {hp.max_length} tokens > {limit}")

    trainer.add_callback(RaiseOutOfMemory())
