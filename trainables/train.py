"""TRL's SFTTrainer, set up so that one rung = steps_per_rung optimizer steps ending in an
evaluation and a checkpoint. The LR schedule spans the full budget (max_rungs rungs) so every
trial is at the same point of its schedule at the same rung, whatever ASHA decides."""

from __future__ import annotations

from typing import Any

from search.config import TrainingConfig, TrialHyperparameters


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
    import torch
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    dtype = getattr(model, "dtype", None)
    rung = training.steps_per_rung
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=total_steps,
        per_device_train_batch_size=training.micro_batch_size,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        optim=training.optimizer,
        seed=training.seed,
        gradient_checkpointing=training.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        use_cpu=not on_gpu,
        logging_steps=rung,
        eval_strategy="steps",
        eval_steps=rung,
        save_strategy="steps",
        save_steps=rung,
        save_total_limit=1,  # Tune has the reported copies; keep only the newest locally
        include_num_input_tokens_seen="non_padding",
        max_length=None,  # already truncated, dialogue-first, by trainables.prompt
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=on_gpu,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to Tune's table, not raw dicts on stdout
    keep_adapter_in_float32(model)
    return trainer


def keep_adapter_in_float32(model: Any) -> None:
    """Undo SFTTrainer's bf16 cast of QLoRA adapter weights.

    A trial resumed from a checkpoint gets its adapter back through peft's load_adapter, which
    upcasts to float32; without this, resumed and uninterrupted trials would train in different
    precisions. float32 master weights are peft's default (matmuls still run in bf16 under
    autocast on GPU). In place, so the optimizer built later holds these same tensors.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != param.data.float().dtype:
            param.data = param.data.float()
