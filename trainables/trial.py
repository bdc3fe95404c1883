"""One trial of the sweep: the QLoRA recipe, rung by rung.

Imports stay inside `run_trial` so that the driver can hand this function to Tune without
loading torch, transformers or bitsandbytes.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

from search.config import SweepConfig, TrainingConfig, TrialHyperparameters
from search.packing import planned_peak


EVAL_LOSS_BATCH = 16


def run_trial(trial_config: dict[str, Any], sweep: SweepConfig) -> None:
    quiet_libraries()
    from transformers import set_seed

    from trainables.data import load_dialogues, tokenize_for_training
    from trainables.evaluation import rouge_on_validation
    from trainables.memory import (
        generation_batch_size, memory_budget_bytes, use_gradient_checkpointing, use_merged_copy,
    )
    from trainables.model import (
        attach_lora, load_quantized_model, load_tokenizer, model_for_generation, prepare_for_training,
    )
    from trainables.prompt import encode_prompt
    from trainables.report import RungReporter, checkpoint_to_resume
    from trainables.train import adapter_state, build_trainer, train_with_oom_retry

    hp = TrialHyperparameters.resolve(sweep.search, trial_config)
    set_seed(sweep.training.seed)

    # Data and prompts
    tokenizer = load_tokenizer(sweep.model)
    dialogues = load_dialogues(sweep.data)
    reuse = sweep.data.reuse_tokenized
    train_set = tokenize_for_training(dialogues["train"], tokenizer, sweep.prompt, hp.max_length, reuse)
    eval_set = tokenize_for_training(dialogues["validation"], tokenizer, sweep.prompt, hp.max_length, reuse)
    if len(train_set) == 0:
        raise ValueError(f"max_length={hp.max_length}: no training summary fits; raise search.max_length")
    prompts = [encode_prompt(tokenizer, sweep.prompt, d, hp.max_length) for d in dialogues["validation"]["dialogue"]]
    references = list(dialogues["validation"]["summary"])

    # The 4-bit model with LoRA on top; recompute activations only if memory needs it
    base = load_quantized_model(sweep.model)
    plan = planned_peak(sweep, hp) if sweep.resources.gpus_per_trial == "auto" else None
    budget = memory_budget_bytes(sweep.resources, plan)
    checkpointing = use_gradient_checkpointing(sweep.training, base, hp.max_length, budget)
    training = sweep.training.model_copy(update={"gradient_checkpointing": checkpointing})
    model = attach_lora(prepare_for_training(base, checkpointing), hp)
    initial_adapter = adapter_state(model)  # where an out-of-memory retry with no checkpoint restarts
    evaluation = sweep.evaluation.model_copy(
        update={"merged_copy": use_merged_copy(sweep.evaluation, model, hp.max_length, budget)})
    generation_batch = generation_batch_size(evaluation, model, hp.max_length, budget)

    # Train rung by rung; each rung ends in evaluation, a report and an adapter checkpoint.
    # Early rungs score ROUGE on a prefix of one fixed-seed shuffle: the same dialogues for every trial.
    scoring_order = random.Random(sweep.data.seed).sample(range(len(prompts)), len(prompts))

    def score_rouge(trained_model: Any, rung: int) -> dict[str, float]:
        chosen = scoring_order[: sweep.evaluation.examples_at(rung, sweep.scheduler.max_rungs, len(prompts))]
        with model_for_generation(trained_model, evaluation.merged_copy) as generator:
            scores = rouge_on_validation(
                generator, tokenizer, [prompts[i] for i in chosen], [references[i] for i in chosen],
                sweep.prompt.end_marker, sweep.evaluation.max_new_tokens, generation_batch,
            )
        return {**scores, "rouge_examples": len(chosen)}

    reporter = RungReporter(
        score_rouge,
        sweep.training.steps_per_rung,
        trial_record={"sweep": sweep.model_dump(mode="json"), "hyperparameters": hp.model_dump(mode="json")},
    )

    def trainer_for(training: TrainingConfig) -> Any:
        return build_trainer(
            model, tokenizer, train_set, eval_set, training, hp,
            total_steps=sweep.total_steps,
            # Padding-free rows get a dense (tokens x tokens) attention mask under SDPA: keep them short.
            eval_batch_size=min(generation_batch, EVAL_LOSS_BATCH),
            output_dir=os.path.join(os.getcwd(), "trainer"),
            callbacks=[reporter],
        )

    with checkpoint_to_resume() as resume_dir:
        reporter.resume_history(resume_dir)
        train_with_oom_retry(trainer_for, training, hp, resume_dir, model, initial_adapter)


def quiet_libraries() -> None:
    """Keep trial output to Tune's table and real problems."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers 5.x renames several training arguments; the notices repeat in every trial.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
