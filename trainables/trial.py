"""One trial of the sweep: the QLoRA recipe, rung by rung, as the driver planned it.

The driver hands in a `TrialConfig` with every choice made: the hyperparameters Optuna picked and
the memory plan (recompute, micro-batch, merged copy, generation batch). What follows reads like
the recipe: data and prompts, the 4-bit model, LoRA, then training rung by rung, each rung ending
in evaluation, a report to Tune and an adapter checkpoint.
"""

from __future__ import annotations

import os
import random
from typing import Any

from transformers import set_seed

from trainables.config import TrainingConfig, TrialConfig
from trainables.data import load_dialogues, tokenize_for_training
from trainables.evaluation import RougeEvaluation
from trainables.model import attach_lora, load_quantized_model, prepare_for_training
from trainables.prompt import load_tokenizer
from trainables.report import RungReporter, checkpoint_to_resume
from trainables.train import adapter_state, build_trainer, train_with_oom_retry

EVAL_LOSS_BATCH = 16  # padding-free rows get a dense (tokens x tokens) attention mask under SDPA: keep them short


def run_trial(trial: TrialConfig) -> None:
    hp = trial.hyperparameters
    set_seed(trial.training.seed)

    # Data and prompts
    tokenizer = load_tokenizer(trial.model)
    dialogues = load_dialogues(trial.data)
    reuse = trial.data.reuse_tokenized
    train_set = tokenize_for_training(dialogues["train"], tokenizer, trial.prompt, hp.max_length, reuse)
    eval_set = tokenize_for_training(dialogues["validation"], tokenizer, trial.prompt, hp.max_length, reuse)
    if len(train_set) == 0:
        raise ValueError(f"max_length={hp.max_length}: no training summary fits; raise search.max_length")
    evaluation = RougeEvaluation.for_trial(trial, tokenizer)
    prompts = evaluation.prompts(dialogues["validation"]["dialogue"])
    references = list(dialogues["validation"]["summary"])

    # The 4-bit model with LoRA on top, recomputing activations where the plan says memory needs it
    base = load_quantized_model(trial.model)
    model = attach_lora(prepare_for_training(base, trial.training.gradient_checkpointing), hp)
    initial_adapter = adapter_state(model)  # where an out-of-memory retry with no checkpoint restarts

    # Train rung by rung; each rung ends in evaluation, a report and an adapter checkpoint.
    # Early rungs score ROUGE on a prefix of one fixed-seed shuffle: the same dialogues for every trial.
    scoring_order = random.Random(trial.data.seed).sample(range(len(prompts)), len(prompts))

    def score_rouge(trained_model: Any, rung: int) -> dict[str, float]:
        chosen = scoring_order[: trial.evaluation.examples_at(rung, trial.max_rungs, len(prompts))]
        scores = evaluation.rouge(trained_model, [prompts[i] for i in chosen], [references[i] for i in chosen])
        return {**scores, "rouge_examples": len(chosen)}

    reporter = RungReporter(score_rouge, trial.training.steps_per_rung,
                            trial_record={"trial": trial.model_dump(mode="json")})

    def trainer_for(training: TrainingConfig) -> Any:
        return build_trainer(
            model, tokenizer, train_set, eval_set, training, hp,
            total_steps=trial.total_steps,
            eval_batch_size=min(trial.evaluation.batch_size, EVAL_LOSS_BATCH),
            output_dir=os.path.join(os.getcwd(), "trainer"),
            callbacks=[reporter],
        )

    with checkpoint_to_resume() as resume_dir:
        reporter.resume_history(resume_dir)
        train_with_oom_retry(trainer_for, trial.training, hp, resume_dir, model, initial_adapter)
